"""The kube-qss image, built from the repository's Containerfile, runs every console script as
a non-root user on a read-only root file system, in a pod on a real node."""

from __future__ import annotations

import tomllib

import pytest

from tests.cluster.localcluster import REPO_ROOT
from tests.cluster.realnetwork import RealQssNetwork
from tests.realnode.helpers import pod_manifest, run_to_completion, unique

pytestmark = pytest.mark.realnode

PACKAGES = "controllers, device_plugin, qss_api, sidecar, webhooks"
SCRIPTS = sorted(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_every_console_script_starts_as_non_root_on_a_read_only_root(
    real_network: RealQssNetwork,
) -> None:
    cluster = real_network.clusters["node-a"]
    script = "; ".join(
        [
            'echo "uid $(id -u) gid $(id -g)"',
            *(
                f'{s} --help >/dev/null 2>&1 && echo "ok {s}" || echo "FAILED {s} $?"'
                for s in SCRIPTS
            ),
            f"python3 -c 'import {PACKAGES}' && echo ok imports",
            "touch /opt/kube-qss/written 2>/dev/null && echo 'root file system is WRITABLE'",
            "echo done",
        ]
    )
    manifest = pod_manifest(unique("image-check"), "default", ["sh", "-c", script])

    phase, log = run_to_completion(
        cluster, manifest, timeout=600
    )  # imports are slow on 2 busy cores

    assert phase == "Succeeded", log
    lines = log.splitlines()
    assert lines[0] == "uid 65532 gid 65532"
    assert [f"ok {s}" for s in SCRIPTS] == [line for line in lines if line.startswith("ok qss-")]
    assert "ok imports" in lines
    assert not [line for line in lines if "FAILED" in line or "WRITABLE" in line], log
    assert lines[-1] == "done"
    assert len(SCRIPTS) >= 4  # controller, QKDM, device plugin, simulated device
