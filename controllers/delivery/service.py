"""Key delivery between a local SAE and one on another node, over the node's key store, its
pools and the inter-node channel (through trusted repeaters, ``controllers.delivery.relay``,
when the other node is not a neighbour): ``NodeKeyDelivery`` implements ``KeyDelivery`` (the
ETSI 014 API's view) and the steps the KeyRequest service takes
(``controllers.delivery.keyrequests``).

Master side: the pair's pool on a stream towards the slave SAE's node serves the keys (``take``
deletes them, ``hold`` sets them aside for a request until ``commit`` or ``cancel``); the slave's
node holds its copies for the pair. Slave side: ``claim`` the keys by ID (or ``hold_ids`` them
for a request). Nothing here calls the peer on a request's path, except a pool refill when the
pool ran dry.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controllers import metrics
from controllers.delivery.api import (
    MAX_KEY_SIZE,
    MAX_KEYS_PER_REQUEST,
    MIN_KEY_SIZE,
    DeliveredKey,
    DeliveryError,
    InvalidRequest,
    NoRoute,
    PairStatus,
    RequestTooLarge,
    SameNodePair,
    UnknownKeys,
    UnknownSae,
)
from controllers.delivery.pools import PoolKey, Pools, pair_owner
from controllers.delivery.relay import Relay
from controllers.delivery.relay_messages import MAX_RELAY_BYTES
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.keystore import (
    Hold,
    Key,
    KeyStore,
    Notice,
    StreamCounts,
    UnknownKeysError,
    UnknownStreamError,
)
from controllers.routing.table import RouteFinder

log = logging.getLogger("controllers.delivery")


class SaeLookup(Protocol):
    def lookup(self, sae_id: str) -> tuple[str, str] | None:
        """(namespace, Sae name) of a local SAE, or None."""
        ...


class SaeLocator(Protocol):
    def node_of(self, sae_id: str) -> str | None:
        """The node an SAE is registered with, or None if unknown."""
        ...

    def is_known_absent(self, sae_id: str) -> bool:
        """Whether an SAE ``node_of`` does not find is unknown for good (every neighbour has
        told us its SAEs), rather than not known yet."""
        ...


def check_request(*, number: int, size_bits: int) -> None:
    if not 1 <= number <= MAX_KEYS_PER_REQUEST:
        raise InvalidRequest(f"number must be between 1 and {MAX_KEYS_PER_REQUEST}, got {number}")
    if not MIN_KEY_SIZE <= size_bits <= MAX_KEY_SIZE or size_bits % 8:
        raise InvalidRequest(
            f"size must be a multiple of 8 between {MIN_KEY_SIZE} and {MAX_KEY_SIZE} bits, "
            f"got {size_bits}"
        )


def delivered(keys: Sequence[Key]) -> list[DeliveredKey]:
    return [DeliveredKey(key_id=k.key_id, material=k.material) for k in keys]


@dataclass(frozen=True, slots=True)
class Placed:
    """Keys set aside for a request: on which stream, for which pair, towards which node."""

    stream: str
    peer_node: str
    hold: Hold


@dataclass
class NodeKeyDelivery:
    node_id: str
    store: KeyStore
    topology: Topology
    local_saes: SaeLookup
    directory: SaeLocator
    pools: Pools
    settings: DeliverySettings
    # Wakes the outbox (``Upkeep.kick``): a commit just queued a message for a peer.
    kick: Callable[[], None]
    clock: Callable[[], float] = field(default=time.monotonic)
    # Multi-hop: routing's paths, and the relay that carries keys along them (None: neighbours
    # only).
    routes: RouteFinder | None = None
    relay: Relay | None = None

    # -- where the keys come from --------------------------------------------------------------

    def route(self, *, master_sae_id: str, slave_sae_id: str) -> PoolKey:
        """The pool a local master SAE gets keys for ``slave_sae_id`` from (size unset)."""
        if self.local_saes.lookup(master_sae_id) is None:
            raise UnknownSae(
                f"SAE {master_sae_id!r} is not registered with node {self.node_id}",
                retryable=False,
            )
        node = self.directory.node_of(slave_sae_id)
        if node is None:
            if self.directory.is_known_absent(slave_sae_id):
                raise UnknownSae(
                    f"SAE {slave_sae_id!r} is not known in the QKD network: no neighbour of "
                    f"node {self.node_id} has it registered",
                    retryable=False,
                )
            raise UnknownSae(
                f"SAE {slave_sae_id!r} is not known yet: not every neighbour of node "
                f"{self.node_id} has told it its SAEs; try again shortly",
                retryable=True,
            )
        if node == self.node_id:
            raise SameNodePair(
                f"SAE {slave_sae_id!r} is registered with this node too; QKD keys are shared"
                " between two nodes, so ask for keys shared with an SAE of another node"
            )
        streams = self.topology.streams_towards(node)
        if streams:
            return PoolKey(
                stream=streams[0].name,
                peer=node,
                master_sae_id=master_sae_id,
                slave_sae_id=slave_sae_id,
                size_bits=0,
            )
        # Not a neighbour: the keys are relayed along the routing path, from the pair's pool on
        # the path's first link.
        found = self.routes.route_to(slave_sae_id) if self.routes and self.relay else None
        if found is not None and found.next_hop is not None and found.destination == node:
            streams = self.topology.streams_towards(found.next_hop)
            if streams:
                return PoolKey(
                    stream=streams[0].name,
                    peer=found.next_hop,
                    master_sae_id=master_sae_id,
                    slave_sae_id=slave_sae_id,
                    size_bits=0,
                    path=found.path,
                )
        raise NoRoute(f"no key stream nor route leads from node {self.node_id} to node {node}")

    async def _counts(self, stream: str) -> StreamCounts:
        known = self.pools.capacity_of(stream)
        if known is not None:
            return known
        return await self.store.counts(stream=stream)

    async def pool_for(
        self, *, master_sae_id: str, slave_sae_id: str, number: int, size_bits: int
    ) -> PoolKey:
        """The pool of the request, after checking it can ever be served."""
        check_request(number=number, size_bits=size_bits)
        route = self.route(master_sae_id=master_sae_id, slave_sae_id=slave_sae_id)
        try:
            counts = await self._counts(route.stream)
        except UnknownStreamError:
            raise NoRoute(
                f"key stream {route.stream} towards node {route.peer} has no keys yet"
            ) from None
        chunks = number * math.ceil(size_bits / (8 * counts.chunk_bytes))
        if chunks > counts.capacity:
            raise RequestTooLarge(
                f"{number} keys of {size_bits} bits take {chunks} chunks of key stream"
                f" {route.stream}, whose buffer holds at most {counts.capacity}; ask for fewer"
                " or smaller keys"
            )
        if route.path and number * size_bits // 8 > MAX_RELAY_BYTES:
            raise RequestTooLarge(
                f"{number} keys of {size_bits} bits are more than a relay to node"
                f" {route.path[-1]} carries at once ({MAX_RELAY_BYTES} bytes); ask for fewer"
                " or smaller keys"
            )
        return PoolKey(
            stream=route.stream,
            peer=route.peer,
            master_sae_id=master_sae_id,
            slave_sae_id=slave_sae_id,
            size_bits=size_bits,
            path=route.path,
        )

    async def pair_status(self, *, master_sae_id: str, slave_sae_id: str) -> PairStatus:
        route = self.route(master_sae_id=master_sae_id, slave_sae_id=slave_sae_id)
        counts = await self.store.counts(stream=route.stream)
        size = counts.chunk_bytes * 8
        level = await self.store.pool_level(stream=route.stream, owner=route.owner, size_bits=size)
        return PairStatus(
            source_node=self.node_id,
            target_node=route.path[-1] if route.path else route.peer,
            key_size=size,
            stored_key_count=counts.available + level.keys,
            max_key_count=counts.capacity,
        )

    # -- master side ---------------------------------------------------------------------------

    async def get_keys(
        self,
        *,
        request_id: str,
        master_sae_id: str,
        slave_sae_id: str,
        number: int,
        size_bits: int,
        timeout: float,
    ) -> list[DeliveredKey]:
        pool = await self.pool_for(
            master_sae_id=master_sae_id,
            slave_sae_id=slave_sae_id,
            number=number,
            size_bits=size_bits,
        )
        if not pool.path:
            keys = await self.pools.take(pool, count=number, deadline=self.clock() + timeout)
            return delivered(keys)
        # Relayed: held, relayed, then committed with the commit for the path in one step.
        deadline = self.clock() + timeout
        relay_id = str(uuid.uuid4())
        placed = await self.hold(pool=pool, number=number, hold_id=relay_id, timeout=timeout)
        await self.relay_prepare(
            pool=pool, hold=placed.hold, relay_id=relay_id, timeout=deadline - self.clock()
        )
        await self.commit(
            stream=pool.stream,
            hold_id=relay_id,
            notice=self.relay_commit_notice(
                pool=pool, relay_id=relay_id, key_ids=placed.hold.key_ids, hand_over=False
            ),
        )
        return delivered(placed.hold.keys)

    async def relay_prepare(
        self, *, pool: PoolKey, hold: Hold, relay_id: str, timeout: float
    ) -> None:
        """Relay the hold's keys along ``pool.path`` (``controllers.delivery.relay``): once
        this returns, every node on the path holds its part; on failure nothing stays held."""
        assert self.relay is not None  # route() finds no path without it
        try:
            await self.relay.prepare(
                relay_id=relay_id, request_id=relay_id, pool=pool, hold=hold, timeout=timeout
            )
        except DeliveryError as exc:
            metrics.relay_aborted(role="source", reason=exc.reason)
            raise
        metrics.relayed(role="source", keys=len(hold.keys))

    def relay_commit_notice(
        self, *, pool: PoolKey, relay_id: str, key_ids: Sequence[str], hand_over: bool
    ) -> Notice:
        """The commit for the relay's path, to queue with the source's own commit."""
        assert self.relay is not None
        return self.relay.commit_notice(
            relay_id=relay_id,
            request_id=relay_id,
            pool=pool,
            key_ids=key_ids,
            hand_over=hand_over,
        )

    async def hold(self, *, pool: PoolKey, number: int, hold_id: str, timeout: float) -> Placed:
        """``number`` keys of the pool set aside for the request ``hold_id`` (idempotent)."""
        held = await self.pools.hold(
            pool, count=number, hold_id=hold_id, deadline=self.clock() + timeout
        )
        return Placed(stream=pool.stream, peer_node=pool.peer, hold=held)

    # -- slave side ----------------------------------------------------------------------------

    async def _slave_streams(self, master_sae_id: str) -> list[str]:
        # Key IDs are UUIDs, unique across streams: where the master's node is not known (yet,
        # after a restart), look in every stream this store holds.
        node = self.directory.node_of(master_sae_id)
        if node is not None:
            streams = [s.name for s in self.topology.streams_towards(node)]
            if streams:
                return streams
        return await self.store.streams()

    def _check_slave(self, slave_sae_id: str) -> None:
        if self.local_saes.lookup(slave_sae_id) is None:
            raise UnknownSae(
                f"SAE {slave_sae_id!r} is not registered with node {self.node_id}",
                retryable=False,
            )

    def _unknown_keys(self, slave: str, master: str, count: int) -> UnknownKeys:
        return UnknownKeys(
            f"{count} key IDs are not all held for SAE {slave!r} and SAE {master!r} (unknown,"
            " not handed over yet, already delivered, or past the slave's fetch window)"
        )

    async def get_keys_with_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> list[DeliveredKey]:
        self._check_slave(slave_sae_id)
        owner = pair_owner(master_sae_id, slave_sae_id)
        for stream in await self._slave_streams(master_sae_id):
            try:
                keys = await self.store.claim(stream=stream, owner=owner, key_ids=key_ids)
            except (UnknownKeysError, UnknownStreamError):
                continue
            return delivered(keys)
        raise self._unknown_keys(slave_sae_id, master_sae_id, len(key_ids))

    async def hold_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str], hold_id: str
    ) -> Placed:
        """The slave side of a request: its keys, by ID, set aside for it (idempotent)."""
        self._check_slave(slave_sae_id)
        owner = pair_owner(master_sae_id, slave_sae_id)
        for stream in await self._slave_streams(master_sae_id):
            try:
                keys = await self.store.claim(
                    stream=stream,
                    owner=owner,
                    key_ids=key_ids,
                    hold_id=hold_id,
                    hold_ms=int(self.settings.hold_seconds * 1000),
                )
            except (UnknownKeysError, UnknownStreamError):
                continue
            hold = Hold(
                hold_id=hold_id,
                owner=owner,
                size_bits=keys[0].size_bits if keys else 0,
                deadline_ms=0,
                keys=keys,
            )
            return Placed(
                stream=stream, peer_node=self.topology.peer_of_stream(stream) or "", hold=hold
            )
        raise self._unknown_keys(slave_sae_id, master_sae_id, len(key_ids))

    # -- after the request wrote its keys ------------------------------------------------------

    async def find_hold(self, *, hold_id: str) -> tuple[str, Hold] | None:
        """A request's hold wherever it is (its stream is not known after a restart)."""
        for stream in await self.store.streams():
            hold = await self.store.get_hold(stream=stream, hold_id=hold_id)
            if hold is not None:
                return stream, hold
        return None

    async def commit(self, *, stream: str, hold_id: str, notice: Notice | None = None) -> None:
        """The hold's keys were delivered; ``notice`` (a hand-over, a relay's commit) goes in the
        same step, and leaves at once rather than at the outbox's next sweep: the slave side
        cannot have the keys before it arrives."""
        await self.store.commit_hold(stream=stream, hold_id=hold_id, notice=notice)
        if notice is not None:
            self.kick()

    async def cancel(self, *, stream: str, hold_id: str) -> None:
        """The hold's keys were certainly not delivered: back where they came from."""
        await self.store.cancel_hold(stream=stream, hold_id=hold_id)
