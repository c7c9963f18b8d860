"""Nodes in a line for the key relay's tests, built as a pair's are (``harness.start_node``,
given each node's streams): each link of the line has one key stream; ``join_line`` joins
neighbours, ``feed_line`` plays every link's two QKDMs and ``register_line`` fills each node's
``FixedRoutes`` (the test double of routing's table, from ``harness``) with the path along the
line, as routing would find it.
"""

from __future__ import annotations

import itertools
import uuid

from tests.unit.delivery.harness import Node, connect, feed, register


def stream_name(a: str, b: str) -> str:
    return f"{min(a, b)}-{max(a, b)}"


def ksid_of(stream: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay-test/{stream}"))


def _links(nodes: list[Node]) -> list[tuple[Node, Node, str]]:
    return [(x, y, stream_name(x.node_id, y.node_id)) for x, y in itertools.pairwise(nodes)]


async def join_line(nodes: list[Node]) -> None:
    """A QKD link between each two neighbours: trust, the link and its stream on both ends."""
    await connect([(x, y, stream, ksid_of(stream)) for x, y, stream in _links(nodes)])


async def feed_line(nodes: list[Node], first: int, n: int) -> None:
    """Every link's QKDMs store chunks ``first`` .. at both its ends."""
    for x, y, stream in _links(nodes):
        await feed([x, y], first, n, stream=stream, ksid=ksid_of(stream))


def register_line(nodes: list[Node], node: Node, sae_id: str) -> None:
    """Register ``sae_id`` with ``node``; every other node learns where it is and its path."""
    others = [other for other in nodes if other is not node]
    register(node, sae_id, others)
    ids = [n.node_id for n in nodes]
    at = ids.index(node.node_id)
    for i, other in enumerate(nodes):
        if other is not node:
            step = 1 if at > i else -1
            other.routes.paths[sae_id] = tuple(ids[i : at + step : step])
