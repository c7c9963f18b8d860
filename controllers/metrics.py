"""The controller's Prometheus metrics, all defined here, served on its health port.

Who records what, always at a boundary, never inside the logic:

- the ETSI 014 app's middleware and handlers (``controllers.etsi014.app``): request latency,
  keys served and errors by reason, ``interface="etsi014"``;
- the KeyRequest service (``controllers.delivery.requests``): the same for
  ``interface="keyrequest"``;
- key delivery's own boundaries: the pools (``controllers.delivery.pools``) count the blocks
  agreed with the peer and the keys given back; the KRP routes (``controllers.delivery.krp``)
  the keys this node holds for its slave SAEs and the blocks it refuses at its bound; the
  upkeep round (``controllers.delivery.upkeep``) the held keys that expired unfetched and the
  blocks given back at their deadline; the relay's boundaries (``NodeKeyDelivery.relay_prepare``
  at the source, ``controllers.delivery.relay_routes`` on the path) the keys relayed by role
  and the aborts by reason. The keys in each pair's pool are read from the store when
  Prometheus scrapes (``refresh``, which the health port awaits before it answers);
- the QKDLink sampler (``controllers.handlers.links``): each link's cost (the paper's equation
  (2)), state and whether its peer is trusted;
- ``start_node`` (``controllers.node``) hands the routing service and the Route writer to
  ``watch_routing``; their counters (``RoutingStats``, the writer's writes and deletes) are read
  when Prometheus scrapes, so nothing is counted twice.

Labels are low-cardinality names an operator chose: link and node IDs, SAE IDs of pairs that
were served (both SAEs are then registered), interface, operation and error reason. No label
ever carries a key, a key ID, a request ID or a certificate. A refused request is counted by
its reason only: it may name any SAE ID, and a label must not grow with what clients send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Final, Literal, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controllers.routing.stats import DROP_REASONS, RoutingStats

log = logging.getLogger(__name__)

Interface = Literal["etsi014", "keyrequest"]
# 014: status, enc_keys (Get key), dec_keys (Get key with key IDs); KeyRequests: the paper's
# getKey (a master request) and getKeyWithId (a slave request).
Operation = Literal["status", "enc_keys", "dec_keys", "get_key", "get_key_with_ids", "other"]
LINK_STATES: Final = ("Up", "Degraded", "Down", "Unknown")

REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Delivery: from a millisecond (keys in stock, one node) to a minute (waiting for keys).
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

KEYS_SERVED: Final = Counter(
    "qss_keys_served",
    "Keys delivered to SAEs, by interface, operation and SAE pair (master, slave).",
    ["interface", "operation", "master_sae", "slave_sae"],
    registry=REGISTRY,
)
REQUEST_SECONDS: Final = Histogram(
    "qss_key_request_duration_seconds",
    "Time to serve a successful key request (014: the HTTP request; KeyRequest: from its "
    "startTime to Ready), by interface, operation and SAE pair.",
    ["interface", "operation", "master_sae", "slave_sae"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUEST_ERRORS: Final = Counter(
    "qss_key_request_errors",
    "Key requests refused or failed, by interface, operation and reason (the delivery "
    "error's reason, e.g. InsufficientKeys, UnknownSae, or Unauthorized, BadRequest).",
    ["interface", "operation", "reason"],
    registry=REGISTRY,
)

LINK_COST: Final = Gauge(
    "qss_link_cost",
    "The link's cost K_i(t) (the paper's equation 2) at its last sample.",
    ["link", "peer"],
    registry=REGISTRY,
)
LINK_STATE: Final = Gauge(
    "qss_link_state",
    "1 for the link's current state (Up, Degraded, Down, Unknown), 0 for the others.",
    ["link", "peer", "state"],
    registry=REGISTRY,
)
LINK_PEER_TRUSTED: Final = Gauge(
    "qss_link_peer_trusted",
    "1 while the channel to the link's peer is set up and trusted both ways (condition "
    "PeerTrusted), else 0.",
    ["link", "peer"],
    registry=REGISTRY,
)
LINK_AVAILABLE_KEYS: Final = Gauge(
    "qss_link_available_keys",
    "Keys available on the link's streams at its last sample (k_i(t)).",
    ["link", "peer"],
    registry=REGISTRY,
)


def keys_served(
    *,
    interface: Interface,
    operation: Operation,
    master_sae: str,
    slave_sae: str,
    keys: int,
    seconds: float,
) -> None:
    """A request delivered ``keys`` keys (0 for a 014 status call) in ``seconds``."""
    labels = (interface, operation, master_sae, slave_sae)
    if keys:
        KEYS_SERVED.labels(*labels).inc(keys)
    REQUEST_SECONDS.labels(*labels).observe(max(0.0, seconds))


def request_failed(*, interface: Interface, operation: Operation, reason: str) -> None:
    REQUEST_ERRORS.labels(interface, operation, reason).inc()


# A KeyRequest's role is the paper's operation: a master request is getKey, a slave request
# (the automatic one on the slave SAE's node, or a user's) getKeyWithId.
_KEYREQUEST_OPERATION: Final[dict[str, Operation]] = {
    "Master": "get_key",
    "Slave": "get_key_with_ids",
}


def keyrequest_served(
    *, role: str, master_sae: str, slave_sae: str, keys: int, seconds: float
) -> None:
    keys_served(
        interface="keyrequest",
        operation=_KEYREQUEST_OPERATION[role],
        master_sae=master_sae,
        slave_sae=slave_sae,
        keys=keys,
        seconds=seconds,
    )


def keyrequest_failed(*, role: str, reason: str) -> None:
    request_failed(interface="keyrequest", operation=_KEYREQUEST_OPERATION[role], reason=reason)


# -- pools and keys held for slave SAEs ----------------------------------------------------------

_PAIR: Final = ["peer", "master_sae", "slave_sae"]

POOL_BLOCKS_AGREED: Final = Counter(
    "qss_pool_blocks_agreed",
    "Key blocks the peer node agreed to hold for a pair's pool on this node (master side), "
    "by peer node and SAE pair.",
    _PAIR,
    registry=REGISTRY,
)
POOL_KEYS_AGREED: Final = Counter(
    "qss_pool_keys_agreed",
    "Keys those blocks brought into the pair's pool.",
    _PAIR,
    registry=REGISTRY,
)
POOL_KEYS_GIVEN_BACK: Final = Counter(
    "qss_pool_keys_given_back",
    "Keys of a pool nobody used for pool_idle_seconds, given back to the stream (through "
    "the peer), by peer node and SAE pair.",
    _PAIR,
    registry=REGISTRY,
)
POOL_BLOCKS_EXPIRED: Final = Counter(
    "qss_pool_blocks_expired",
    "Master pool blocks past their deadline (not agreed in time, or not served within "
    "serve_seconds) whose keys were given back, by stream.",
    ["stream"],
    registry=REGISTRY,
)
SLAVE_KEYS_HELD: Final = Counter(
    "qss_slave_keys_held",
    "Keys this node agreed to hold for its slave SAEs (a master node's pool blocks), by "
    "peer node and SAE pair. They leave by being fetched (qss_keys_served_total with "
    "operation dec_keys or get_key_with_ids), given back, or expiring.",
    _PAIR,
    registry=REGISTRY,
)
SLAVE_KEYS_EXPIRED: Final = Counter(
    "qss_slave_keys_expired",
    "Keys held here for slave SAEs dropped unfetched at the end of their lease, by stream.",
    ["stream"],
    registry=REGISTRY,
)
SLAVE_BACKLOG_REFUSALS: Final = Counter(
    "qss_slave_backlog_refusals",
    "Blocks refused because the keys held here for slave SAEs reached their bound "
    "(held_factor times the stream's capacity), by stream.",
    ["stream"],
    registry=REGISTRY,
)


def block_agreed(*, peer: str, master_sae: str, slave_sae: str, keys: int) -> None:
    POOL_BLOCKS_AGREED.labels(peer, master_sae, slave_sae).inc()
    POOL_KEYS_AGREED.labels(peer, master_sae, slave_sae).inc(keys)


def pool_given_back(*, peer: str, master_sae: str, slave_sae: str, keys: int) -> None:
    POOL_KEYS_GIVEN_BACK.labels(peer, master_sae, slave_sae).inc(keys)


def swept(*, stream: str, blocks_expired: int, slave_keys_expired: int) -> None:
    """What one upkeep sweep of a stream acted on."""
    if blocks_expired:
        POOL_BLOCKS_EXPIRED.labels(stream).inc(blocks_expired)
    if slave_keys_expired:
        SLAVE_KEYS_EXPIRED.labels(stream).inc(slave_keys_expired)


def slave_keys_held(*, peer: str, master_sae: str, slave_sae: str, keys: int) -> None:
    SLAVE_KEYS_HELD.labels(peer, master_sae, slave_sae).inc(keys)


def slave_backlog(*, stream: str) -> None:
    SLAVE_BACKLOG_REFUSALS.labels(stream).inc()


class PoolLevels(Protocol):
    """What the pool gauge reads (``controllers.delivery.pools.Pools``)."""

    async def levels(self) -> Mapping[tuple[str, str, str], int]:
        """Keys servable now per (peer node, master SAE, slave SAE) pool."""
        ...


class PoolCollector(Collector):
    """The keys in each pair's pool, as ``refresh`` last read them from the store."""

    def __init__(self) -> None:
        self.pools: PoolLevels | None = None
        self.levels: Mapping[tuple[str, str, str], int] = {}

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "qss_pool_keys",
            "Keys in a pair's pool on this node (agreed with the peer, servable at once), by "
            "peer node and SAE pair, read from the store when scraped.",
            labels=_PAIR,
        )
        for labels, keys in sorted(self.levels.items()):
            gauge.add_metric(list(labels), keys)
        yield gauge


POOLS: Final = PoolCollector()
REGISTRY.register(POOLS)
# A scrape waits at most this long for the store; then it shows the levels read before.
REFRESH_SECONDS: Final = 2.0


def watch_pools(pools: PoolLevels | None) -> None:
    """Export the levels of this node's pools (``start_node`` calls it once)."""
    POOLS.pools, POOLS.levels = pools, {}


async def refresh() -> None:
    """Read what is sampled at scrape time (the health port calls it before answering)."""
    pools = POOLS.pools
    if pools is None:
        return
    try:
        async with asyncio.timeout(REFRESH_SECONDS):
            POOLS.levels = dict(await pools.levels())
    except Exception as exc:  # a scrape must answer even while Redis is away
        log.warning("reading the pools' levels for /metrics failed: %s", type(exc).__name__)


# -- the key relay ----------------------------------------------------------------------------

RelayRole = Literal["source", "repeater", "destination"]
RELAYED_ROLES: Final[tuple[RelayRole, ...]] = ("source", "repeater", "destination")

RELAYED_KEYS: Final = Counter(
    "qss_relayed_keys",
    "Keys relayed through trusted repeaters, by this node's role on the path (source, "
    "repeater, destination), counted once the rest of the path holds them.",
    ["role"],
    registry=REGISTRY,
)
RELAY_ABORTS: Final = Counter(
    "qss_relay_aborts",
    "Relays that failed at this node, by its role on the path and reason (the refusal's or "
    "the delivery error's reason; Aborted: the node before told this one to drop its part).",
    ["role", "reason"],
    registry=REGISTRY,
)


def relayed(*, role: RelayRole, keys: int) -> None:
    RELAYED_KEYS.labels(role).inc(keys)


def relay_aborted(*, role: RelayRole, reason: str) -> None:
    RELAY_ABORTS.labels(role, reason).inc()


# The peer each link's series were last labelled with, to remove them when it changes or goes.
_LINK_PEERS: Final[dict[str, str]] = {}


def link_sampled(
    *, link: str, peer: str, state: str, cost: float, available: int, trusted: bool
) -> None:
    if _LINK_PEERS.get(link, peer) != peer:
        link_gone(link)
    _LINK_PEERS[link] = peer
    LINK_COST.labels(link, peer).set(cost)
    LINK_AVAILABLE_KEYS.labels(link, peer).set(available)
    LINK_PEER_TRUSTED.labels(link, peer).set(1 if trusted else 0)
    for each in LINK_STATES:
        LINK_STATE.labels(link, peer, each).set(1 if each == state else 0)


def link_gone(link: str) -> None:
    """Forget a deleted link's series."""
    peer = _LINK_PEERS.pop(link, None)
    if peer is None:
        return
    for gauge in (LINK_COST, LINK_AVAILABLE_KEYS, LINK_PEER_TRUSTED):
        gauge.remove(link, peer)
    for each in LINK_STATES:
        LINK_STATE.remove(link, peer, each)


# -- routing: read from the routing service's own counters when scraped -------------------------


class RoutingSource(Protocol):
    """What the routing collector reads (``controllers.routing.channel.RoutingService``)."""

    stats: RoutingStats

    def route_objects(self) -> dict[str, dict[str, object]]: ...


class RouteWrites(Protocol):
    """The Route writer's counts (``controllers.routing.writer.RouteWriter``)."""

    writes: int
    deletes: int


# RoutingStats.as_dict() keys; its dropped_* totals are exported per neighbour instead.
_ROUTING_COUNTERS: Final = (
    (
        "originated",
        "qss_routing_lsas_originated",
        "LSAs this node signed (its own S and K packets).",
    ),
    ("lsas_sent", "qss_routing_lsas_sent", "LSA transmissions to neighbours."),
    ("lsas_received", "qss_routing_lsas_received", "LSAs received from neighbours."),
    ("accepted", "qss_routing_lsas_accepted", "Received LSAs newer than held, installed."),
    ("duplicates", "qss_routing_lsas_duplicate", "Received LSAs this node held already."),
    ("expired", "qss_routing_lsas_expired", "LSAs aged out of the link-state database."),
    ("messages_sent", "qss_routing_messages_sent", "Hello, exchange and flood messages sent."),
    ("exchanges", "qss_routing_exchanges", "Full database exchanges with neighbours completed."),
    ("spf_runs", "qss_routing_spf_runs", "Shortest-path (Dijkstra) runs."),
)


class RoutingCollector(Collector):
    """Exports ``RoutingStats`` and the Route writer's counts as they are at scrape time."""

    def __init__(self) -> None:
        self.routing: RoutingSource | None = None
        self.writer: RouteWrites | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the source; collect() is cheap

    def collect(self) -> Iterator[Metric]:
        routing, writer = self.routing, self.writer
        if routing is None:
            return
        stats = routing.stats
        flat = stats.as_dict()
        for field, name, documentation in _ROUTING_COUNTERS:
            yield CounterMetricFamily(name, documentation, value=flat[field])
        dropped = CounterMetricFamily(
            "qss_routing_lsas_dropped",
            "LSAs dropped, by the neighbour that sent them and reason (bad_signature, "
            "unknown_originator, not_newer, malformed).",
            labels=["peer", "reason"],
        )
        for peer, drops in sorted(stats.by_peer.items()):
            for reason in DROP_REASONS:
                dropped.add_metric([peer, reason], drops.counts[reason])
        yield dropped
        yield GaugeMetricFamily(
            "qss_routes",
            "Entries in the routing table (one Route per reachable SAE).",
            value=len(routing.route_objects()),
        )
        if writer is not None:
            changes = CounterMetricFamily(
                "qss_route_changes",
                "Route objects written because the routing table changed, by operation "
                "(apply: created or updated, delete).",
                labels=["operation"],
            )
            changes.add_metric(["apply"], writer.writes)
            changes.add_metric(["delete"], writer.deletes)
            yield changes


ROUTING: Final = RoutingCollector()
REGISTRY.register(ROUTING)


def watch_routing(routing: RoutingSource, writer: RouteWrites) -> None:
    """Export this node's routing counters (``start_node`` calls it once)."""
    ROUTING.routing, ROUTING.writer = routing, writer
