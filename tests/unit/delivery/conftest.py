"""Fixtures for the key delivery tests: two nodes joined by one stream (``harness.py``), with
SAE ``alice`` on node-a and ``bob`` on node-b, each store holding chunks 0..1999; and three in
a line for the relay's tests (``relay_harness.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from controllers.delivery.settings import DeliverySettings
from tests.unit.delivery.harness import Node, feed, join, register, start_node
from tests.unit.delivery.relay_harness import feed_line, join_line, register_line, stream_name

CAPACITY = 4000

Start = Callable[..., Awaitable[Node]]


@dataclass
class Pair:
    a: Node
    b: Node
    started: list[Node] = field(default_factory=list)


def db(redis_url: str, n: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{n}"


@pytest.fixture
def settings() -> DeliverySettings:
    """Short deadlines, so that tests of leases wait seconds, not minutes."""
    return DeliverySettings(
        serve_seconds=20.0,
        agree_seconds=2.0,
        hold_seconds=5.0,
        fetch_window_seconds=10.0,
        pool_idle_seconds=30.0,
        sweep_seconds=0.1,
        retry_max_seconds=0.5,
    )


@pytest.fixture
async def pair(redis_url: str, settings: DeliverySettings) -> AsyncIterator[Pair]:
    a = await start_node("node-a", db(redis_url, 4), settings, capacity=CAPACITY)
    b = await start_node("node-b", db(redis_url, 5), settings, capacity=CAPACITY)
    p = Pair(a=a, b=b, started=[a, b])
    await join(a, b)
    register(a, "alice", [b])
    register(b, "bob", [a])
    await feed([a, b], 0, 2000)
    yield p
    for node in p.started:
        await node.stop()


@dataclass
class Line:
    """Three nodes in a line for the relay tests (``relay_harness``): alice on node-a, carol on
    node-c, node-b between them; each store holding chunks 0..1999 of its links."""

    a: Node
    b: Node
    c: Node
    urls: dict[str, str] = field(default_factory=dict)  # each node's Redis database

    @property
    def nodes(self) -> list[Node]:
        return [self.a, self.b, self.c]


@pytest.fixture
async def line(redis_url: str, settings: DeliverySettings) -> AsyncIterator[Line]:
    urls = {"node-a": db(redis_url, 6), "node-b": db(redis_url, 7), "node-c": db(redis_url, 8)}
    ab, bc = stream_name("node-a", "node-b"), stream_name("node-b", "node-c")
    streams = {"node-a": [ab], "node-b": [ab, bc], "node-c": [bc]}
    nodes = [
        await start_node(n, urls[n], settings, streams=streams[n], capacity=CAPACITY)
        for n in ("node-a", "node-b", "node-c")
    ]
    await join_line(nodes)
    register_line(nodes, nodes[0], "alice")
    register_line(nodes, nodes[2], "carol")
    await feed_line(nodes, 0, 2000)
    yield Line(a=nodes[0], b=nodes[1], c=nodes[2], urls=urls)
    for node in nodes:
        await node.stop_calling()
    for node in nodes:
        await node.stop()
