"""Fixtures for the key delivery tests: two nodes joined by one stream (``harness.py``), with
SAE ``alice`` on node-a and ``bob`` on node-b, each store holding chunks 0..1999."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from controllers.delivery.settings import DeliverySettings
from tests.unit.delivery.harness import Node, feed, join, register, start_node

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
