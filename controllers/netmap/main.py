"""The ``qss-netmap`` command: draw the QKD network as one QSS node sees it.

Reads that node's QKDLinks, KeyStreams, Saes and Routes from its API server (the kubeconfig's
current context) and writes Graphviz DOT and SVG (the SVG through Graphviz's ``dot``, which must
be on PATH). Key material is never read: only the objects' specs and statuses.

    qss-netmap --output /tmp/net            # writes /tmp/net.dot and /tmp/net.svg
    qss-netmap --format dot --output -      # DOT on standard output
    qss-netmap --route bob --output /tmp/to-bob
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from controllers.kube import Kube, connect
from controllers.netmap.dot import render
from controllers.netmap.model import NetworkMap, build_map
from qss_api import KEYSTREAMS, QKDLINKS, ROUTES, SAES

NODE_CONFIGMAP = "kube-qss-node"  # what kustomize/default generates, with key nodeID


class NetmapError(RuntimeError):
    """Something the user can fix: the message says what."""


async def _node_id(kube: Kube, namespace: str, saes: list[dict[str, Any]]) -> str:
    """This node's ID: the node ConfigMap, else what its Saes' status says."""
    try:
        config = await kube.core.read_namespaced_config_map(NODE_CONFIGMAP, namespace)
        if config.data and config.data.get("nodeID"):
            return str(config.data["nodeID"])
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
    for sae in saes:
        node = (sae.get("status") or {}).get("nodeID")
        if node:
            return str(node)
    raise NetmapError(
        f"cannot tell this node's ID (no ConfigMap {namespace}/{NODE_CONFIGMAP}, no registered "
        "Sae); pass --node-id"
    )


async def read_map(*, kubeconfig: str | None, node_id: str | None, namespace: str) -> NetworkMap:
    kube = Kube(api=await connect(kubeconfig), field_manager="qss-netmap")
    try:
        links, streams, saes, routes = await asyncio.gather(
            kube.list(QKDLINKS), kube.list(KEYSTREAMS), kube.list(SAES), kube.list(ROUTES)
        )
        node = node_id or await _node_id(kube, namespace, saes)
    finally:
        await kube.api.close()
    return build_map(node_id=node, links=links, streams=streams, saes=saes, routes=routes)


def to_svg(dot_source: str) -> str:
    binary = shutil.which("dot")
    if binary is None:
        raise NetmapError("Graphviz's `dot` is not on PATH; install graphviz or use --format dot")
    done = subprocess.run(
        [binary, "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise NetmapError(f"dot failed: {done.stderr.strip()}")
    return done.stdout


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qss-netmap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", help="the node's cluster (default: KUBECONFIG, in-cluster)")
    parser.add_argument("--node-id", help="this node's ID (default: from the cluster)")
    parser.add_argument(
        "--namespace", default="kube-qss-system", help="the node's namespace (%(default)s)"
    )
    parser.add_argument("--route", metavar="SAE_ID", help="highlight the Route to this SAE")
    parser.add_argument("--format", choices=("dot", "svg", "both"), default="both")
    parser.add_argument(
        "--output", required=True, help="path prefix (adds .dot/.svg), or - for stdout"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.output == "-" and args.format == "both":
        print("qss-netmap: --output - needs --format dot or svg", file=sys.stderr)
        return 2
    try:
        network = asyncio.run(
            read_map(kubeconfig=args.kubeconfig, node_id=args.node_id, namespace=args.namespace)
        )
        source = render(network, highlight=args.route)
        outputs = {"dot": source} if args.format == "dot" else {}
        if args.format in ("svg", "both"):
            outputs["svg"] = to_svg(source)
        if args.format == "both":
            outputs["dot"] = source
    except (NetmapError, KeyError) as exc:
        print(f"qss-netmap: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(next(iter(outputs.values())))
        return 0
    for suffix, text in outputs.items():
        path = Path(f"{args.output}.{suffix}")
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
