"""Shared pieces of the routing tests: settings for simulated networks, network shapes, and
LSAs made and signed by hand (honest ones and forgeries)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from controllers.routing.memory import SimulatedNetwork
from controllers.routing.messages import LinkEntry, Lsa
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import RoutingKey

# Fast timers on the virtual clock; nothing here takes real time.
SETTINGS = RoutingSettings(
    hello_interval=1.0,
    dead_interval=4.0,
    lsa_lifetime=60,
    refresh_interval=20.0,
    min_origination_interval=1.0,
    max_origination_hold=8.0,
    spf_delay=0.05,
    pending_hold=10.0,
    request_timeout=2.0,
)


# The same, with refreshes rare enough that a test running for minutes sees none.
QUIET = dataclasses.replace(SETTINGS, lsa_lifetime=3600, refresh_interval=1800.0)


def network(**kwargs: Any) -> SimulatedNetwork:
    return SimulatedNetwork(settings=kwargs.pop("settings", SETTINGS), **kwargs)


def name(i: int) -> str:
    return f"n{i:03d}"


def ring(n: int, *, cost: int = 50_000, settings: RoutingSettings = SETTINGS) -> SimulatedNetwork:
    net = network(settings=settings)
    for i in range(n):
        net.add_node(name(i), saes=[f"sae-{i}"])
    for i in range(n):
        net.link(name(i), name((i + 1) % n), cost=cost)
    return net


def grid(width: int, height: int, *, seed: int = 7) -> SimulatedNetwork:
    rng = random.Random(seed)
    net = network()
    for i in range(width * height):
        net.add_node(name(i), saes=[f"sae-{i}"])
    for y in range(height):
        for x in range(width):
            i = y * width + x
            if x + 1 < width:
                net.link(name(i), name(i + 1), cost=rng.randrange(40_000, 120_000))
            if y + 1 < height:
                net.link(name(i), name(i + width), cost=rng.randrange(40_000, 120_000))
    return net


def random_graph(n: int, *, degree: int = 4, seed: int = 1) -> SimulatedNetwork:
    """A connected random graph: a ring for connectivity plus random chords, random costs
    in each direction (both ends sample their own view of a link)."""
    rng = random.Random(seed)
    net = network()
    for i in range(n):
        net.add_node(name(i), saes=[f"sae-{i}", f"app-{i}"] if i % 3 == 0 else [f"sae-{i}"])
    edges: set[tuple[str, str]] = set()
    for i in range(n):
        x, y = sorted((name(i), name((i + 1) % n)))
        edges.add((x, y))
    while len(edges) < n * degree // 2:
        i, j = rng.sample(range(n), 2)
        x, y = sorted((name(i), name(j)))
        edges.add((x, y))
    for a, b in sorted(edges):
        net.link(a, b, cost=rng.randrange(40_000, 120_000), cost_ba=rng.randrange(40_000, 120_000))
    return net


def signed(key: RoutingKey, **fields: Any) -> Lsa:
    """An LSA with ``fields`` (defaults for the rest), signed by ``key``."""
    body: dict[str, Any] = {
        "version": 1,
        "type": "S",
        "source": "n000",
        "seq": 10,
        "timestamp": 0,
        "lifetime": 60,
        "key": key.public,
        "saes": (),
        "links": (),
        "signature": "A" * 86,
    }
    body.update(fields)
    unsigned = Lsa(**body)
    return unsigned.model_copy(update={"signature": key.sign(unsigned.signed)})


def k_packet(key: RoutingKey, source: str, links: dict[str, tuple[int, str]], seq: int) -> Lsa:
    return signed(
        key,
        type="K",
        source=source,
        seq=seq,
        links=tuple(
            LinkEntry(node=peer, cost=cost, key=peer_key)
            for peer, (cost, peer_key) in sorted(links.items())
        ),
    )
