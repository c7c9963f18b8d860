"""The README's main job (``make demo``): a local QSS network, shown with kubectl.

Three QSS nodes in a line (node-a - node-b - node-c), each a real kube-apiserver with a real node
(kubelet, containerd) on which kube-qss runs as pods, deployed with ``kubectl apply -k
kustomize/test/<node>``: the controller, its Redis key store, the device plugin, the simulated
QKD device pairs and the QKD module (QKDM) the controller runs for each key stream end. The demo
shows the nodes and pods, the links and key streams filling on every cluster, applies the sample
KeyRequest on node-a (alice asks for keys shared with bob on node-b, its neighbour) and shows
that the Secrets on both clusters hold the same key IDs (never the keys); then every node's
routing table (``kubectl get routes -o wide``) and a KeyRequest from alice for carol on node-c,
relayed through node-b: the Secrets on node-a and node-c hold the same key IDs, node-b none. Then
the sample pods of ``kustomize/samples/pods`` (alice on node-a, bob on node-b), into which the
webhook injects the key sidecar, each printing the IDs of the keys it sees and a short hash of
each. The network keeps running; ``make demo-down`` stops it.

``--processes`` runs the same network as local processes instead (no kubelet, no images: what the
fast tests use). The network's shape (nodes, the key streams between them, their SAEs) comes from
``tests.cluster.realnetwork.DEMO_NETWORK`` either way. Last, it draws each node's picture of the
network with qss-netmap, the Route to carol highlighted.

With ``--topology FILE`` (``make demo TOPOLOGY=examples/topologies/line3.yaml``) it builds the
network that file describes instead (``tests.cluster.topology``), as local processes, and shows
every node's links, key streams and routing table (``kubectl get routes``) once every node has a
Route to every SAE; then a KeyRequest from the file's first SAE for its last, relayed through the
trusted repeaters between them (the same ``relayed_request`` as on pods); last, each node's
picture of the network with that Route highlighted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import images
from tests.cluster.localcluster import (
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    Cluster,
    ControlPlane,
    control_plane_binaries,
    stop_recorded,
)
from tests.cluster.network import apply, running_network
from tests.cluster.realnetwork import DEMO_NETWORK, Sae, deploy
from tests.cluster.topology import NetworkTopology, TopologyError, load_topology, sae_object_name

KEYREQUEST = REPO_ROOT / "kustomize" / "samples" / "qss.dev_v1alpha1_keyrequest.yaml"
SAMPLE_PODS = REPO_ROOT / "kustomize" / "samples" / "pods"


def show(cluster: Cluster, *args: str) -> str:
    print(f"\n[{cluster.name}] $ kubectl {' '.join(args)}")
    out = cluster.kubectl(*args).stdout
    print(out.rstrip())
    return out


def wait_ready(cluster: Cluster, name: str, namespace: str, timeout: float = 60) -> dict[str, str]:
    """The KeyRequest's status once it is Ready or Failed. It need not exist yet: a slave side
    is created by its node when the master's keys arrive, which may be after the master is
    Ready (a relayed request's last hop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json", check=False)
        status = json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}
        if status.get("phase") in ("Ready", "Failed"):
            return dict(status)
        time.sleep(0.2)
    raise RuntimeError(f"KeyRequest {namespace}/{name} on {cluster.name} not done in {timeout}s")


def wait_streams_filling(clusters: dict[str, Cluster], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_streams_have_keys(c) for c in clusters.values()):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the key streams did not start filling within {timeout:.0f}s")


def _streams_have_keys(cluster: Cluster) -> bool:
    streams = json.loads(cluster.kubectl("get", "keystreams", "-o", "json").stdout)["items"]
    return bool(streams) and all(s.get("status", {}).get("availableKeys", 0) > 0 for s in streams)


def key_ids(cluster: Cluster, secret: str, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "secret", secret, "-n", namespace, "-o", "json").stdout
    return sorted(k for k in json.loads(out)["data"] if k != "keys.json")


def show_nodes(clusters: dict[str, Cluster]) -> None:
    """Each cluster's node, its QKD device resources (one per link), and its pods."""
    for cluster in clusters.values():
        show(cluster, "get", "node", "-o", "wide")
        node = json.loads(cluster.kubectl("get", "node", "-o", "json").stdout)["items"][0]
        columns = ["NODE:.metadata.name"]
        for resource in sorted(r for r in node["status"]["capacity"] if r.startswith("qss.dev/")):
            path = resource.replace(".", "\\.")
            columns += [
                f"{resource} CAPACITY:.status.capacity.{path}",
                f"ALLOCATABLE:.status.allocatable.{path}",
            ]
        show(cluster, "get", "node", "-o", "custom-columns=" + ",".join(columns))
        show(cluster, "get", "pods", "-A", "-o", "wide")


def show_network(clusters: dict[str, Cluster]) -> None:
    """What the demo shows of any QSS network: links and streams filling, then a KeyRequest."""
    a, b = clusters["node-a"], clusters["node-b"]
    wait_streams_filling(clusters)
    for cluster in clusters.values():
        show(cluster, "get", "qkdlinks,keystreams")
    print("\n... three seconds later, the key streams have filled further:")
    time.sleep(3)
    for cluster in clusters.values():
        show(cluster, "get", "keystreams")

    show(a, "apply", "--server-side", "-f", str(KEYREQUEST))
    status = wait_ready(a, "alice-to-bob", "default")
    if status.get("phase") != "Ready":
        raise RuntimeError(f"the demo KeyRequest failed: {status.get('conditions')}")
    uid = json.loads(
        a.kubectl("get", "keyrequest", "alice-to-bob", "-n", "default", "-o", "json").stdout
    )["metadata"]["uid"]
    slave = f"bob-{uid}"
    wait_ready(b, slave, "default")
    show(a, "get", "sae,keyrequests")
    show(b, "get", "sae,keyrequests")
    ids_a = key_ids(a, "alice-to-bob-keys", "default")
    ids_b = key_ids(b, f"{slave}-keys", "default")
    print("\nKey IDs in Secret default/alice-to-bob-keys on node-a (the keys stay in the Secret):")
    print("  " + "\n  ".join(ids_a))
    same = "the same" if ids_a == ids_b else "DIFFERENT"
    print(f"Secret default/{slave}-keys on node-b holds {same} {len(ids_b)} key IDs.")
    if ids_a != ids_b:
        raise RuntimeError("the two Secrets hold different key IDs")


def show_key_pods(clusters: dict[str, Cluster], timeout: float = 300) -> None:
    """Keys in pods: the sample pods alice (master, node-a) and bob (slave, node-b), each
    printing from its own container the IDs of the keys it sees and a short hash of each."""
    pods = {"alice": clusters["node-a"], "bob": clusters["node-b"]}
    for name in ("bob", "alice"):
        cluster, path = pods[name], SAMPLE_PODS / f"{name}.yaml"
        print(f"\n[{cluster.name}] $ kubectl apply -f {path.relative_to(REPO_ROOT)}")
        objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for obj in objects:  # the image built here, as kustomize/test maps it for the overlays
            for container in obj.get("spec", {}).get("containers", []):
                container["image"] = images.LOCAL_REFS["kube-qss"]
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        print(cluster.kubectl("apply", "--server-side", "-f", "-", stdin=body).stdout.rstrip())
    for name, cluster in pods.items():  # Ready: the app runs, so its first keys are there
        cluster.kubectl(
            "wait",
            "--for=condition=Ready",
            f"pod/{name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )
        show(cluster, "get", "pod", name, "-o", "wide")
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {name: _last_listing(cluster, name) for name, cluster in pods.items()}
        if _keys(seen["alice"]) and _keys(seen["alice"]).items() <= _keys(seen["bob"]).items():
            break
        time.sleep(1)
    for name, cluster in pods.items():
        print(f"\n[{cluster.name}] $ kubectl logs {name} -c app   (its newest listing)")
        print("  " + "\n  ".join(seen[name]))
    alice, bob = _keys(seen["alice"]), _keys(seen["bob"])
    if not alice or not alice.items() <= bob.items():
        raise RuntimeError("bob does not see alice's keys")
    print(
        f"bob sees all {len(alice)} of alice's keys under the same IDs, with the same hashes. "
        f"(Its other {len(bob) - len(alice)} are keys of the KeyRequest above: bob's sidecar "
        "takes every key handed over from alice to bob.)"
        if len(bob) > len(alice)
        else f"alice and bob see the same {len(alice)} keys: same IDs, same hashes."
    )


def _keys(listing: list[str]) -> dict[str, str]:
    """Key ID -> short hash, from a listing of the sample app."""
    return dict(line.split()[:2] for line in listing if not line.startswith("current "))


def _last_listing(cluster: Cluster, pod: str) -> list[str]:
    """The last complete listing the sample app printed: key ID and short hash per line, then
    the current key's ID."""
    lines = cluster.kubectl("logs", pod, "-c", "app", check=False).stdout.splitlines()
    ends = [i for i, line in enumerate(lines) if line.startswith("current ")]
    if not ends:
        return []
    start = ends[-2] + 1 if len(ends) > 1 else 0
    return lines[start : ends[-1] + 1]


@dataclass(frozen=True)
class Relayed:
    """A relayed KeyRequest as the demo made it: its KeyRequests at both ends (in ``namespace``;
    each one's Secret is ``<name>-keys``) and the path its keys took."""

    namespace: str
    master_request: str
    slave_request: str
    path: list[str]


def relayed_request(
    clusters: dict[str, Cluster],
    master: tuple[str, Sae],
    slave: tuple[str, Sae],
    *,
    name: str | None = None,
) -> Relayed:
    """A KeyRequest (``name``, by default ``<master>-to-<slave>``) from the SAE ``master`` (its
    node, its Sae) for the SAE ``slave`` on a node beyond the master's neighbours: its Secrets on
    both ends hold the same key IDs, the nodes between (the trusted repeaters) hold none. Both
    SAEs are in the same namespace."""
    (first, (namespace, master_name, _)), (last, (_, slave_name, slave_id)) = master, slave
    a, z = clusters[first], clusters[last]
    name = name or f"{master_name}-to-{slave_name}"
    request = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "KeyRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "sae": master_name,
            "slaveSaeID": slave_id,
            "number": 10,
            "size": 256,
            "timeoutSeconds": 60,
        },
    }
    print(f"\n[{first}] KeyRequest {namespace}/{name}: 10 keys shared with {slave_id} on {last}")
    apply(a, request)
    status = wait_ready(a, name, namespace, timeout=90)
    if status.get("phase") != "Ready":
        raise RuntimeError(f"the demo KeyRequest failed: {status.get('conditions')}")
    uid = json.loads(a.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    slave_request = f"{slave_name}-{uid}"
    wait_ready(z, slave_request, namespace)
    for cluster in clusters.values():
        if not show(cluster, "get", "keyrequests,secrets", "-n", namespace):
            print("(no KeyRequests, no Secrets)")
    ids_a = key_ids(a, f"{name}-keys", namespace)
    ids_z = key_ids(z, f"{slave_request}-keys", namespace)
    print(f"\nKey IDs in Secret {namespace}/{name}-keys on {first} (the keys stay in the Secret):")
    print("  " + "\n  ".join(ids_a))
    same = "the same" if ids_a == ids_z else "DIFFERENT"
    print(f"Secret {namespace}/{slave_request}-keys on {last} holds {same} {len(ids_z)} key IDs;")
    path: list[str] = next(
        (r["spec"]["path"] for r in items(a, "routes") if r["spec"]["saeID"] == slave_id), []
    )
    if ids_a != ids_z:
        raise RuntimeError("the two Secrets hold different key IDs")
    for repeater in path[1:-1]:
        held = clusters[repeater].kubectl("get", "keyrequests,secrets", "-A", "-o", "json").stdout
        if any(key_id in held for key_id in ids_a):
            raise RuntimeError(f"the repeater {repeater} holds a key ID of the relayed request")
    repeaters = ", ".join(path[1:-1]) or "none"
    print(
        f"The path was {' -> '.join(path)}; the repeaters ({repeaters}) hold no KeyRequest and "
        "no Secret with its key IDs."
    )
    return Relayed(namespace, name, slave_request, path)


def draw_network(
    clusters: dict[str, Cluster], state_dir: Path, *, route: str | None = None
) -> None:
    """Each node's picture of the network (qss-netmap), as DOT and SVG next to the logs, with
    the Route to the SAE ``route`` highlighted."""
    print("\nPictures of the QKD network as each node sees it (qss-netmap):")
    for name, cluster in clusters.items():
        prefix = state_dir / f"netmap-{name}"
        highlight = ["--route", route] if route else []
        subprocess.run(
            [
                sys.executable,
                "-m",
                "controllers.netmap.main",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--node-id",
                name,
                "--output",
                str(prefix),
                *highlight,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        print(f"  {prefix}.svg  ({prefix}.dot)")


def items(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-o", "json", check=False).stdout
    found: list[dict[str, Any]] = json.loads(out or "{}").get("items", [])
    return found


def settled(cluster: Cluster, saes: int) -> bool:
    """Every QKDLink up, and a Route to each SAE of the network."""
    links = items(cluster, "qkdlinks")
    up = all(link.get("status", {}).get("state") == "Up" for link in links)
    return up and len(items(cluster, "routes")) >= saes


def wait_settled(clusters: dict[str, Cluster], saes: int, timeout: float = 120) -> None:
    """Every node's links up and its Routes to each of the network's ``saes`` SAEs there."""
    deadline = time.monotonic() + timeout
    while not all(settled(c, saes) for c in clusters.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not every link is up, or not every node has a Route to each of the {saes} SAEs"
            )
        time.sleep(0.5)


def run_topology(
    state_dir: Path, topology: NetworkTopology, timeout: float = 120
) -> dict[str, Cluster]:
    with running_network(state_dir, detach=True, topology=topology) as network:
        saes = sum(len(s) for s in topology.nodes.values())
        clusters = {n: network.nodes[n].cluster for n in topology.nodes}
        wait_settled(clusters, saes, timeout)
        for cluster in clusters.values():
            show(cluster, "get", "qkdlinks,keystreams")
        for cluster in clusters.values():
            show(cluster, "get", "routes", "-o", "wide")
        ends = [(node, sae) for node, ids in topology.nodes.items() for sae in ids]
        (first, master), (last, slave) = ends[0], ends[-1]
        namespace = topology.sae_namespace
        relayed_request(
            clusters,
            (first, (namespace, sae_object_name(master), master)),
            (last, (namespace, sae_object_name(slave), slave)),
        )
        draw_network(clusters, state_dir, route=slave)
    return clusters


def show_relay(clusters: dict[str, Cluster]) -> None:
    """The demo network's routing tables, then a KeyRequest from alice (node-a) for carol
    (node-c), two hops away: relayed through node-b."""
    wait_settled(clusters, len(DEMO_NETWORK.saes))
    for cluster in clusters.values():
        show(cluster, "get", "routes", "-o", "wide")
    saes = DEMO_NETWORK.saes
    relayed_request(clusters, ("node-a", saes["node-a"]), ("node-c", saes["node-c"]))


def run_on_pods(state_dir: Path) -> dict[str, Cluster]:
    plane = ControlPlane(
        state_dir=state_dir, bin_dir=control_plane_binaries(), detach=True, real_nodes=True
    )
    try:
        network = deploy(plane, DEMO_NETWORK)
        show_nodes(network.clusters)
        show_network(network.clusters)
        show_relay(network.clusters)
        show_key_pods(network.clusters)
        draw_network(network.clusters, state_dir, route=DEMO_NETWORK.saes["node-c"][2])
        print("\nTimes of this run:")
        for what, seconds in network.timings.items():
            print(f"  {what}: {seconds:.0f} s")
    except BaseException:
        plane.stop()
        raise
    return network.clusters


def run_as_processes(state_dir: Path) -> dict[str, Cluster]:
    with running_network(state_dir, nodes=DEMO_NETWORK.nodes, detach=True) as network:
        for stream, (a, b) in DEMO_NETWORK.streams.items():
            network.add_link(a, b, name=None if stream == f"{a}-{b}" else stream, rate_bps=200_000)
        for node, (namespace, name, sae_id) in DEMO_NETWORK.saes.items():
            network.register_sae(node, namespace, name, sae_id)
        clusters = {n: node.cluster for n, node in network.nodes.items()}
        show_network(clusters)
        show_relay(clusters)
        draw_network(clusters, state_dir, route=DEMO_NETWORK.saes["node-c"][2])
    return clusters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run kube-qss as local processes beside the control plane, not as pods",
    )
    parser.add_argument(
        "--topology", type=Path, help="a topology file (see the README); runs as processes"
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir
    topology = None
    if args.topology is not None:
        try:
            topology = load_topology(args.topology)
        except TopologyError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
    if stop_recorded(state_dir):
        print("stopped the previous demo network")
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    if topology is not None:
        clusters = run_topology(state_dir, topology)
    elif args.processes:
        clusters = run_as_processes(state_dir)
    else:
        clusters = run_on_pods(state_dir)
    print("\nThe network keeps running. Explore it with:")
    print(f"  export PATH={control_plane_binaries()}:$PATH")
    for name, cluster in clusters.items():
        print(f"  kubectl --kubeconfig {cluster.kubeconfig} get qss -A     # {name}")
    print(f"Logs are in {state_dir}. Stop it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
