"""Helpers the real-node tests share: pods run to completion, node resources, a key stream's
counts in a node's Redis pod, and the host state that ``down`` must restore."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from redis.exceptions import BusyLoadingError

from controllers.keystore import KeyStore
from controllers.keystore.model import StreamCounts
from tests.cluster import nodenet
from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import NAMESPACE
from tests.integration.helpers import eventually
from tests.waiting import eventually_async

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
LOCKED_DOWN = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
IMAGE = "localhost/kube-qss/kube-qss:test"


def pod_manifest(
    name: str,
    namespace: str,
    command: list[str],
    *,
    pod_spec: dict[str, Any] | None = None,
    **container: Any,
) -> dict[str, Any]:
    """A pod of the kube-qss image, as locked down as the restricted Pod Security level wants."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "kube-qss"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": command,
                    "securityContext": LOCKED_DOWN,
                    **container,
                }
            ],
            **(pod_spec or {}),
        },
    }


def apply_json(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(obj))


def run_to_completion(
    cluster: Cluster, manifest: dict[str, Any], timeout: float = 300
) -> tuple[str, str]:
    """Create the pod, wait until it ends; its phase and its log."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    apply_json(cluster, manifest)

    def ended() -> str | None:
        phase = pod_phase(cluster, name, namespace)
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = eventually(ended, timeout, f"pod {namespace}/{name} to finish")
        log = cluster.kubectl("logs", name, "-n", namespace).stdout
    finally:
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
    return phase, log


def pod_phase(cluster: Cluster, name: str, namespace: str) -> str | None:
    out = cluster.kubectl(
        "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
    )
    return out.stdout or None if out.returncode == 0 else None


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def node_resources(cluster: Cluster) -> dict[str, dict[str, str]]:
    """The node's capacity and allocatable."""
    node = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    status = node["status"]
    return {"capacity": status["capacity"], "allocatable": status["allocatable"]}


def allocatable(cluster: Cluster, resource: str) -> str | None:
    return node_resources(cluster)["allocatable"].get(resource)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def running_pod(cluster: Cluster, namespace: str, selector: str) -> dict[str, Any]:
    """The one Running and Ready pod matching ``selector``, waiting for it (Ready: a restarted
    Redis answers only once it has loaded its data, which its readiness probe waits for)."""

    def find() -> dict[str, Any] | None:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        running = [
            p
            for p in json.loads(out.stdout)["items"]
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and _ready(p)
        ]
        return running[0] if len(running) == 1 else None

    pod: dict[str, Any] = eventually(find, 300, f"one running pod {selector} on {cluster.name}")
    return pod


REDIS = "app.kubernetes.io/name=kube-qss-redis"


async def stream_counts(cluster: Cluster, stream: str) -> StreamCounts:
    """The counts of the node's end of ``stream``, read from its Redis pod (the host routes to
    pod addresses)."""
    pod = running_pod(cluster, NAMESPACE, REDIS)
    store = KeyStore.from_url(f"redis://{pod['status']['podIP']}:6379/0")

    async def loaded() -> StreamCounts | None:
        try:
            return await store.counts(stream=stream)
        except BusyLoadingError:  # a restarted Redis still reading its append-only file
            return None

    try:
        found: StreamCounts = await eventually_async(
            loaded, 120, f"{cluster.name}'s Redis loaded", poll=0.2
        )
        return found
    finally:
        await store.aclose()


# -- the host, as `down` must leave it ----------------------------------------------------------

FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/containerd",
    "/opt/containerd",
    "/etc/cni/net.d",
    "/var/run/qss",
    "/var/lib/kube-qss",
)


def host_state(slot: int, state_dir: Path) -> dict[str, Any]:
    """What a real-node harness in ``slot`` could leave behind on the host: mounts, links,
    routes, namespaces, cgroups, iptables rules, sysctls, files at the kubelet's fixed paths,
    and processes."""
    slot_obj = nodenet.Slot(slot)
    marks = (str(state_dir), slot_obj.bridge, f"kube-qss-{slot}-")
    mounts = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if any(m in line for m in marks) or f"/run/netns/{slot_obj.bridge}-" in line
    ]
    links = _run("ip", "-o", "link").splitlines()
    routes = _run("ip", "-4", "route").splitlines()
    iptables = [
        rule
        for rule in _run("iptables-save").splitlines() + _run("ip6tables-save").splitlines()
        if any(word in rule for word in ("198.18.", "198.19.", "KUBE-", "CNI-", "kqss", "cni0"))
    ]
    cgroups = sorted(
        str(p)
        for p in Path("/sys/fs/cgroup").glob("*/*")
        if p.is_dir() and (p.name.startswith(f"kube-qss-{slot}-") or p.name == "kubepods")
    )
    processes = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(state_dir) in cmdline:
                processes.append(f"{proc.name} {cmdline}")
    return {
        "mounts": mounts,
        "links": [line for line in links if f": {slot_obj.bridge}" in line],
        "routes": [r for r in routes if slot_obj.bridge in r],
        "netns": sorted(p.name for p in Path("/run/netns").glob(f"{slot_obj.bridge}-*")),
        "cgroups": cgroups,
        "iptables": iptables,
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "bridge-nf-call-iptables": _read("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "fixed paths": {p: Path(p).exists() for p in FIXED_PATHS},
        "processes": processes,
    }


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None
