"""Master pools: keys of a (master SAE, slave SAE) pair agreed with the slave SAE's node ahead
of demand, so that serving a request takes one atomic Redis step and no peer round trip.

``Pools.take`` (ETSI 014 enc_keys) and ``Pools.hold`` (a KeyRequest) serve from the pool of
``PoolKey`` (stream, peer node, the pair, key size). When a pool runs low (below half its target)
a background refill agrees one more block with the peer (``KrpPeers.reserve``): its size follows
the pool's recent demand (``pool_horizon_seconds`` of it, at least ``pool_min_keys``, at most
``pool_block_keys`` per block), and a pool never holds more than ``pool_share`` of the stream's
capacity, unless one request alone asks for more. A request that finds the pool short starts a
refill and waits for it, up to its deadline. ``give_back_idle`` returns the keys of pools nobody
used for ``pool_idle_seconds`` (through the peer, as every give-back).

What the peer says decides what happens to a block: held -> servable; chunks ``never`` stored
there -> dropped here at once, other chunks tried; ``not_yet`` -> the same block is tried again
for a moment, then other chunks; ``taken`` (a conflict) -> dropped, and the waiting requests fail
now with the reason; no answer -> the block stays pending and the sweeper gives it back through
the peer after ``agree_seconds`` (it may hold it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from controllers import metrics
from controllers.delivery.api import (
    DeliveryError,
    InsufficientKeys,
    KeyConflict,
    PeerUnreachable,
    SlaveBacklog,
    UnknownSae,
)
from controllers.delivery.messages import BlockKeyRef, ChunkRef, ReserveBlock
from controllers.delivery.peer import KrpPeers, KrpRefused, KrpUnreachable
from controllers.delivery.settings import DeliverySettings
from controllers.keystore import (
    MAX_BLOCK_CHUNKS,
    MAX_BLOCK_KEYS,
    Block,
    Hold,
    InsufficientKeysError,
    Key,
    KeyStore,
    StreamCounts,
    UnknownBlockError,
)

log = logging.getLogger("controllers.delivery.pools")

T = TypeVar("T")

# How long the demand estimate looks back.
DEMAND_WINDOW_SECONDS = 5.0
# A block the peer has not stored all of yet is tried again this often, for this long.
NOT_YET_RETRY_SECONDS = 0.05
NOT_YET_PATIENCE_SECONDS = 2.0


def pair_owner(master_sae_id: str, slave_sae_id: str) -> str:
    """The store's owner tag of keys for a (master, slave) SAE pair, alike on both nodes."""
    return f"{master_sae_id}/{slave_sae_id}"


@dataclass(frozen=True, slots=True)
class PoolKey:
    stream: str
    peer: str
    master_sae_id: str
    slave_sae_id: str
    size_bits: int
    # The nodes from here to the slave SAE's when it is not on ``peer`` (the key relay's path,
    # from routing); the pool is the same whichever path its keys then take.
    path: tuple[str, ...] = field(default=(), compare=False)

    @property
    def owner(self) -> str:
        return pair_owner(self.master_sae_id, self.slave_sae_id)


@dataclass
class _Pool:
    key: PoolKey
    taken: deque[tuple[float, int]] = field(default_factory=deque)
    last_used: float = 0.0
    target: int = 0  # keys the refill aims for
    want: int = 0  # keys a waiting request needs at once
    waiting: int = 0
    refill: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    problem: DeliveryError | None = None  # why the last refill agreed nothing
    # A block the peer may hold (its answer was lost): offered again before any new one.
    unsure: Block | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def demand_per_second(self, now: float) -> float:
        while self.taken and self.taken[0][0] < now - DEMAND_WINDOW_SECONDS:
            self.taken.popleft()
        return sum(n for _, n in self.taken) / DEMAND_WINDOW_SECONDS


class Pools:
    def __init__(
        self,
        *,
        node_id: str,
        store: KeyStore,
        peers: KrpPeers,
        settings: DeliverySettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_id = node_id
        self._store = store
        self._peers = peers
        self._settings = settings
        self._clock = clock
        self._pools: dict[PoolKey, _Pool] = {}
        self._counts: dict[str, StreamCounts] = {}

    # -- serving -------------------------------------------------------------------------------

    async def take(self, key: PoolKey, *, count: int, deadline: float) -> tuple[Key, ...]:
        """``count`` keys from the pool, deleted (delivered); waits for a refill up to
        ``deadline`` (this clock), then raises why there were none."""

        async def take() -> tuple[tuple[Key, ...], int]:
            served = await self._store.take(
                stream=key.stream, owner=key.owner, size_bits=key.size_bits, count=count
            )
            return served.keys, served.pool_left

        return await self._serve(key, count, deadline, take)

    async def hold(self, key: PoolKey, *, count: int, hold_id: str, deadline: float) -> Hold:
        """``count`` keys of the pool moved into the hold ``hold_id`` (idempotent), as
        ``take`` waits for them."""

        async def hold() -> tuple[Hold, int]:
            held = await self._store.hold(
                stream=key.stream,
                hold_id=hold_id,
                owner=key.owner,
                size_bits=key.size_bits,
                count=count,
                hold_ms=int(self._settings.hold_seconds * 1000),
            )
            return held, held.pool_left

        return await self._serve(key, count, deadline, hold)

    async def _serve(
        self,
        key: PoolKey,
        count: int,
        deadline: float,
        serve: Callable[[], Awaitable[tuple[T, int]]],
    ) -> T:
        pool = self._pool(key)
        pool.waiting += 1
        try:
            while True:
                changed = pool.changed
                try:
                    result, left = await serve()
                except InsufficientKeysError:
                    pass
                else:
                    self._used(pool, count, left)
                    return result
                problem = pool.problem
                if problem is not None and (
                    isinstance(problem, KeyConflict) or not problem.retryable
                ):
                    pool.problem = None
                    raise problem
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise problem or InsufficientKeys(
                        f"fewer than {count} keys of {key.size_bits} bits for SAE"
                        f" {key.master_sae_id} and SAE {key.slave_sae_id} towards node"
                        f" {key.peer}"
                    )
                self._start_refill(pool, count)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 1.0)):  # not wait_for: see upkeep
                        await changed.wait()
        finally:
            pool.waiting -= 1
            if not pool.waiting:
                # ``want`` is what waiting requests need at once; with none left (served, or
                # gave up), the next refill is a background top-up, not a block of that size.
                pool.want = 0

    def used(self, key: PoolKey, *, count: int, left: int) -> None:
        """``count`` keys of the pool were served by a caller's own store step (the key relay
        holds its pads in one step with its other writes), leaving ``left`` keys in the pool
        (-1: unknown): counted as demand and use, as if served here."""
        self._used(self._pool(key), count, left)

    def _used(self, pool: _Pool, count: int, left: int) -> None:
        now = self._clock()
        pool.last_used = now
        pool.taken.append((now, count))
        if 0 <= left < max(1, pool.target // 2):
            self._start_refill(pool, 0)

    def _pool(self, key: PoolKey) -> _Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(
                key=key, last_used=self._clock(), target=self._settings.pool_min_keys
            )
        return pool

    # -- refilling -----------------------------------------------------------------------------

    def _start_refill(self, pool: _Pool, want: int) -> None:
        pool.want = max(pool.want, want)
        if pool.refill is None or pool.refill.done():
            pool.refill = asyncio.create_task(self._refill(pool), name=f"refill {pool.key}")

    async def _refill(self, pool: _Pool) -> None:
        key = pool.key
        try:
            if pool.unsure is not None:
                block, pool.unsure = pool.unsure, None
                if not await self._agree(pool, block):
                    return
                pool.notify()
            while True:
                counts = await self._store.counts(stream=key.stream)
                self._counts[key.stream] = counts
                per_key = math.ceil(key.size_bits / (8 * counts.chunk_bytes))
                level = await self._store.pool_level(
                    stream=key.stream, owner=key.owner, size_bits=key.size_bits
                )
                if level.keys >= pool.want:
                    pool.want = 0
                count = self._block_size(pool, counts, per_key, level.keys, level.chunks)
                if count <= 0:
                    return
                if counts.available < count * per_key:
                    count = counts.available // per_key
                    if count < max(1, pool.want - level.keys):
                        # The stream itself is short: wait while someone waits for keys.
                        if not pool.waiting:
                            return
                        pool.notify()
                        await asyncio.sleep(0.1)
                        continue
                block = await self._store.reserve_block(
                    stream=key.stream,
                    block_id=str(uuid.uuid4()),
                    owner=key.owner,
                    size_bits=key.size_bits,
                    count=count,
                    # The two directions of a link draw from opposite ends of the buffer, so
                    # the two nodes' blocks meet only when it is nearly empty.
                    from_newest=self._node_id > key.peer,
                    lease_ms=self._settings.lease_ms,
                    pending_ms=int(self._settings.agree_seconds * 1000),
                )
                agreed = await self._agree(pool, block)
                pool.notify()
                if not agreed:
                    return
                pool.problem = None
        except DeliveryError as exc:
            pool.problem = exc
        except Exception:
            log.exception("refilling the pool of %s failed", key.owner)
            pool.problem = PeerUnreachable("refilling the key pool failed; see the node's log")
        finally:
            pool.notify()

    def _block_size(
        self, pool: _Pool, counts: StreamCounts, per_key: int, level_keys: int, level_chunks: int
    ) -> int:
        """How many keys the next block should have (0: none needed)."""
        settings = self._settings
        want = pool.want
        demand = pool.demand_per_second(self._clock()) * settings.pool_horizon_seconds
        # One request alone may need more than the share; then the pool may hold that much.
        cap_keys = max(int(settings.pool_share * counts.capacity) // per_key, want)
        pool.target = min(max(settings.pool_min_keys, math.ceil(demand)), cap_keys)
        goal = max(pool.target, want)
        if level_keys >= goal:
            return 0
        room = max(cap_keys * per_key - level_chunks, 0) // per_key
        count = min(goal - level_keys, room, MAX_BLOCK_KEYS, MAX_BLOCK_CHUNKS // per_key)
        if want <= level_keys:
            count = min(count, settings.pool_block_keys)  # a background top-up
        return max(count, 0)

    async def _agree(self, pool: _Pool, block: Block) -> bool:
        """Have the peer hold the block; True once it is servable here."""
        key = pool.key
        message = ReserveBlock(
            block_id=block.block_id,
            stream=key.stream,
            master_sae=key.master_sae_id,
            slave_sae=key.slave_sae_id,
            size_bits=key.size_bits,
            lease_ms=self._settings.lease_ms,
            keys=tuple(
                BlockKeyRef(
                    key_id=k.key_id,
                    chunks=tuple(
                        ChunkRef(id=c.chunk_id, index=c.index, epoch=c.epoch) for c in k.chunks
                    ),
                )
                for k in block.keys
            ),
        )
        patience = self._clock() + NOT_YET_PATIENCE_SECONDS
        delay = NOT_YET_RETRY_SECONDS
        while True:
            try:
                await self._peers.reserve(key.peer, message)
            except KrpUnreachable as exc:
                pool.problem = PeerUnreachable(exc.message)
                if exc.maybe_delivered:
                    # It may hold the block: offer it again next time; if that takes too long,
                    # the sweeper gives it back through the peer.
                    pool.unsure = block
                else:
                    await self._store.refuse_block(stream=key.stream, block_id=block.block_id)
                return False
            except KrpRefused as exc:
                refusal = exc.refusal
                if refusal.reason == "Refused":
                    doomed = [*refusal.never, *refusal.taken]
                    if not doomed and self._clock() < patience:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.5)
                        continue
                    await self._store.refuse_block(
                        stream=key.stream, block_id=block.block_id, drop_chunk_ids=doomed
                    )
                    if refusal.taken:
                        pool.problem = KeyConflict(
                            f"node {key.peer} holds {len(refusal.taken)} of the chunks chosen"
                            f" for SAE {key.master_sae_id} and SAE {key.slave_sae_id} for"
                            " another block (both nodes chose them at once); they were"
                            " dropped, a new request uses others"
                        )
                        return False
                    if refusal.never:
                        log.info(
                            "stream %s: node %s never stored %d chunks this node holds;"
                            " dropped them",
                            key.stream,
                            key.peer,
                            len(refusal.never),
                        )
                        return True  # try other chunks at once
                    pool.problem = InsufficientKeys(
                        f"node {key.peer} has not stored the keys node {self._node_id} has yet"
                        f" (its ingest lags behind)"
                    )
                    return False
                await self._store.refuse_block(stream=key.stream, block_id=block.block_id)
                pool.problem = _refused(key, exc)
                return False
            try:
                active = await self._store.activate_block(
                    stream=key.stream,
                    block_id=block.block_id,
                    serve_ms=int(self._settings.serve_seconds * 1000),
                )
            except UnknownBlockError:
                return False  # given back meanwhile: the agreement took too long
            if active:
                metrics.block_agreed(
                    peer=key.peer,
                    master_sae=key.master_sae_id,
                    slave_sae=key.slave_sae_id,
                    keys=len(block.keys),
                )
            return active

    # -- upkeep --------------------------------------------------------------------------------

    async def give_back_idle(self) -> int:
        """Give back the keys of pools nobody used for ``pool_idle_seconds``; how many keys."""
        now = self._clock()
        given = 0
        for key, pool in list(self._pools.items()):
            busy = pool.waiting or (pool.refill is not None and not pool.refill.done())
            if busy or now - pool.last_used < self._settings.pool_idle_seconds:
                continue
            del self._pools[key]
            keys = await self._store.release_pool(
                stream=key.stream, owner=key.owner, size_bits=key.size_bits
            )
            metrics.pool_given_back(
                peer=key.peer, master_sae=key.master_sae_id, slave_sae=key.slave_sae_id, keys=keys
            )
            given += keys
        return given

    async def levels(self) -> dict[tuple[str, str, str], int]:
        """Keys servable now per (peer node, master SAE, slave SAE) pool of this node."""
        found: dict[tuple[str, str, str], int] = {}
        for key in list(self._pools):
            level = await self._store.pool_level(
                stream=key.stream, owner=key.owner, size_bits=key.size_bits
            )
            labels = (key.peer, key.master_sae_id, key.slave_sae_id)
            found[labels] = found.get(labels, 0) + level.keys
        return found

    def capacity_of(self, stream: str) -> StreamCounts | None:
        """The stream's counts as the pools last read them."""
        return self._counts.get(stream)

    async def aclose(self) -> None:
        tasks = [p.refill for p in self._pools.values() if p.refill is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _refused(key: PoolKey, exc: KrpRefused) -> DeliveryError:
    reason = exc.refusal.reason
    if reason == "UnknownSae":
        # The directory had it on that node: it may be re-registering there.
        return UnknownSae(
            f"SAE {key.slave_sae_id!r} is not registered with node {key.peer}", retryable=True
        )
    if reason == "HeldBound":
        return SlaveBacklog(
            f"node {key.peer} holds as many keys for slave SAEs as it may (SAE"
            f" {key.slave_sae_id} and others have not fetched theirs); they expire unless"
            " fetched"
        )
    return PeerUnreachable(f"node {key.peer} refused a key block: {exc.message}")
