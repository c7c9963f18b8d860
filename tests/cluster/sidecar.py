"""The key sidecar as a process beside the local QSS network, set up the way the webhook sets it
up in a pod (until real nodes run pods here).

``SidecarPod`` stands for one application pod: a Pod object on the node's cluster (it owns the
KeyRequests the sidecar creates or takes, as in a real pod; it never runs), a service account
bound to the shipped ClusterRole ``kube-qss-sidecar`` whose token the sidecar uses, the Sae's
credentials written to a directory as the kubelet writes a Secret volume, and the sidecar
process with exactly the environment ``webhooks.injection`` gives the container, with the
fieldRefs resolved as the kubelet would; only the two paths differ (a temporary key directory
instead of the pod's emptyDir, the credentials directory instead of the Secret volume).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qss_api import sidecar as names
from tests.cluster.localcluster import Cluster, free_port
from tests.cluster.network import QssNetwork
from tests.cluster.webhook import (
    apply,
    rendered_component,
    token_kubeconfig,
    wait_for_service_account,
)
from webhooks.annotations import read_injection
from webhooks.injection import AppUser, InjectorConfig, SaeRecord, sidecar_container

SERVICE_ACCOUNT = "keys-app"


@dataclass
class SidecarPod:
    network: QssNetwork
    node: str
    namespace: str
    pod_name: str
    pod_uid: str
    env: dict[str, str]
    keys_dir: Path
    port: int
    log: Path
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def cluster(self) -> Cluster:
        return self.network.nodes[self.node].cluster

    def start(self) -> None:
        full = dict(os.environ)
        full.update(self.env)
        self.proc = self.network.plane.spawn(
            f"{self.node}/qss-sidecar-{self.pod_name}",
            [sys.executable, "-m", "sidecar.main", "run"],
            self.log,
            env=full,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would (nothing runs on the way out)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.exits.append(self.proc.wait(timeout=10))
        self.proc = None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as the kubelet stops a container; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.exits.append(code)
        self.proc = None
        return code

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _resolve(env: list[dict[str, Any]], fields: dict[str, str]) -> dict[str, str]:
    out = {}
    for entry in env:
        if "value" in entry:
            out[entry["name"]] = entry["value"]
        else:
            out[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


def sidecar_pod(
    network: QssNetwork,
    node: str,
    *,
    namespace: str,
    pod_name: str,
    annotations: dict[str, str],
    directory: Path,
) -> SidecarPod:
    """A pod of ``namespace`` on ``node`` asking for keys with ``annotations`` (the Sae they
    name must be registered), and its sidecar, not started yet."""
    qss_node = network.nodes[node]
    cluster = qss_node.cluster
    injection = read_injection(annotations)
    for doc in rendered_component(cluster):
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "kube-qss-sidecar":
            apply(cluster, doc)
    wait_for_service_account(cluster, namespace)
    cluster.kubectl("create", "serviceaccount", SERVICE_ACCOUNT, "-n", namespace, check=False)
    cluster.kubectl(
        "create",
        "rolebinding",
        f"{SERVICE_ACCOUNT}-keys",
        "-n",
        namespace,
        "--clusterrole=kube-qss-sidecar",
        f"--serviceaccount={namespace}:{SERVICE_ACCOUNT}",
        check=False,
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }
    apply(cluster, pod)
    uid = cluster.kubectl(
        "get", "pod", pod_name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    directory.mkdir(parents=True, exist_ok=True)
    credentials = directory / "credentials"
    credentials.mkdir(exist_ok=True)
    for key, value in network.sae_credentials(node, namespace, injection.sae).items():
        path = credentials / key
        path.write_bytes(value)
        path.chmod(0o400)
    sae_id = cluster.kubectl(
        "get", "sae", injection.sae, "-n", namespace, "-o", "jsonpath={.spec.saeID}"
    ).stdout
    port, metrics_port = free_port(), free_port()
    container = sidecar_container(
        injection,
        SaeRecord(
            namespace=namespace,
            name=injection.sae,
            sae_id=sae_id,
            credentials_secret=f"{injection.sae}-credentials",
        ),
        AppUser(uid=os.getuid(), gid=None),
        InjectorConfig(
            sidecar_image="kube-qss:test",
            key_api_url=qss_node.key_api_url,
            key_api_port=port,
            metrics_port=metrics_port,
        ),
    )
    env = _resolve(
        container["env"],
        {"metadata.name": pod_name, "metadata.namespace": namespace, "metadata.uid": uid},
    )
    keys = directory / "keys"
    env[names.ENV_KEYS_DIR] = str(keys)
    env[names.ENV_CREDENTIALS_DIR] = str(credentials)
    env["KUBECONFIG"] = str(
        token_kubeconfig(
            cluster, namespace=namespace, account=SERVICE_ACCOUNT, path=directory / "kubeconfig"
        )
    )
    return SidecarPod(
        network=network,
        node=node,
        namespace=namespace,
        pod_name=pod_name,
        pod_uid=uid,
        env=env,
        keys_dir=keys,
        port=port,
        log=directory / "qss-sidecar.log",
        metrics_port=metrics_port,
    )


def wait_listening(pod: SidecarPod, timeout: float = 30) -> None:
    """Until the sidecar's loopback endpoint accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pod.running():
            raise RuntimeError(f"qss-sidecar exited; see {pod.log}")
        try:
            with socket.create_connection(("127.0.0.1", pod.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"qss-sidecar did not listen on {pod.port} within {timeout}s")


@dataclass(frozen=True)
class KeySnapshot:
    """One snapshot of a key volume as an app reads it."""

    directory: str
    generation: int
    current: str | None
    keys: dict[str, bytes] = field(repr=False)  # in index order, oldest first
    sizes: dict[str, int]


class PartialSnapshot(Exception):
    """A snapshot that is still current (or the one before) but not complete."""


def read_snapshot(keys_dir: Path) -> KeySnapshot | None:
    """The snapshot ``..data`` names, read as the docs tell apps to: resolve ``..data`` once,
    read ``index.json`` and every key it lists beneath it. None if there is none yet or it was
    retired while being read; ``PartialSnapshot`` if a file it lists is missing or short."""
    try:
        directory = os.readlink(keys_dir / "..data")
    except FileNotFoundError:
        return None
    root = keys_dir / directory
    try:
        index = json.loads((root / "index.json").read_bytes())
        keys, sizes = {}, {}
        for entry in index["keys"]:
            keys[entry["key_ID"]] = (root / entry["key_ID"]).read_bytes()
            sizes[entry["key_ID"]] = entry["size"]
    except FileNotFoundError:
        if root.exists():
            raise PartialSnapshot(f"{directory} exists but lacks a file it lists") from None
        return None  # retired as a whole (renamed away) while being read
    for key_id, content in keys.items():
        if len(content) * 8 != sizes[key_id]:
            raise PartialSnapshot(f"{directory}: key {key_id} is {len(content)} bytes")
    return KeySnapshot(
        directory=directory,
        generation=index["generation"],
        current=index["current"],
        keys=keys,
        sizes=sizes,
    )
