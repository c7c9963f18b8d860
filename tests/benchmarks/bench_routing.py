"""Routing convergence and LSA counts: the real routing engine over the in-memory transport.

The network is ``controllers.routing.memory.SimulatedNetwork``: every node a real ``Router``
(Ed25519 signatures, the database, flooding, Dijkstra), the transport in-process on a virtual
clock. It is brought to its settled state (``bootstrap``), then one link fails at both ends at
once and the figure is the time until every node's routing table is final: each call into a
router takes the wall time it really took and a node handles one thing at a time, so the figure
is the critical path of a network whose nodes each have a CPU (as QSS nodes do); times are CPU
(process) times, so other work on a shared machine does not inflate them. Dijkstra runs
as soon as a node's database changed (``spf_delay`` 0; the controller's default batches for
50 ms). The total CPU of all nodes together is in the notes.

- convergence after a link failure, 50-node ring (paper Figure 11: about 50 ms at 50 nodes)
  and 1,000-node random graph (average degree 4; every tenth node has an SAE, the others are
  trusted repeaters, which send no S packet), beside the floor of any signed flooding:
  the hops the news must travel times one Ed25519 verification, measured in the same run;
- LSA transmissions for that failure, beside naive flooding (every node sends every new LSA
  to all its neighbours, the one it came from included);
- LSAs sent for a busy link whose cost (equation 2) swings at random for ten minutes, sampled
  every 2 s, beside naive origination (a new LSA on every change, flooded naively): what the
  hysteresis and the origination throttle save.

``python -m tests.benchmarks.bench_routing [--nodes N]`` (the random graph's size).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections import deque
from collections.abc import Sequence

from controllers.routing.memory import SimulatedNetwork
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import RoutingKey, verify
from tests.benchmarks.report import Result, table

# Timers far out, so that nothing but the change happens while it is measured.
QUIET = RoutingSettings(
    hello_interval=1000.0,
    dead_interval=3000.0,
    lsa_lifetime=86_400,
    refresh_interval=80_000.0,
    spf_delay=0.0,
    min_origination_interval=1.0,
    max_origination_hold=16.0,
)
BUSY_SECONDS = 600.0
SAMPLE_EVERY = 2.0
RANDOM_NODES = 1000

Edge = tuple[str, str]
_notes: list[str] = []


def _name(i: int) -> str:
    return f"n{i:04d}"


def _network(n: int, edges: set[Edge], *, seed: int, sae_every: int = 1) -> SimulatedNetwork:
    """Every ``sae_every``-th node has an SAE; the others are trusted repeaters."""
    rng = random.Random(seed)
    net = SimulatedNetwork(settings=QUIET)
    for i in range(n):
        net.add_node(_name(i), saes=[f"sae-{i}"] if i % sae_every == 0 else [])
    for a, b in sorted(edges):
        net.link(a, b, cost=rng.randrange(40_000, 120_000), cost_ba=rng.randrange(40_000, 120_000))
    return net


def _ring(n: int) -> set[Edge]:
    return {_edge(_name(i), _name((i + 1) % n)) for i in range(n)}


def _random_graph(n: int, *, degree: int, seed: int) -> set[Edge]:
    rng = random.Random(seed)
    edges = _ring(n)  # connected
    while len(edges) < n * degree // 2:
        a, b = rng.sample(range(n), 2)
        edges.add(_edge(_name(a), _name(b)))
    return edges


def _edge(a: str, b: str) -> Edge:
    x, y = sorted((a, b))
    return x, y


def _hops_from(sources: Sequence[str], edges: set[Edge]) -> int:
    """How many hops the farthest node is from the nearest of ``sources`` (BFS)."""
    neighbours: dict[str, list[str]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    distance = dict.fromkeys(sources, 0)
    queue = deque(sources)
    while queue:
        node = queue.popleft()
        for peer in neighbours.get(node, []):
            if peer not in distance:
                distance[peer] = distance[node] + 1
                queue.append(peer)
    return max(distance.values())


def _verify_seconds() -> float:
    """One Ed25519 verification of an LSA-sized message, median of many, in CPU time, now."""
    key = RoutingKey()
    data = b"x" * 300
    signature = key.sign(data)
    runs = []
    for _ in range(5):
        began = time.process_time()
        for _ in range(200):
            verify(key.public, signature, data)
        runs.append((time.process_time() - began) / 200)
    return statistics.median(runs)


def _failure(what: str, n: int, edges: set[Edge], *, seed: int, sae_every: int = 1) -> list[Result]:
    began = time.perf_counter()
    net = _network(n, edges, seed=seed, sae_every=sae_every)
    net.bootstrap()
    net.run_for(2 * QUIET.max_origination_hold)  # first Dijkstra runs, holds expire
    if not net.converged():
        raise RuntimeError(f"{what}: the network did not settle before the change")
    setup = time.perf_counter() - began
    failing = sorted(edges)[len(edges) // 2]
    after = edges - {failing}
    lsas, cpu = net.lsas_sent(), net.cpu_seconds
    net.measure = True
    net.table_changed_at.clear()
    start = net.now
    # All nodes' state shares this one process; a garbage collection of it would be billed to
    # whichever node happened to trigger it (a real node's heap is a thousandth of this).
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        net.unlink(*failing)
        quiet = net.run_until_quiet(limit=start + 100.0) - start
    finally:
        gc.enable()
        gc.unfreeze()
    if not net.converged():
        raise RuntimeError(f"{what}: the network did not converge after the failure")
    final = max(net.table_changed_at.values()) - start
    sent = net.lsas_sent() - lsas
    hops = _hops_from(failing, after)
    floor = hops * _verify_seconds()
    degrees = 2 * len(after)
    _notes.append(
        f"{what}: {len(edges)} links; link {failing[0]}-{failing[1]} failed; every table final "
        f"after {final * 1e3:.1f} ms, last message {quiet * 1e3:.1f} ms; all nodes' CPU "
        f"together {(net.cpu_seconds - cpu) * 1e3:.0f} ms; the news travels {hops} hops; "
        f"set-up {setup:.0f} s"
    )
    return [
        Result(
            what=f"routing convergence after a link failure, {what}",
            unit="ms",
            ours=final * 1e3,
            baseline=floor * 1e3,
            baseline_is=f"floor: {hops} hops x one Ed25519 verification ({floor / hops * 1e6:.0f} "
            "us, measured now)",
        ),
        Result(
            what=f"LSA transmissions for that failure, {what}",
            unit="LSAs",
            ours=sent,
            baseline=2 * degrees,
            baseline_is="naive flooding: both new LSAs sent by every node to every neighbour",
        ),
    ]


def _busy_link() -> Result:
    """A busy link: its cost sampled every 2 s (as the QKDLink reconciler does) while its
    buffer drains and refills at random, for ten minutes."""
    edges = _ring(50)
    net = _network(50, edges, seed=3)
    net.bootstrap()
    net.run_for(2 * QUIET.max_origination_hold)
    rng = random.Random(4)
    before = net.lsas_sent()
    a, b = _name(0), _name(1)
    changes, cost = 0, 50_000
    for _ in range(round(BUSY_SECONDS / SAMPLE_EVERY)):
        new = min(125_000, max(25_000, cost + rng.randrange(-15_000, 15_001)))
        changes += new != cost
        cost = new
        net.set_cost(a, b, cost)
        net.run_for(SAMPLE_EVERY)
    net.run_for(2 * QUIET.max_origination_hold)
    sent = net.lsas_sent() - before
    return Result(
        what=f"LSAs sent for a busy link, cost sampled every {SAMPLE_EVERY:.0f} s for "
        f"{BUSY_SECONDS / 60:.0f} min, 50-node ring",
        unit="LSAs",
        ours=sent,
        baseline=changes * 2 * len(edges),
        baseline_is=f"naive: a new LSA on each of the {changes} cost changes, flooded naively",
    )


def run(nodes: int = RANDOM_NODES) -> list[Result]:
    _notes.clear()
    results = _failure("50-node ring", 50, _ring(50), seed=1)
    results += _failure(
        f"{nodes}-node random graph",
        nodes,
        _random_graph(nodes, degree=4, seed=2),
        seed=2,
        sae_every=10,
    )
    results.append(_busy_link())
    return results


def notes() -> list[str]:
    return [
        *_notes,
        "QSS 2.0 (paper, Figure 11): about 50 ms at 50 nodes; ARCHITECTURE.md: 26 ms per hop. "
        "Targets: 50-node ring <= 20 ms, 1,000 nodes <= 1 s.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_routing")
    parser.add_argument("--nodes", type=int, default=RANDOM_NODES, help="random graph size")
    args = parser.parse_args(argv)
    print(table(run(args.nodes), notes=notes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
