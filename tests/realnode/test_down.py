"""``localcluster down`` leaves the host as ``up`` found it: no mounts, links, routes, network
namespaces, cgroups, iptables rules or processes of the harness, the kubelet's fixed paths as
they were, ``ip_forward`` unchanged; and a second ``up`` in the same place works. Runs its own
one-node harness through the command line (beside the session's real network when that is up,
which also shows two harnesses side by side)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.localcluster import REPO_ROOT, control_plane_binaries
from tests.realnode.helpers import host_state, pod_manifest, unique

pytestmark = pytest.mark.realnode


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kqss-down-", dir="/tmp"))
    yield path
    localcluster(path, "down")  # whatever the test left
    shutil.rmtree(path, ignore_errors=True)


def localcluster(state_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.cluster.localcluster", "--state-dir", str(state_dir), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def kubectl(state_dir: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [
            str(control_plane_binaries() / "kubectl"),
            "--kubeconfig",
            str(state_dir / "solo" / "kubeconfig"),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def up_and_run_a_pod(state_dir: Path) -> int:
    """`up` with a real node, run a pod to the end; the harness's slot."""
    localcluster(state_dir, "up", "--real-nodes", "--clusters", "solo")
    slot = int(json.loads((state_dir / "realnodes.json").read_text())["slot"])
    name = unique("hello")
    manifest = pod_manifest(name, "default", ["python3", "-c", "print('hello from a pod')"])
    kubectl(state_dir, "apply", "-f", "-", stdin=json.dumps(manifest))
    kubectl(
        state_dir,
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        f"pod/{name}",
        "--timeout=300s",
    )
    assert kubectl(state_dir, "logs", name).strip() == "hello from a pod"
    return slot


def assert_clean(state: dict[str, Any], before: dict[str, Any]) -> None:
    for part in ("mounts", "links", "routes", "netns", "cgroups", "processes"):
        assert state[part] == [], f"{part} left behind: {state[part]}"
    for part in ("iptables", "ip_forward", "bridge-nf-call-iptables", "fixed paths"):
        assert state[part] == before[part], f"{part} changed"


def test_down_undoes_every_host_change_and_a_second_up_works(state_dir: Path) -> None:
    before = host_state(-1, state_dir)  # the parts of no slot: iptables, sysctls, fixed paths

    slot = up_and_run_a_pod(state_dir)
    running = host_state(slot, state_dir)
    # The audit sees what a running harness has, so an empty list below means something.
    assert running["links"]
    assert running["routes"]
    assert running["netns"]
    assert running["cgroups"]
    assert running["processes"]
    localcluster(state_dir, "down")
    assert_clean(host_state(slot, state_dir), before)

    slot = up_and_run_a_pod(state_dir)
    localcluster(state_dir, "down")
    assert_clean(host_state(slot, state_dir), before)
