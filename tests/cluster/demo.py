"""The README's main job (``make demo``): a local QSS network, shown with kubectl.

By default three QSS nodes in a line (``examples/topologies/line3.yaml``: node-a - node-b -
node-c, alice on node-a, carol on node-c), each a real kube-apiserver with its Redis key store
and controller, joined by QKD links (a simulated device pair and a QKDM at each end). It shows
every node's links, key streams and routing table (``kubectl get routes``) once every node has
a Route to every SAE; then a KeyRequest on node-a for carol, relayed through node-b: the
Secrets on node-a and node-c hold the same key IDs (never the keys are printed) and node-b holds
none; last, each node's picture of the network with the Route to carol highlighted. The network
keeps running; ``make demo-down`` stops it. ``--topology FILE`` (``make demo TOPOLOGY=...``)
builds the network that file describes instead, and relays from its first SAE to its last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.localcluster import DEFAULT_STATE_DIR, REPO_ROOT, Cluster, stop_recorded
from tests.cluster.network import QssNetwork, apply, running_network
from tests.cluster.topology import NetworkTopology, TopologyError, load_topology, sae_object_name

DEFAULT_TOPOLOGY = REPO_ROOT / "examples" / "topologies" / "line3.yaml"


def show(cluster: Cluster, *args: str) -> str:
    print(f"\n[{cluster.name}] $ kubectl {' '.join(args)}")
    out = cluster.kubectl(*args).stdout
    print(out.rstrip())
    return out


def wait_ready(cluster: Cluster, name: str, namespace: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json").stdout
        status = json.loads(out).get("status", {})
        if status.get("phase") in ("Ready", "Failed"):
            return dict(status)
        time.sleep(0.2)
    raise RuntimeError(f"KeyRequest {namespace}/{name} on {cluster.name} not done in {timeout}s")


def key_ids(cluster: Cluster, secret: str, namespace: str) -> list[str]:
    out = cluster.kubectl("get", "secret", secret, "-n", namespace, "-o", "json").stdout
    return sorted(k for k in json.loads(out)["data"] if k != "keys.json")


def relayed_request(network: QssNetwork, topology: NetworkTopology) -> str:
    """A KeyRequest from the first SAE of the first node for the last SAE of the last node (two
    hops away on the line): its Secrets on both ends hold the same key IDs, the nodes between
    hold none. Returns the slave SAE's ID."""
    saes = [(node, sae) for node, ids in topology.nodes.items() for sae in ids]
    (first, master), (last, slave) = saes[0], saes[-1]
    namespace = topology.sae_namespace
    a, z = network.nodes[first].cluster, network.nodes[last].cluster
    name = f"{sae_object_name(master)}-to-{sae_object_name(slave)}"
    request = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "KeyRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "sae": sae_object_name(master),
            "slaveSaeID": slave,
            "number": 10,
            "size": 256,
            "timeoutSeconds": 60,
        },
    }
    print(f"\n[{first}] KeyRequest {namespace}/{name}: 10 keys shared with {slave} on {last}")
    apply(a, request)
    status = wait_ready(a, name, namespace, timeout=90)
    if status.get("phase") != "Ready":
        raise RuntimeError(f"the demo KeyRequest failed: {status.get('conditions')}")
    uid = json.loads(a.kubectl("get", "keyrequest", name, "-n", namespace, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    slave_request = f"{sae_object_name(slave)}-{uid}"
    wait_ready(z, slave_request, namespace)
    for node in topology.nodes:
        if not show(network.nodes[node].cluster, "get", "keyrequests,secrets", "-n", namespace):
            print("(no KeyRequests, no Secrets)")
    ids_a = key_ids(a, f"{name}-keys", namespace)
    ids_z = key_ids(z, f"{slave_request}-keys", namespace)
    print(f"\nKey IDs in Secret {namespace}/{name}-keys on {first} (the keys stay in the Secret):")
    print("  " + "\n  ".join(ids_a))
    same = "the same" if ids_a == ids_z else "DIFFERENT"
    print(f"Secret {namespace}/{slave_request}-keys on {last} holds {same} {len(ids_z)} key IDs;")
    path: list[str] = next(
        (r["spec"]["path"] for r in items(a, "routes") if r["spec"]["saeID"] == slave), []
    )
    repeaters = ", ".join(path[1:-1]) or "none"
    print(f"The path was {' -> '.join(path)}; the repeaters ({repeaters}) hold no Secret of it.")
    if ids_a != ids_z:
        raise RuntimeError("the two Secrets hold different key IDs")
    return slave


def draw_network(network: QssNetwork, *, route: str | None = None) -> None:
    """Each node's picture of the network (qss-netmap), as DOT and SVG next to the logs, with
    the Route to ``route`` highlighted."""
    print("\nPictures of the QKD network as each node sees it (qss-netmap):")
    for name, node in network.nodes.items():
        prefix = network.state_dir / f"netmap-{name}"
        highlight = ["--route", route] if route else []
        subprocess.run(
            [
                sys.executable,
                "-m",
                "controllers.netmap.main",
                "--kubeconfig",
                str(node.cluster.kubeconfig),
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


def run_topology(network: QssNetwork, topology: NetworkTopology, timeout: float = 120) -> None:
    saes = sum(len(s) for s in topology.nodes.values())
    clusters = [network.nodes[n].cluster for n in topology.nodes]
    deadline = time.monotonic() + timeout
    while not all(settled(c, saes) for c in clusters):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not every link is up, or not every node has a Route to each of the {saes} SAEs"
            )
        time.sleep(0.5)
    for cluster in clusters:
        show(cluster, "get", "qkdlinks,keystreams")
    for cluster in clusters:
        show(cluster, "get", "routes", "-o", "wide")
    slave = relayed_request(network, topology)
    draw_network(network, route=slave)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument(
        "--topology",
        type=Path,
        default=DEFAULT_TOPOLOGY,
        help="a topology file (see the README); default: three nodes in a line",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    if stop_recorded(state_dir):
        print("stopped the previous demo network")
    shutil.rmtree(state_dir, ignore_errors=True)
    with running_network(state_dir, detach=True, topology=topology) as network:
        run_topology(network, topology)
        bin_dir = network.plane.bin_dir
        kubeconfigs = {n: node.cluster.kubeconfig for n, node in network.nodes.items()}
    print("\nThe network keeps running. Explore it with:")
    print(f"  export PATH={bin_dir}:$PATH")
    for name, path in kubeconfigs.items():
        print(f"  kubectl --kubeconfig {path} get qss -A     # {name}")
    print(f"Logs are in {state_dir}. Stop it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
