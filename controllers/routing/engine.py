"""The link-state routing protocol of one QSS node, as pure logic without I/O.

A ``Router`` is driven by its transport (``controllers.routing.channel`` over the inter-node
channel, ``controllers.routing.memory`` in tests and benchmarks) through a handful of calls,
each given the current time on the transport's clock:

- configuration: ``set_neighbours`` (the peers of the node's QKDLinks), ``set_link_costs``
  (equation 2 per neighbour, from the QKDLinks' status), ``set_local_saes``;
- the three requests a neighbour can send, each answered at once: ``on_hello``,
  ``on_exchange`` (full database exchange), ``on_flood``;
- ``on_answer`` with the answer to a request of ours (None when it failed);
- ``tick`` when ``next_wakeup`` has come: hellos, dead neighbours, expiry, refresh, throttled
  originations, Dijkstra.

After each call the transport sends ``take_outgoing()``. The protocol, in short: a neighbour is
up while it answers or sends hellos (its routing key arrives with them over the authenticated
channel); when one comes up the two exchange their whole databases; every node originates an S
packet (its SAEs) and a K packet (its up neighbours, their keys and the link costs), signed,
under a growing sequence number, re-originated on change (throttled, with a hysteresis on cost)
and periodically; an LSA newer than the held one is verified, installed and flooded to every up
neighbour but the one it came from; an older one is dropped and answered with the newer copy;
LSAs expire ``lifetime`` seconds after origination. The paths (``paths``) are recomputed by
Dijkstra after each change of the K packets; ``version`` grows whenever paths or SAEs change.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from controllers.routing.lsdb import Ident, LinkStateDatabase
from controllers.routing.messages import (
    MAX_SAES,
    VERSION,
    Exchange,
    Flood,
    Hello,
    LinkEntry,
    Lsa,
)
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import RoutingKey, verify
from controllers.routing.spf import NodePath, shortest_paths
from controllers.routing.stats import DropReason, RoutingStats
from controllers.routing.throttle import Throttle
from controllers.routing.trust import KeyTrust
from qss_api.wire import SAE_ID_PATTERN

log = logging.getLogger(__name__)

Message = Hello | Exchange | Flood
LsaType = Literal["S", "K"]

# LSAs held back for an originator whose key nobody has vouched for yet; beyond this many the
# oldest are given up (a flood of junk must not grow memory).
MAX_HELD: Final = 4_096
# The cost of a link whose QKDLink has no cost in its status yet: c0, "no key at all".
DEFAULT_COST: Final = 100_000
_SAE_ID: Final = re.compile(SAE_ID_PATTERN)
# What the signature field holds while the signed bytes are computed (they leave it out).
_UNSIGNED: Final = "A" * 86


class SaeSink(Protocol):
    """Where the SAEs of other nodes go (``controllers.saes.SaeDirectory``)."""

    def record(self, node_id: str, sae_ids: Iterable[str], generation: int) -> bool: ...

    def forget(self, node_id: str) -> bool: ...

    def synchronised(self, node_id: str) -> None:
        """A full database exchange with neighbour ``node_id`` completed."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request for the transport to send to ``peer``; its answer goes to ``on_answer``."""

    peer: str
    message: Message


@dataclass(slots=True)
class Neighbour:
    up: bool = False
    key: str | None = None
    last_heard: float = -math.inf
    hello_due: float = 0.0
    needs_exchange: bool = True
    exchanging: bool = False


@dataclass(slots=True)
class Held:
    lsa: Lsa
    peer: str
    until: float


@dataclass
class _Own:
    """One of this node's own LSAs: its throttle, sequence number and latest instance."""

    throttle: Throttle
    seq: int = 0
    last: float = -math.inf
    lsa: Lsa | None = None
    # What the K packet advertised: neighbour -> (cost, key).
    links: dict[str, tuple[int, str]] = field(default_factory=dict)


class Router:
    """One node's routing protocol. The messages it builds are from parts already checked (its
    own, or received and validated), so it constructs them without validating them again."""

    def __init__(
        self,
        *,
        node_id: str,
        settings: RoutingSettings,
        now: float,
        key: RoutingKey | None = None,
        stats: RoutingStats | None = None,
        saes: SaeSink | None = None,
        seq_clock: Callable[[], int] = time.time_ns,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.node_id = node_id
        self.settings = settings
        self.key = key or RoutingKey()
        self.stats = stats or RoutingStats()
        self.hello = Hello(version=VERSION, node=node_id, key=self.key.public)
        self._sink = saes
        self._seq_clock = seq_clock
        self._wall_ms = wall_ms
        self._lsdb = LinkStateDatabase()
        self._trust = KeyTrust(node_id=node_id, own_key=self.key.public)
        self._neighbours: dict[str, Neighbour] = {}
        self._costs: dict[str, int] = {}
        self._local_saes: tuple[str, ...] = ()
        self._claims: dict[str, dict[str, int]] = {}  # K packets held: node -> {peer: cost}
        self._held: dict[Ident, Held] = {}
        self._gained: list[str] = []  # nodes with a newly vouched key, to look at held LSAs of
        self._own: dict[LsaType, _Own] = {
            t: _Own(
                throttle=Throttle(
                    initial=settings.min_origination_interval,
                    maximum=settings.max_origination_hold,
                )
            )
            for t in ("S", "K")
        }
        self._paths: dict[str, NodePath] = {node_id: NodePath(nodes=(node_id,), cost=0)}
        self._spf_due: float | None = None
        self._floods: dict[str, dict[Ident, Lsa]] = {}
        self._out: list[Outgoing] = []
        self.version = 0
        for own in self._own.values():
            own.throttle.request()
        self._now = now
        # How long after an instance arrived an older one is still a flooding race, not a replay.
        self._race_window = settings.dead_interval

    # -- reading ---------------------------------------------------------------------------

    @property
    def paths(self) -> Mapping[str, NodePath]:
        """The chosen path to every reachable node, this node included (as of the last SPF)."""
        return self._paths

    def path_to(self, node: str) -> NodePath | None:
        return self._paths.get(node)

    def neighbours_up(self) -> list[str]:
        return sorted(p for p, n in self._neighbours.items() if n.up)

    def database(self) -> list[Lsa]:
        """Every LSA held, as this node would send it now."""
        return [self._as_sent(e.lsa.ident, self._now) for e in self._lsdb]

    def held(self) -> int:
        """How many LSAs wait for their originator's key to be vouched for."""
        return len(self._held)

    def take_outgoing(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def next_wakeup(self) -> float:
        """When ``tick`` has something to do next."""
        times = [n.hello_due for n in self._neighbours.values()]
        times += [
            n.last_heard + self.settings.dead_interval for n in self._neighbours.values() if n.up
        ]
        for own in self._own.values():
            due = own.throttle.due_at()
            times.append(own.last + self.settings.refresh_interval if due is None else due)
        expiry = self._lsdb.next_expiry()
        if expiry is not None:
            times.append(expiry)
        if self._held:
            times.append(min(h.until for h in self._held.values()))
        if self._spf_due is not None:
            times.append(self._spf_due)
        return min(times)

    # -- configuration ---------------------------------------------------------------------

    def set_neighbours(self, peers: Iterable[str], now: float) -> None:
        """The nodes this node has QKDLinks to (the channel's peers)."""
        self._now = now
        wanted = set(peers) - {self.node_id}
        for gone in set(self._neighbours) - wanted:
            del self._neighbours[gone]
            self._floods.pop(gone, None)
            self._trust.neighbour_key(gone, None)
        for new in sorted(wanted - set(self._neighbours)):
            self._neighbours[new] = Neighbour(hello_due=now)
        self._check_k(now)
        self._flush()

    def set_link_costs(self, costs: Mapping[str, int], now: float) -> None:
        """Equation (2) per neighbour, in thousandths (at least 1); missing ones cost c0."""
        self._now = now
        self._costs = {peer: max(1, int(cost)) for peer, cost in costs.items()}
        self._check_k(now)
        self._flush()

    def set_local_saes(self, saes: Iterable[str], now: float) -> None:
        self._now = now
        wanted = tuple(sorted({s for s in saes if _SAE_ID.match(s)}))
        if len(wanted) > MAX_SAES:
            # The protocol bounds an S packet; a node with more SAEs is not plausible, but it
            # must not stop its routing either.
            log.warning(
                "node %s has %d SAEs; its S packet lists the first %d (sorted by ID)",
                self.node_id,
                len(wanted),
                MAX_SAES,
            )
            wanted = wanted[:MAX_SAES]
        if wanted != self._local_saes:
            self._local_saes = wanted
            self._own["S"].throttle.request()
        self._flush()

    # -- requests from neighbours ----------------------------------------------------------

    def on_hello(self, peer: str, hello: Hello, now: float) -> Hello:
        self._now = now
        self._heard(peer, hello.key, now)
        self._flush()
        return self.hello

    def on_exchange(self, peer: str, exchange: Exchange, now: float) -> Exchange:
        self._now = now
        if peer not in self._neighbours:
            return Exchange.model_construct(hello=self.hello, lsas=())  # no (longer a) QKDLink
        self._heard(peer, exchange.hello.key, now, exchanged=True)
        self._receive(peer, exchange.lsas, now, flooded=False)
        if self._sink is not None:
            self._sink.synchronised(peer)
        theirs = {lsa.ident: lsa.signature for lsa in exchange.lsas}
        mine = tuple(
            self._as_sent(e.lsa.ident, now)
            for e in self._lsdb
            if theirs.get(e.lsa.ident) != e.lsa.signature
        )
        self.stats.exchanges += 1
        self.stats.lsas_sent += len(mine)
        self._flush()
        return Exchange.model_construct(hello=self.hello, lsas=mine)

    def on_flood(self, peer: str, flood: Flood, now: float) -> Flood:
        self._now = now
        neighbour = self._neighbours.get(peer)
        if neighbour is None:
            return Flood.model_construct(forwarder=self.node_id, lsas=())
        if neighbour.up:
            neighbour.last_heard = now
        newer = self._receive(peer, flood.lsas, now, flooded=True)
        self.stats.lsas_sent += len(newer)
        self._flush()
        return Flood.model_construct(forwarder=self.node_id, lsas=tuple(newer))

    # -- answers to our requests -----------------------------------------------------------

    def on_answer(self, peer: str, request: Message, answer: Message | None, now: float) -> None:
        """The answer to ``request`` sent to ``peer``, or None if the request failed."""
        self._now = now
        neighbour = self._neighbours.get(peer)
        if isinstance(request, Exchange) and neighbour is not None:
            neighbour.exchanging = False
            if answer is None:
                neighbour.needs_exchange = True  # retried once a hello gets through again
        if isinstance(request, Flood) and answer is None and neighbour is not None:
            neighbour.needs_exchange = True  # it may have missed LSAs: resynchronise
        if isinstance(answer, Hello):
            self._heard(peer, answer.key, now)
        elif isinstance(answer, Exchange):
            self._heard(peer, answer.hello.key, now, exchanged=True)
            self._receive(peer, answer.lsas, now, flooded=False)
            self.stats.exchanges += 1
            if self._sink is not None and peer in self._neighbours:
                self._sink.synchronised(peer)
        elif isinstance(answer, Flood):
            if neighbour is not None and neighbour.up:
                neighbour.last_heard = now
            self._receive(peer, answer.lsas, now, flooded=True)
        self._flush()

    # -- time --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._now = now
        settings = self.settings
        for peer, neighbour in sorted(self._neighbours.items()):
            if neighbour.up and now - neighbour.last_heard >= settings.dead_interval:
                neighbour.up = False
                neighbour.needs_exchange = True
                self._check_k(now)
            if neighbour.hello_due <= now:
                neighbour.hello_due = now + settings.hello_interval
                self._send(peer, self.hello)
        for entry in self._lsdb.expire(now):
            self._expired(entry.lsa, now)
        for ident, held in list(self._held.items()):
            if held.until <= now:
                del self._held[ident]
                self._drop(held.peer, "unknown_originator", held.lsa.source, now)
        for type_, own in self._own.items():
            if own.last + settings.refresh_interval <= now:
                own.throttle.request()
            due = own.throttle.due_at()
            if due is not None and due <= now:
                if type_ == "S" and not self._local_saes and own.seq == 0:
                    # A node without SAEs (a repeater) needs no S packet until it has had some
                    # (or hears of one from an earlier life, which it must then withdraw).
                    own.throttle.fire(now)
                    own.last = now
                    continue
                self._originate(type_, now)
        if self._spf_due is not None and self._spf_due <= now:
            self._spf_due = None
            self._run_spf()
        self._flush()

    # -- the protocol ------------------------------------------------------------------------

    def _heard(self, peer: str, key: str, now: float, *, exchanged: bool = False) -> None:
        neighbour = self._neighbours.get(peer)
        if neighbour is None:
            return  # no (longer a) QKDLink to it
        neighbour.last_heard = now
        changed = False
        if neighbour.key != key:
            # A new key: the neighbour restarted (and lost its database) or is new to us.
            neighbour.key = key
            neighbour.needs_exchange = True
            self._trust.neighbour_key(peer, key)
            self._retry_held([peer], now)
            changed = True
        if not neighbour.up:
            neighbour.up = True
            neighbour.needs_exchange = True
            changed = True
        if exchanged:
            neighbour.needs_exchange = False
        if changed:
            self._check_k(now)
        if neighbour.needs_exchange and not neighbour.exchanging:
            neighbour.exchanging = True
            lsas = tuple(self._as_sent(e.lsa.ident, now) for e in self._lsdb)
            self._send(peer, Exchange.model_construct(hello=self.hello, lsas=lsas))

    def _receive(self, peer: str, lsas: Iterable[Lsa], now: float, *, flooded: bool) -> list[Lsa]:
        """Consider each LSA ``peer`` sent; the newer copies to answer with. An older instance
        counts as a drop (a replay) only in a flood (a database exchange after a partition
        rightly carries stale copies), and not within the race window after its successor."""
        newer = []
        for lsa in lsas:
            self.stats.lsas_received += 1
            copy = self._consider(peer, lsa, now, flooded=flooded)
            if copy is not None:
                newer.append(copy)
            self._retry_held([], now)
        return newer

    def _consider(self, peer: str, lsa: Lsa, now: float, *, flooded: bool = True) -> Lsa | None:
        if lsa.age >= lsa.lifetime:
            return None  # expired on the way; nothing to learn from it
        if lsa.source == self.node_id:
            return self._own_instance_seen(lsa, now)
        newness = self._lsdb.newness(lsa)
        if newness == "older":
            held = self._lsdb.get(lsa.ident)
            # An older instance shortly after its successor is a flooding race (it took another
            # path); later, or after the LSA expired, it is a replay.
            if flooded and (held is None or now - held.installed_at >= self._race_window):
                self._drop(peer, "not_newer", lsa.source, now)
            return self._as_sent(lsa.ident, now) if held is not None else None
        if newness == "same":
            held = self._lsdb.get(lsa.ident)
            if held is None:
                # The instance we held has expired since: it comes back only as a replay.
                if flooded:
                    self._drop(peer, "not_newer", lsa.source, now)
                return None
            if held.lsa.signature != lsa.signature or held.lsa.signed != lsa.signed:
                # Other content under the sequence number we hold: a forgery, or an originator
                # that restarted with a clock that went back. The held one stays; the sender
                # gets it back, so such an originator learns to continue above it.
                reason = self._unauthentic(lsa)
                if reason is not None:
                    self._drop(peer, reason, lsa.source, now)
                    return None
                return self._as_sent(lsa.ident, now)
            self.stats.duplicates += 1
            return None
        if not self._trust.trusted(lsa.source, lsa.key):
            self._hold(peer, lsa, now)
            return None
        if not verify(lsa.key, lsa.signature, lsa.signed):
            self._drop(peer, "bad_signature", lsa.source, now)
            return None
        self._install(peer, lsa, now)
        return None

    def _unauthentic(self, lsa: Lsa) -> DropReason | None:
        if not self._trust.trusted(lsa.source, lsa.key):
            return "unknown_originator"
        if not verify(lsa.key, lsa.signature, lsa.signed):
            return "bad_signature"
        return None

    def _hold(self, peer: str, lsa: Lsa, now: float) -> None:
        held = self._held.get(lsa.ident)
        if held is not None and held.lsa.seq >= lsa.seq:
            return
        self._held[lsa.ident] = Held(lsa=lsa, peer=peer, until=now + self.settings.pending_hold)
        if len(self._held) > MAX_HELD:
            ident, oldest = min(self._held.items(), key=lambda item: item[1].until)
            del self._held[ident]
            self._drop(oldest.peer, "unknown_originator", oldest.lsa.source, now)

    def _retry_held(self, nodes: Iterable[str], now: float) -> None:
        """Look again at the held LSAs of ``nodes`` and of every node whose key that vouches
        for in turn (a worklist: trust can spread along a chain as long as the network)."""
        self._gained.extend(nodes)
        while self._gained:
            node = self._gained.pop()
            for type_ in ("S", "K"):
                held = self._held.pop((node, type_), None)
                if held is not None:
                    self._consider(held.peer, held.lsa, now, flooded=False)

    def _install(self, peer: str, lsa: Lsa, now: float) -> None:
        old = self._lsdb.install(lsa, now)
        self.stats.accepted += 1
        held = self._held.get(lsa.ident)
        if held is not None and held.lsa.seq <= lsa.seq:
            del self._held[lsa.ident]
        self._flood(lsa, exclude=peer)
        if lsa.type == "S":
            if self._sink is not None:
                self._sink.record(lsa.source, lsa.saes, lsa.seq)
            if old is None or old.lsa.saes != lsa.saes:
                self.version += 1
        else:
            self._claims[lsa.source] = {link.node: link.cost for link in lsa.links}
            self._gained.extend(self._trust.k_packet(old.lsa if old else None, lsa))
            self._schedule_spf(now)

    def _expired(self, lsa: Lsa, now: float) -> None:
        self.stats.expired += 1
        if lsa.source == self.node_id:
            self._own[lsa.type].throttle.request()  # cannot happen while refresh < lifetime
        if lsa.type == "S":
            if self._sink is not None:
                self._sink.forget(lsa.source)
            self.version += 1
        else:
            self._claims.pop(lsa.source, None)
            self._trust.k_packet(lsa, None)
            self._schedule_spf(now)

    def _own_instance_seen(self, lsa: Lsa, now: float) -> Lsa | None:
        own = self._own[lsa.type]
        other = own.lsa is None or own.lsa.signature != lsa.signature
        if lsa.seq > own.seq or (lsa.seq == own.seq and other):
            # An instance from before a restart (or a clock that went back): continue above it.
            own.seq = lsa.seq
            own.throttle.request()
            return None
        if lsa.seq < own.seq and own.lsa is not None:
            return self._as_sent(lsa.ident, now)
        self.stats.duplicates += 1
        return None

    def _drop(self, peer: str, reason: DropReason, source: str, now: float) -> None:
        self.stats.drop(peer, reason, source, now)

    # -- own LSAs ------------------------------------------------------------------------------

    def _wanted_links(self) -> dict[str, tuple[int, str]]:
        return {
            peer: (self._costs.get(peer, DEFAULT_COST), n.key)
            for peer, n in self._neighbours.items()
            if n.up and n.key is not None
        }

    def _check_k(self, now: float) -> None:
        wanted = self._wanted_links()
        advertised = self._own["K"].links
        structural = wanted.keys() != advertised.keys() or any(
            wanted[p][1] != advertised[p][1] for p in wanted
        )
        if structural or any(
            self._beyond_hysteresis(advertised[p][0], wanted[p][0]) for p in wanted
        ):
            self._own["K"].throttle.request()

    def _beyond_hysteresis(self, advertised: int, now: int) -> bool:
        threshold = max(
            self.settings.cost_hysteresis * advertised, self.settings.cost_hysteresis_floor * 1000
        )
        return abs(now - advertised) >= threshold

    def _originate(self, type_: LsaType, now: float) -> None:
        own = self._own[type_]
        own.seq = max(self._seq_clock(), own.seq + 1)
        links: tuple[LinkEntry, ...] = ()
        if type_ == "K":
            own.links = self._wanted_links()
            links = tuple(
                LinkEntry(node=peer, cost=cost, key=key)
                for peer, (cost, key) in sorted(own.links.items())
            )
        unsigned = Lsa(
            version=VERSION,
            type=type_,
            source=self.node_id,
            seq=own.seq,
            timestamp=self._wall_ms(),
            lifetime=self.settings.lsa_lifetime,
            key=self.key.public,
            saes=self._local_saes if type_ == "S" else (),
            links=links,
            signature=_UNSIGNED,
        )
        lsa = unsigned.model_copy(update={"signature": self.key.sign(unsigned.signed)})
        own.lsa = lsa
        own.last = now
        own.throttle.fire(now)
        self.stats.originated += 1
        self._install(self.node_id, lsa, now)
        self._retry_held([], now)

    # -- flooding and SPF ----------------------------------------------------------------------

    def _flood(self, lsa: Lsa, *, exclude: str) -> None:
        for peer, neighbour in self._neighbours.items():
            if neighbour.up and peer != exclude and peer != lsa.source:
                self._floods.setdefault(peer, {})[lsa.ident] = lsa

    def _as_sent(self, ident: Ident, now: float) -> Lsa:
        entry = self._lsdb.get(ident)
        assert entry is not None
        age = entry.age(now)
        return entry.lsa if entry.lsa.age == age else entry.lsa.model_copy(update={"age": age})

    def _send(self, peer: str, message: Message) -> None:
        self.stats.messages_sent += 1
        if isinstance(message, Exchange | Flood):
            self.stats.lsas_sent += len(message.lsas)
        self._out.append(Outgoing(peer=peer, message=message))

    def _flush(self) -> None:
        floods, self._floods = self._floods, {}
        for peer, lsas in sorted(floods.items()):
            self._send(
                peer, Flood.model_construct(forwarder=self.node_id, lsas=tuple(lsas.values()))
            )

    def _schedule_spf(self, now: float) -> None:
        if self._spf_due is None:
            self._spf_due = now + self.settings.spf_delay

    def _run_spf(self) -> None:
        self.stats.spf_runs += 1
        paths = shortest_paths(self.node_id, self._claims)
        if paths != self._paths:
            self._paths = paths
            self.version += 1
