"""kube-qss deployed for real: local clusters with real nodes, each brought up with
``kubectl apply -k kustomize/test/<node>`` (the demo's overlays with the images built here), so
the controller, Redis, the device plugin, the simulated QKD device and the controller-run QKDMs
all run as pods.

Used by ``make demo`` (``tests.cluster.demo``) and the real-node tests
(``tests/fixtures/realnodes.py``). ``DEMO_NETWORK`` is the network's shape, in one place: the QSS
nodes (each a cluster with a real node and an overlay in ``kustomize/test``) and the links
between them (each a KeyStream name on both ends). What the operator does by hand is done here
in the same order: the CRDs first, then per node its node CA and its neighbours' CAs as Secrets,
then the overlay.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from controllers import pki
from tests.cluster.localcluster import REPO_ROOT, Cluster, ControlPlane, install_crds
from tests.cluster.nodes import RealNode

NAMESPACE = "kube-qss-system"
DEVICE_PLUGIN_NAMESPACE = "kube-qss-device-plugin"
OVERLAYS = REPO_ROOT / "kustomize" / "test"
REDIS_UID = 999  # the Redis image's user, who must own the key store's volume


@dataclass(frozen=True)
class NetworkShape:
    """QSS nodes, the key streams between them (stream name -> its two nodes) and each node's
    SAE (node -> namespace, Sae name, SAE ID), as the overlays declare them."""

    nodes: tuple[str, ...]
    streams: dict[str, tuple[str, str]]
    saes: dict[str, tuple[str, str, str]]

    def neighbours(self, node: str) -> list[str]:
        """The nodes a key stream joins ``node`` to: the peers whose CAs it needs."""
        return sorted({p for ends in self.streams.values() if node in ends for p in ends} - {node})


DEMO_NETWORK = NetworkShape(
    nodes=("node-a", "node-b", "node-c"),
    streams={"node-a-node-b": ("node-a", "node-b"), "node-b-node-c": ("node-b", "node-c")},
    saes={
        "node-a": ("default", "alice", "alice"),
        "node-b": ("default", "bob", "bob"),
        "node-c": ("default", "carol", "carol"),
    },
)
# How long a freshly deployed network may take to work end to end: pods start, each QKDM opens
# its stream, the nodes learn each other's SAEs. Generous, as 2 shared cores can be slow.
WORKING_TIMEOUT = 420.0


@dataclass
class RealQssNetwork:
    """The deployed network: its clusters by QSS node name, and each node's CA."""

    plane: ControlPlane
    shape: NetworkShape
    clusters: dict[str, Cluster] = field(default_factory=dict)
    cas: dict[str, pki.Credentials] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def node(self, name: str) -> RealNode:
        node = self.clusters[name].node
        assert node is not None
        return node


def deploy(plane: ControlPlane, shape: NetworkShape = DEMO_NETWORK) -> RealQssNetwork:
    """Start a cluster with a real node per QSS node and deploy kube-qss on each."""
    network = RealQssNetwork(plane=plane, shape=shape)
    for name in shape.nodes:
        t0 = time.monotonic()
        network.clusters[name] = plane.start_cluster(name)
        network.timings[f"{name}: cluster and node up"] = time.monotonic() - t0
        network.cas[name] = pki.create_ca(f"kube-qss node CA {name}")
    t0 = time.monotonic()
    for name, cluster in network.clusters.items():
        peers = {p: network.cas[p] for p in shape.neighbours(name)}
        apply_overlay(cluster, name, ca=network.cas[name], peer_cas=peers)
    for cluster in network.clusters.values():
        wait_rolled_out(cluster)
    network.timings["kube-qss applied and rolled out"] = time.monotonic() - t0
    t0 = time.monotonic()
    wait_working(network)
    network.timings["key streams up, SAEs known across"] = time.monotonic() - t0
    return network


def wait_working(network: RealQssNetwork) -> None:
    """Every key stream Up with keys at both ends, every node with a Route to every other node's
    SAE (routing has converged, so a request for an SAE beyond a neighbour can be relayed), and a
    KeyRequest from the SAE of each stream's first node to the SAE of its second served (so the
    first knows the second's SAEs: the direction the demo and the tests ask for keys in)."""
    for cluster in network.clusters.values():
        wait_for(partial(_streams_up, cluster), WORKING_TIMEOUT, f"key streams on {cluster.name}")
    for name, cluster in network.clusters.items():
        remote = {sae_id for node, (_, _, sae_id) in network.shape.saes.items() if node != name}
        check = partial(_routes_to, cluster, remote)
        wait_for(check, WORKING_TIMEOUT, f"Routes on {name} to every other node's SAE")
    for master, slave in network.shape.streams.values():
        check = partial(
            served,
            (network.clusters[master], network.shape.saes[master]),
            (network.clusters[slave], network.shape.saes[slave]),
        )
        wait_for(check, WORKING_TIMEOUT, f"a KeyRequest from {master} to {slave}")


def _streams_up(cluster: Cluster) -> bool:
    out = cluster.kubectl("get", "keystreams", "-o", "json").stdout
    streams = json.loads(out)["items"]
    return bool(streams) and all(
        s.get("status", {}).get("state") == "Up" and s["status"].get("availableKeys", 0) > 0
        for s in streams
    )


def _routes_to(cluster: Cluster, sae_ids: set[str]) -> bool:
    out = cluster.kubectl("get", "routes", "-o", "json").stdout
    return sae_ids <= {r["spec"]["saeID"] for r in json.loads(out)["items"]}


Sae = tuple[str, str, str]  # namespace, Sae name, SAE ID


def served(master: tuple[Cluster, Sae], slave: tuple[Cluster, Sae]) -> bool:
    """One warm-up KeyRequest, waited for and deleted with its slave side (and so with their
    Secrets); whether it was served."""
    (cluster, (namespace, sae, _)), (peer, (peer_namespace, peer_sae, peer_id)) = master, slave
    name = f"warm-up-{sae}-{int(time.time() * 1000) % 10**8}"
    body = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "KeyRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"sae": sae, "slaveSaeID": peer_id, "number": 1, "size": 256},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    uid = json.loads(
        cluster.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json").stdout
    )["metadata"]["uid"]
    try:
        phase: str = wait_for(partial(_phase, cluster, name, namespace), 120, f"KeyRequest {name}")
    finally:
        cluster.kubectl("delete", "keyrequest", name, "-n", namespace, "--wait=false")
    if phase == "Ready":
        slave_name = f"{peer_sae}-{uid}"
        wait_for(partial(_phase, peer, slave_name, peer_namespace), 120, f"{slave_name}")
        peer.kubectl("delete", "keyrequest", slave_name, "-n", peer_namespace, "--wait=false")
    return phase == "Ready"


def _phase(cluster: Cluster, name: str, namespace: str) -> str | None:
    out = cluster.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    phase = json.loads(out.stdout).get("status", {}).get("phase")
    return phase if isinstance(phase, str) and phase in ("Ready", "Failed") else None


def apply_overlay(
    cluster: Cluster, overlay: str, *, ca: pki.Credentials, peer_cas: dict[str, pki.Credentials]
) -> None:
    """What an operator does: CRDs, the namespace with this node's CA and its peers' CAs, then
    ``kubectl apply -k`` of the node's overlay."""
    node = cluster.node
    assert node is not None, f"cluster {cluster.name} has no real node"
    redis_dir = node.volumes_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    os.chown(redis_dir, REDIS_UID, REDIS_UID)
    install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    secret(cluster, "qss-node-ca", {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem})
    for peer, peer_ca in peer_cas.items():
        secret(cluster, f"{peer}-ca", {"ca.crt": peer_ca.cert_pem})
    cluster.kubectl("apply", "--server-side", "-k", str(OVERLAYS / overlay))


def secret(cluster: Cluster, name: str, data: dict[str, bytes]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))


def wait_rolled_out(cluster: Cluster, timeout: float = 240) -> None:
    """Every Deployment, StatefulSet and DaemonSet of kube-qss available, QKDMs included."""

    def qkdms_created() -> bool:
        out = cluster.kubectl(
            "get",
            "deploy",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/name=kube-qss-qkdm",
            "-o",
            "name",
        ).stdout
        streams = cluster.kubectl("get", "keystreams", "-o", "name").stdout
        return len(out.split()) == len(streams.split())

    wait_for(qkdms_created, timeout, f"the QKDM Deployments on {cluster.name}")
    for namespace in (NAMESPACE, DEVICE_PLUGIN_NAMESPACE):
        kinds = "deploy,statefulset,daemonset"
        for obj in cluster.kubectl("get", kinds, "-n", namespace, "-o", "name").stdout.split():
            cluster.kubectl(
                "rollout",
                "status",
                obj,
                "-n",
                namespace,
                f"--timeout={int(timeout)}s",
                timeout=timeout + 30,
            )


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise RuntimeError(f"{what} not there within {timeout:.0f}s")


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items
