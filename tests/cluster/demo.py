"""The README's main job (``make demo``): a local QSS network, shown with kubectl.

Two QSS nodes (node-a, node-b), each a real kube-apiserver with its Redis key store and
controller, joined by one QKD link (a simulated device pair and a QKDM at each end). It shows
the links and key streams filling on both clusters, registers the SAEs alice (node-a) and bob
(node-b), applies the sample KeyRequest on node-a and shows that the Secrets on both clusters
hold the same key IDs (never the keys). The network keeps running; ``make demo-down`` stops it.

With ``--topology FILE`` (``make demo TOPOLOGY=examples/topologies/line3.yaml``) it builds the
network that file describes instead (``tests.cluster.topology``) and shows every node's links,
key streams and routing table (``kubectl get routes``) once every node has a Route to every SAE,
and each node's picture of the network.
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
from tests.cluster.network import QssNetwork, running_network
from tests.cluster.topology import NetworkTopology, TopologyError, load_topology

SAMPLES = REPO_ROOT / "kustomize" / "samples"


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


def run(network: QssNetwork) -> None:
    a, b = network.nodes["node-a"].cluster, network.nodes["node-b"].cluster
    network.add_link("node-a", "node-b", rate_bps=200_000, capacity=100_000)
    network.register_sae("node-b", "default", "bob", "bob")
    a.kubectl("apply", "--server-side", "-f", str(SAMPLES / "qss.dev_v1alpha1_sae.yaml"))
    network.register_sae("node-a", "default", "alice", "alice")  # waits until it is Ready
    time.sleep(3)
    for cluster in (a, b):
        show(cluster, "get", "qkdlinks,keystreams")
    print("\n... three seconds later, the key streams have filled further:")
    time.sleep(3)
    for cluster in (a, b):
        show(cluster, "get", "keystreams")

    show(a, "apply", "--server-side", "-f", str(SAMPLES / "qss.dev_v1alpha1_keyrequest.yaml"))
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
    draw_network(network)


def draw_network(network: QssNetwork) -> None:
    """Each node's picture of the network (qss-netmap), as DOT and SVG next to the logs."""
    print("\nPictures of the QKD network as each node sees it (qss-netmap):")
    for name, node in network.nodes.items():
        prefix = network.state_dir / f"netmap-{name}"
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
    draw_network(network)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--topology", type=Path, help="a topology file (see the README)")
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
    with running_network(state_dir, detach=True, topology=topology) as network:
        if topology is None:
            run(network)
        else:
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
