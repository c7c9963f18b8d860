"""An in-memory transport for the routing engine: many ``Router``s in one process, joined by
links that deliver their requests and answers through one event queue on a virtual clock.

The unit tests drive whole networks with it (rings, grids, random graphs; links that flap, are
cut, or vanish with their node) and the benchmarks measure convergence with it. It speaks to the
engine exactly as ``controllers.routing.channel`` does over the inter-node channel, minus the
JSON and TLS: the same calls, the same message objects, answers or failures.

Time is virtual. With ``measure=False`` (tests) nothing takes time but ``latency``, so runs are
deterministic. With ``measure=True`` (benchmarks) each call into a router takes the CPU time
it really took (process time, so a busy machine descheduling us does not count), and a node
handles one thing at a time: as if every node ran on its own CPU, which is what a network of
QSS nodes does. ``cpu_seconds`` is the sum over all nodes.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from controllers.routing.engine import Message, Outgoing, Router
from controllers.routing.messages import Exchange, Flood, Hello
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import shared_verification
from controllers.routing.spf import NodePath, shortest_paths
from controllers.routing.stats import RoutingStats
from controllers.saes.directory import SaeDirectory

# Something a node does at a virtual time; it returns what it sets off at other nodes (an
# answer), which leaves once the node is done.
FollowUp = tuple[str, "Action"]
Action = Callable[[float], list[FollowUp]]


@dataclass(slots=True)
class _Event:
    node: str
    action: Action
    tick: bool


@dataclass
class SimulatedNode:
    router: Router
    directory: SaeDirectory
    saes: set[str]
    costs: dict[str, int] = field(default_factory=dict)


class SimulatedNetwork:
    def __init__(
        self,
        *,
        settings: RoutingSettings,
        latency: float = 0.0,
        measure: bool = False,
    ) -> None:
        self.settings = settings
        self.latency = latency
        self.measure = measure
        self.now = 0.0
        self.nodes: dict[str, SimulatedNode] = {}
        self.cpu_seconds = 0.0
        self.events = 0
        self._links: dict[str, set[str]] = {}  # configured QKDLinks, both ends
        self._cut: set[frozenset[str]] = set()
        self._queue: list[tuple[float, int, _Event]] = []
        self._order = itertools.count()
        self._busy: dict[str, float] = {}
        self._tick_at: dict[str, float] = {}
        self.last_activity = 0.0  # virtual time the last piece of work finished
        # When each node's table (paths or SAEs) last changed: convergence is the latest.
        self.table_changed_at: dict[str, float] = {}

    # -- building --------------------------------------------------------------------------

    def add_node(self, node_id: str, *, saes: Iterable[str] = ()) -> SimulatedNode:
        local = set(saes)
        directory = SaeDirectory(local_node_id=node_id, local=local)
        router = Router(
            node_id=node_id,
            settings=self.settings,
            now=self.now,
            saes=directory,
            seq_clock=lambda: int(self.now * 1_000_000),
            wall_ms=lambda: int(self.now * 1000),
        )
        node = SimulatedNode(router=router, directory=directory, saes=local)
        self.nodes[node_id] = node
        self._links.setdefault(node_id, set())
        self._busy[node_id] = self.now
        self._call(node_id, self.now, lambda t: router.set_local_saes(local, t))
        return node

    def restart_node(self, node_id: str) -> SimulatedNode:
        """The node's controller restarts: a fresh router (new key, empty database), same
        links and SAEs."""
        old = self.nodes.pop(node_id)
        self._tick_at.pop(node_id, None)
        node = self.add_node(node_id, saes=old.saes)
        node.costs = dict(old.costs)
        self._configure(node_id)
        return node

    def remove_node(self, node_id: str) -> None:
        """The node goes away: it stops answering; its neighbours' QKDLinks to it stay."""
        del self.nodes[node_id]
        self._tick_at.pop(node_id, None)

    def link(self, a: str, b: str, *, cost: int = 50_000, cost_ba: int | None = None) -> None:
        """A QKDLink between a and b on both ends, with each end's cost (thousandths)."""
        self._links[a].add(b)
        self._links[b].add(a)
        self.nodes[a].costs[b] = cost
        self.nodes[b].costs[a] = cost if cost_ba is None else cost_ba
        self._configure(a)
        self._configure(b)

    def unlink(self, a: str, b: str) -> None:
        """Both QKDLinks deleted."""
        self._links[a].discard(b)
        self._links[b].discard(a)
        for x in (a, b):
            if x in self.nodes:
                self._configure(x)

    def set_cost(self, a: str, b: str, cost: int) -> None:
        """a's view of the link to b (its QKDLink's cost) changes."""
        self.nodes[a].costs[b] = cost
        self._configure(a)

    def cut(self, a: str, b: str) -> None:
        """The channel between a and b fails both ways (the QKDLinks stay)."""
        self._cut.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        self._cut.discard(frozenset((a, b)))

    def set_saes(self, node_id: str, saes: Iterable[str]) -> None:
        node = self.nodes[node_id]
        node.saes.clear()
        node.saes.update(saes)
        self._call(node_id, self.now, lambda t: node.router.set_local_saes(node.saes, t))

    def bootstrap(self) -> None:
        """Bring the configured network straight to its settled state, without simulating the
        floods of a cold start (``settle`` simulates those; a thousand-node cold start would
        take minutes of CPU in one process). It uses the routers' ordinary calls: every node
        configures its links, exchanges hellos with each neighbour, originates its LSAs, and
        receives every LSA in one database exchange; what those calls would send is dropped,
        since the exchange has delivered it. Signatures are verified once for all nodes."""
        now = self.now
        with shared_verification():
            for node_id, node in self.nodes.items():
                peers = sorted(p for p in self._links[node_id] if p in self.nodes)
                node.router.set_local_saes(node.saes, now)
                node.router.set_neighbours(sorted(self._links[node_id]), now)
                node.router.set_link_costs({p: node.costs.get(p, 50_000) for p in peers}, now)
            for node_id, node in self.nodes.items():
                for peer in self._working_peers(node_id):
                    hello = self.nodes[peer].router.hello
                    node.router.on_exchange(peer, Exchange(hello=hello), now)
            lsas = []
            for node in self.nodes.values():
                node.router.tick(now)
                lsas += [lsa for lsa in node.router.database() if lsa.source == node.router.node_id]
            everything = tuple(lsas)
            for node_id, node in self.nodes.items():
                peers = self._working_peers(node_id)
                if peers:
                    hello = self.nodes[peers[0]].router.hello
                    node.router.on_exchange(
                        peers[0], Exchange.model_construct(hello=hello, lsas=everything), now
                    )
            for node_id, node in self.nodes.items():
                node.router.take_outgoing()
                self._schedule_tick(node_id, node.router.next_wakeup())

    def _working_peers(self, node_id: str) -> list[str]:
        return sorted(
            p
            for p in self._links[node_id]
            if p in self.nodes
            and node_id in self._links[p]
            and frozenset((node_id, p)) not in self._cut
        )

    def send(self, sender: str, peer: str, message: Message) -> None:
        """Deliver ``message`` from ``sender`` to ``peer`` as if ``sender``'s router had sent
        it (a test playing a misbehaving neighbour); the answer goes to ``sender``'s router."""
        self._deliver(sender, Outgoing(peer=peer, message=message), self.now)

    def _configure(self, node_id: str) -> None:
        def configure(t: float) -> None:
            # What is configured when the node gets to it, as a QKDLink watch would see it.
            node = self.nodes[node_id]
            peers = sorted(self._links[node_id])
            node.router.set_neighbours(peers, t)
            node.router.set_link_costs({p: node.costs.get(p, 50_000) for p in peers}, t)

        self._call(node_id, self.now, configure)

    # -- running ---------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            self._step()
        self.now = max(self.now, until)

    def run_until_quiet(self, *, limit: float) -> float:
        """Run until nothing is left to do before ``limit`` (periodic timers set far out);
        returns the virtual time the last piece of work finished."""
        while self._queue and self._queue[0][0] <= limit:
            self._step()
        return self.last_activity

    def settle(self, *, rounds: float = 30.0, step: float = 1.0) -> None:
        """Run until every router has the paths and SAEs the configured network implies (up to
        ``rounds`` virtual seconds); AssertionError otherwise."""
        deadline = self.now + rounds
        while self.now < deadline:
            self.run_for(step)
            if self.converged():
                return
        raise AssertionError(f"not converged after {rounds} s: {self.disagreements()[:5]}")

    # -- what it should converge to ---------------------------------------------------------

    def expected_paths(self, node_id: str) -> dict[str, NodePath]:
        """The paths Dijkstra gives over the links whose channel works, at the configured
        costs (what every router should find once the network has settled)."""
        claims: dict[str, dict[str, int]] = {}
        for x, peers in self._links.items():
            if x not in self.nodes:
                continue
            claims[x] = {
                p: self.nodes[x].costs.get(p, 50_000)
                for p in peers
                if p in self.nodes and x in self._links[p] and frozenset((x, p)) not in self._cut
            }
        return shortest_paths(node_id, claims)

    def disagreements(self) -> list[str]:
        problems = []
        for node_id, node in sorted(self.nodes.items()):
            expected = self.expected_paths(node_id)
            if dict(node.router.paths) != expected:
                problems.append(f"{node_id}: paths differ")
            for other in expected:
                if other == node_id:
                    continue
                saes = self.nodes[other].saes
                known = node.directory.remote().get(other, frozenset())
                if known != saes:
                    problems.append(f"{node_id}: SAEs of {other} {sorted(known)} != {sorted(saes)}")
        return problems

    def converged(self) -> bool:
        return not self.disagreements()

    def stats(self) -> Mapping[str, RoutingStats]:
        return {n: node.router.stats for n, node in self.nodes.items()}

    def lsas_sent(self) -> int:
        return sum(node.router.stats.lsas_sent for node in self.nodes.values())

    # -- the event loop --------------------------------------------------------------------

    def _push(self, at: float, node: str, action: Action, *, tick: bool = False) -> None:
        heapq.heappush(self._queue, (at, next(self._order), _Event(node, action, tick)))

    def _call(self, node_id: str, at: float, action: Callable[[float], None]) -> None:
        def call(t: float) -> list[FollowUp]:
            action(t)
            return []

        self._push(at, node_id, call)

    def _schedule_tick(self, node_id: str, at: float) -> None:
        scheduled = self._tick_at.get(node_id)
        if scheduled is None or at < scheduled:
            self._tick_at[node_id] = at
            router = self.nodes[node_id].router

            def tick(t: float) -> list[FollowUp]:
                router.tick(t)
                return []

            self._push(at, node_id, tick, tick=True)

    def _step(self) -> None:
        at, _, event = heapq.heappop(self._queue)
        self.now = max(self.now, at)
        node = self.nodes.get(event.node)
        if node is None:
            return  # the node went away
        if event.tick and self._tick_at.get(event.node) != at:
            return  # superseded by an earlier tick
        start = max(at, self._busy[event.node])
        if start > at:  # the node is busy: wait in line
            if event.tick:
                self._tick_at[event.node] = start
            self._push(start, event.node, event.action, tick=event.tick)
            return
        if event.tick:
            del self._tick_at[event.node]
        version = node.router.version
        began = time.process_time()
        follow_ups = event.action(start)
        elapsed = time.process_time() - began
        self.cpu_seconds += elapsed
        self.events += 1
        done = start + (elapsed if self.measure else 0.0)
        self._busy[event.node] = done
        self.last_activity = max(self.last_activity, done)
        if node.router.version != version:
            self.table_changed_at[event.node] = done
        for target, action in follow_ups:
            self._push(done + self.latency, target, action)
        if event.node not in self.nodes:
            return
        router = self.nodes[event.node].router
        for out in router.take_outgoing():
            self._deliver(event.node, out, done)
        self._schedule_tick(event.node, max(router.next_wakeup(), done))

    def _deliver(self, sender: str, out: Outgoing, at: float) -> None:
        peer, message = out.peer, out.message
        if peer not in self.nodes or frozenset((sender, peer)) in self._cut:
            # Connection refused or timed out: the sender hears of it after its timeout.
            def fail(t: float) -> list[FollowUp]:
                self.nodes[sender].router.on_answer(peer, message, None, t)
                return []

            self._push(at + self.settings.request_timeout, sender, fail)
            return

        def handle(t: float) -> list[FollowUp]:
            answer = _answer(self.nodes[peer].router, sender, message, t)

            def answered(t2: float) -> list[FollowUp]:
                self.nodes[sender].router.on_answer(peer, message, answer, t2)
                return []

            return [(sender, answered)]

        self._push(at + self.latency, peer, handle)


def _answer(router: Router, sender: str, message: Message, now: float) -> Message:
    if isinstance(message, Hello):
        return router.on_hello(sender, message, now)
    if isinstance(message, Exchange):
        return router.on_exchange(sender, message, now)
    assert isinstance(message, Flood)
    return router.on_flood(sender, message, now)
