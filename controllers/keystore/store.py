"""``KeyStore``: the typed, async face of the key store over one Redis client.

Called by the QKDM (``configure_stream``, ``add_run``, the ingest cursor, ``counts``), key
delivery (``controllers.delivery``: pool blocks, serving, holds, the slave side, releases, the
outbox and the sweeper) and the KeyStream reconciler (``counts``). Each method is one Lua script
round trip (a long search may take a few); ``batch`` sends several idempotent steps in one
MULTI/EXEC (one round trip, one fsync). See ``layout.py`` for the data and ``common.lua`` for
the model of blocks.

The model in short. The *buffer* is a stream's available chunks; capacity bounds it, and only
it, so nothing set aside ever stops ingest. A master node agrees keys for a (master SAE, slave
SAE) pair with the peer in *blocks*: ``reserve_block`` here (pending), ``accept_block`` on the
peer (which holds its copies for the pair until a lease ends), ``activate_block`` here once the
peer said yes (the keys are then servable until the block's serve deadline). ``serve`` takes
keys from the pool at once ('take', e.g. ETSI 014) or into a request's hold ('hold', then
``commit_hold`` once written, which also queues the hand-over to the peer in the same step).
The slave side ``claim``s its keys by ID. Unserved keys go back only through the peer: the
block leaves its pool, the peer ``give_back``s its copies, and ``finish_release`` returns ours
(or drops those the peer says are gone). ``sweep`` acts on every deadline. Messages to the peer
sit in an outbox until acknowledged.

Exactly once: serving and claiming delete (or move) keys in one script. If the connection drops
after a script ran, redis-py's retry re-sends it; a 'take' or 'consume' then fails or takes
other keys, so such keys are lost, never served twice; holds are idempotent per hold ID.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from controllers.keystore.checks import (
    UUID,
    UUIDS,
    check_key_ids,
    check_size,
    check_token,
    joined_uuids_ok,
)
from controllers.keystore.codes import Status
from controllers.keystore.errors import (
    BlockConflictError,
    BlockRefusedError,
    ChunkSizeChangeError,
    HeldBoundError,
    InsufficientKeysError,
    InvalidChunkError,
    KeyIdMismatchError,
    KeyStoreCorruptError,
    UnknownBlockError,
    UnknownKeysError,
    UnknownStreamError,
)
from controllers.keystore.keyids import COMPOSED_KEY_NAMESPACE
from controllers.keystore.layout import STREAMS, check_stream_name, stream_keys
from controllers.keystore.model import (
    AddResult,
    Block,
    BlockChunk,
    BlockKey,
    Chunk,
    GiveBack,
    Hold,
    Key,
    Notice,
    OutboxMessage,
    PoolLevel,
    RelayView,
    Served,
    StreamCounts,
    SweepResult,
)
from controllers.keystore.scripts import Scripts

# Chunks per script call: big enough to amortise the round trip, small enough that one call
# does not hold Redis (single-threaded) for long. add_run splits larger batches.
MAX_BATCH = 10_000
# accept_block and drop_peer move at most about this many chunks per script call while they
# look for chunks in the incoming list, so one call never holds Redis for long.
FLUSH_LIMIT = 50_000
# Bounds of one block (keys, and chunks over all its keys): a block is agreed in one message.
MAX_BLOCK_KEYS = 4096
MAX_BLOCK_CHUNKS = 8192


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_text(v) for v in values)


def _keys(entries: Iterable[Any]) -> tuple[Key, ...]:
    out = []
    for entry in entries:
        size_bits = int(entry[1])
        out.append(
            Key(
                key_id=_text(entry[0]),
                size_bits=size_bits,
                material=b"".join(entry[2:])[: size_bits // 8],
            )
        )
    return tuple(out)


def _first_not_uuid(joined: bytes) -> int:
    """The index of the first 36-byte ID in ``joined`` that is not a lowercase UUID."""
    for i in range(0, len(joined), 36):
        if not UUID.match(joined[i : i + 36].decode("ascii", "replace")):
            return i // 36
    return len(joined) // 36


def _first_repeated(joined: bytes) -> int:
    """The index of the first 36-byte ID in ``joined`` that appears earlier in it."""
    seen: set[bytes] = set()
    for i in range(0, len(joined), 36):
        one = joined[i : i + 36]
        if one in seen:
            return i // 36
        seen.add(one)
    return len(joined) // 36


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Step(Generic[T]):
    """One script call: what to send, and how to read its reply (or raise its error)."""

    script: AsyncScript
    stream: str
    args: list[Any]
    read: Callable[[list[Any]], T]


class Outcome(Generic[T]):
    """The result of one step of a ``Batch``, once the batch has run."""

    def __init__(self, step: _Step[T]) -> None:
        self._step = step
        self._reply: list[Any] | None = None

    def result(self) -> T:
        """What the step's own ``KeyStore`` method would have returned, or its error."""
        if self._reply is None:
            raise RuntimeError("the batch has not run yet")
        return self._step.read(self._reply)


class Batch:
    """Key-store steps sent together (``KeyStore.batch``): one round trip, in one MULTI/EXEC,
    so Redis runs them in order with nothing between them and writes (fsyncs) them once. Each
    step succeeds or fails on its own, as its ``KeyStore`` method would (``Outcome.result``):
    a caller undoes the steps that ran when another failed. Only idempotent steps are offered
    (holds and claims per hold ID, opening a relay, commits), because a Redis that lost its
    script cache (a restart) has the whole batch sent again. Used by the key relay, whose hops
    would otherwise pay one fsync'd write per step."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._outcomes: list[Outcome[Any]] = []

    def _add(self, step: _Step[T]) -> Outcome[T]:
        outcome = Outcome(step)
        self._outcomes.append(outcome)
        return outcome

    def hold(
        self, *, stream: str, hold_id: str, owner: str, size_bits: int, count: int, hold_ms: int
    ) -> Outcome[Hold]:
        """As ``KeyStore.hold``."""
        return self._add(
            self._store._hold_step(
                stream=stream,
                hold_id=hold_id,
                owner=owner,
                size_bits=size_bits,
                count=count,
                hold_ms=hold_ms,
            )
        )

    def claim(
        self, *, stream: str, owner: str, key_ids: Sequence[str], hold_id: str, hold_ms: int
    ) -> Outcome[tuple[Key, ...]]:
        """As ``KeyStore.claim`` into a hold."""
        return self._add(
            self._store._claim_step(
                stream=stream, owner=owner, key_ids=key_ids, hold_id=hold_id, hold_ms=hold_ms
            )
        )

    def open_relayed(
        self,
        *,
        stream: str,
        hold_id: str,
        owner: str,
        tag: str,
        consumed: Sequence[str],
        relayed: Sequence[tuple[str, Key]],
    ) -> Outcome[str | None]:
        """As ``KeyStore.open_relayed``."""
        return self._add(
            self._store._open_step(
                stream=stream,
                hold_id=hold_id,
                owner=owner,
                tag=tag,
                consumed=consumed,
                relayed=relayed,
            )
        )

    def commit_hold(
        self, *, stream: str, hold_id: str, notice: Notice | None = None
    ) -> Outcome[int]:
        """As ``KeyStore.commit_hold``."""
        return self._add(self._store._commit_step(stream=stream, hold_id=hold_id, notice=notice))

    async def run(self) -> None:
        """Send every step; afterwards each ``Outcome`` has its result."""
        steps = [o._step for o in self._outcomes]
        replies = await self._store._run_steps(steps)
        for outcome, reply in zip(self._outcomes, replies, strict=True):
            outcome._reply = reply


def _check_block_args(stream: str, block_id: str, owner: str, size_bits: int) -> None:
    check_stream_name(stream)
    check_token("block ID", block_id)
    check_token("owner", owner)
    check_size(size_bits)


def _check_positive(what: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{what} {value} must be positive")


class KeyStore:
    """The key store of one node. Create with ``KeyStore(redis=client)`` (the caller closes the
    client) or ``KeyStore.from_url(url)`` (``aclose`` closes it); the client must not decode
    responses, key material is bytes."""

    def __init__(self, *, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts.register(redis)
        self._owns_client = False
        self._registered: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, max_connections: int = 32) -> KeyStore:
        """A store with its own client. Callers beyond ``max_connections`` wait for a free
        connection (redis-py's default pool fails them instead); Redis runs scripts one at a
        time, so more connections would not add throughput."""
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=30,
            # Reconnect across a Redis restart; every script is safe to re-send (see above).
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        )
        client = Redis.from_pool(pool)
        store = cls(redis=client)
        store._owns_client = True
        return store

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def __aenter__(self) -> KeyStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, script: Any, stream: str, args: Sequence[Any] = ()) -> list[Any]:
        reply: list[Any] = await script(keys=stream_keys(stream), args=list(args))
        return reply

    async def _one(self, step: _Step[T]) -> T:
        return step.read(await self._run(step.script, step.stream, step.args))

    def batch(self) -> Batch:
        """Steps to send together (``Batch``)."""
        return Batch(self)

    async def _run_steps(self, steps: Sequence[_Step[Any]]) -> list[list[Any]]:
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=True)
            for step in steps:
                keys = stream_keys(step.stream)
                pipe.evalsha(step.script.sha, len(keys), *keys, *step.args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in replies):
                break
            # Redis lost its scripts (a restart): load them and send the batch again (every
            # step a batch offers is idempotent).
            for script in {id(s.script): s.script for s in steps}.values():
                script.sha = await self._redis.script_load(script.script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # -- streams -------------------------------------------------------------------------------

    async def configure_stream(self, *, stream: str, capacity: int, chunk_bytes: int) -> None:
        """Create ``stream`` or set its capacity (in chunks); its chunk size is fixed for life."""
        check_stream_name(stream)
        if capacity < 0:
            raise ValueError(f"capacity {capacity} of key stream {stream!r} must not be negative")
        if not 1 <= chunk_bytes <= 65536:
            raise ValueError(f"chunk size {chunk_bytes} bytes must be between 1 and 65536")
        reply = await self._run(self._scripts.configure, stream, [capacity, chunk_bytes])
        if reply[0] == Status.E_CHUNK_SIZE_CHANGE:
            raise ChunkSizeChangeError(stream=stream, current=reply[1], requested=chunk_bytes)
        if stream not in self._registered:
            await self._redis.sadd(STREAMS, stream)
            self._registered.add(stream)

    async def streams(self) -> list[str]:
        """Every stream this store holds, sorted."""
        members = await self._redis.smembers(STREAMS)
        return sorted(_text(m) for m in members)

    async def drop_stream(self, *, stream: str) -> bool:
        """Delete ``stream`` with all its keys and blocks; False if it did not exist."""
        reply = await self._run(self._scripts.drop, stream)
        await self._redis.srem(STREAMS, stream)
        self._registered.discard(stream)
        return bool(reply[1])

    async def counts(self, *, stream: str) -> StreamCounts:
        reply = await self._run(self._scripts.counts, stream)
        self._raise_for(reply, stream=stream)
        values = [int(v) for v in reply[1:12]]
        return StreamCounts(
            capacity=values[0],
            chunk_bytes=values[1],
            added=values[2],
            available=values[3],
            consumed=values[4],
            dropped=values[5],
            pooled=values[6],
            mirrored=values[7],
            holding=values[8],
            cursor=values[9],
            epoch=values[10],
        )

    # -- ingest (QKDM) -------------------------------------------------------------------------

    async def add_chunks(
        self, *, stream: str, chunks: Sequence[Chunk], first_index: int | None = None
    ) -> AddResult:
        """Add chunks in order. Idempotent per chunk ID: a chunk already held counts as a
        duplicate; the same ID twice in one batch is a caller bug (``InvalidChunkError``).

        With ``first_index`` (the device index of ``chunks[0]``; the batch is consecutive
        indices), chunks whose index is below the ingest cursor (stored before, maybe delivered
        since) or that the peer dropped count as duplicates too and are not stored, and the
        cursor becomes ``first_index + stored`` in the same atomic step; indices a batch skips
        over are never stored here, and the peer is told to drop them. When the buffer reaches
        capacity the rest of the batch is refused (``AddResult.refused``), none of it kept.
        ``add_run`` does the same for chunks given as two buffers (the QKDM's form)."""
        check_stream_name(stream)
        for i, chunk in enumerate(chunks):
            if not UUID.match(chunk.chunk_id):
                raise InvalidChunkError(
                    stream=stream, index=i, reason="the chunk ID is not a lowercase UUID"
                )
        sizes = {len(c.material) for c in chunks}
        if len(sizes) > 1:
            # Chunks of a stream all have its one size: name the first that has not.
            size = (await self.counts(stream=stream)).chunk_bytes
            bad = next(i for i, c in enumerate(chunks) if len(c.material) != size)
            raise InvalidChunkError(
                stream=stream, index=bad, reason=f"the stream takes chunks of exactly {size} bytes"
            )
        return await self.add_run(
            stream=stream,
            chunk_ids="".join(c.chunk_id for c in chunks).encode(),
            material=b"".join(c.material for c in chunks),
            first_index=first_index,
        )

    async def add_run(
        self,
        *,
        stream: str,
        chunk_ids: bytes,
        material: bytes,
        first_index: int | None = None,
    ) -> AddResult:
        """``add_chunks`` for chunks of one size given as two buffers: their IDs, 36 ASCII
        bytes each, back to back (``controllers.qkdm.ids.joined_chunk_ids``), and their
        material concatenated (chunk ``i`` is the ``i``-th equal slice). The QKDM's form: it
        has the device's buffer and names a run at once, so no chunk is cut out and joined
        again, and the checks run over whole buffers."""
        check_stream_name(stream)
        if first_index is not None and first_index < 0:
            raise ValueError(f"first_index {first_index} must not be negative")
        count = len(chunk_ids) // 36
        if not joined_uuids_ok(chunk_ids):
            raise InvalidChunkError(
                stream=stream,
                index=_first_not_uuid(chunk_ids),
                reason="the chunk ID is not a lowercase UUID",
            )
        if count == 0:
            return AddResult(accepted=0, duplicates=0, refused=0)
        size, rest = divmod(len(material), count)
        if rest or not size:
            raise InvalidChunkError(
                stream=stream,
                index=0,
                reason=f"{len(material)} bytes of material do not split into {count} chunks",
            )
        script_keys = stream_keys(stream)
        accepted = duplicates = 0
        free = 0
        for start in range(0, count, MAX_BATCH):
            n = min(MAX_BATCH, count - start)
            ids = chunk_ids[36 * start : 36 * (start + n)]
            if len({ids[i : i + 36] for i in range(0, 36 * n, 36)}) != n:
                raise InvalidChunkError(
                    stream=stream,
                    index=start + _first_repeated(ids),
                    reason="its ID appears earlier in the batch",
                )
            cursor = "" if first_index is None else first_index + start
            part = material[start * size : (start + n) * size]
            reply = await self._scripts.add(keys=script_keys, args=[ids, part, cursor])
            if reply[0] == Status.E_BAD_CHUNK:
                raise InvalidChunkError(
                    stream=stream,
                    index=start,
                    reason=f"the stream takes chunks of exactly {int(reply[1])} bytes",
                )
            self._raise_for(reply, stream=stream)
            accepted += reply[1]
            duplicates += reply[2]
            free = reply[4]
            if reply[3]:
                return AddResult(
                    accepted=accepted,
                    duplicates=duplicates,
                    refused=count - start - n + reply[3],
                    free=0,
                )
        return AddResult(accepted=accepted, duplicates=duplicates, refused=0, free=free)

    async def ingest_cursor(self, *, stream: str) -> int:
        """The next device index the stream's QKDM fetches (0 for a new stream)."""
        return (await self._cursor(stream, "", ""))[0]

    async def set_ingest_cursor(self, *, stream: str, cursor: int) -> None:
        """Move the ingest cursor, e.g. past device indices that expired unread; indices passed
        over are never stored here, and the peer is told to drop them (outbox 'drop')."""
        if cursor < 0:
            raise ValueError(f"ingest cursor {cursor} must not be negative")
        await self._cursor(stream, cursor, "")

    async def ingest_key_stream(self, *, stream: str) -> str | None:
        """The device key stream (KSID) the ingest cursor counts in; None before the QKDM
        named one (a stream whose cursor predates KSIDs in the store, or a new one)."""
        return (await self._cursor(stream, "", ""))[1] or None

    async def start_key_stream(self, *, stream: str, ksid: str, epoch: int) -> None:
        """The QKDM opened a new device key stream, ``ksid``, epoch ``epoch`` of the
        KeyStream's sequence (``docs/key-streams.md``): the cursor counts from 0 in it now (one
        atomic step). Keys already stored stay; their IDs name the old KSID. The indices of the
        old one from the cursor on are never stored here, and the peer is told to drop them
        too. Starting the KSID the cursor counts in already changes nothing."""
        if not ksid:
            raise ValueError("a key stream ID must not be empty")
        if epoch < 0:
            raise ValueError(f"key stream epoch {epoch} must not be negative")
        await self._cursor(stream, 0, ksid, epoch)

    async def _cursor(
        self, stream: str, value: int | str, ksid: str, epoch: int | str = ""
    ) -> tuple[int, str]:
        reply = await self._run(self._scripts.cursor, stream, [value, ksid, epoch])
        self._raise_for(reply, stream=stream)
        return int(reply[1]), _text(reply[2])

    # -- master pool blocks --------------------------------------------------------------------

    async def reserve_block(
        self,
        *,
        stream: str,
        block_id: str,
        owner: str,
        size_bits: int,
        count: int,
        from_newest: bool,
        lease_ms: int,
        pending_ms: int,
    ) -> Block:
        """Take ``count`` keys of ``size_bits`` from the oldest (or with ``from_newest`` the
        newest) available chunks into the pending block ``block_id`` of ``owner``, all or
        nothing (``InsufficientKeysError``). A key longer than a chunk is made of consecutive
        chunks in stream order, so its ID is the one the peer's ``accept_block`` derives;
        ``size_bits`` need not fill the last one (the rest is discarded when served). Retrying
        with the same block ID returns the same block.

        The two directions of a link draw from opposite ends (the callers pass
        ``from_newest = local node ID > peer node ID``), so the two nodes' blocks meet only when
        the buffer is nearly empty. ``lease_ms`` is how long the peer will hold its copies;
        the block is given back if it is not activated within ``pending_ms``."""
        _check_block_args(stream, block_id, owner, size_bits)
        _check_positive("key count", count)
        _check_positive("lease", lease_ms)
        _check_positive("pending time", pending_ms)
        reply = await self._run(
            self._scripts.reserve_block,
            stream,
            [
                block_id,
                owner,
                size_bits,
                count,
                COMPOSED_KEY_NAMESPACE.bytes,
                "newest" if from_newest else "oldest",
                lease_ms,
                pending_ms,
            ],
        )
        if reply[0] == Status.E_INSUFFICIENT:
            raise InsufficientKeysError(stream=stream, needed=reply[1], available=reply[2])
        if reply[0] == Status.E_CONFLICT:
            raise BlockConflictError(stream=stream, block_id=block_id)
        self._raise_for(reply, stream=stream)
        keys = []
        for entry in reply[2:]:
            values = list(entry)
            keys.append(
                BlockKey(
                    key_id=_text(values[0]),
                    chunks=tuple(
                        BlockChunk(
                            chunk_id=_text(values[i]),
                            index=int(values[i + 1]),
                            epoch=int(values[i + 2]),
                        )
                        for i in range(1, len(values), 3)
                    ),
                )
            )
        return Block(
            block_id=block_id,
            owner=owner,
            size_bits=size_bits,
            state=_text(reply[1]),
            keys=tuple(keys),
        )

    async def activate_block(self, *, stream: str, block_id: str, serve_ms: int) -> bool:
        """The peer holds the block: serve it until its reservation time + ``serve_ms``. False
        if that time has passed already (the block is then given back at once);
        ``UnknownBlockError`` if it is not pending (the sweeper gave it back meanwhile)."""
        check_stream_name(stream)
        check_token("block ID", block_id)
        _check_positive("serve time", serve_ms)
        reply = await self._run(self._scripts.activate, stream, [block_id, serve_ms])
        if reply[0] == Status.E_UNKNOWN_BLOCK:
            raise UnknownBlockError(stream=stream, block_id=block_id)
        self._raise_for(reply, stream=stream)
        return _text(reply[1]) == "active"

    async def refuse_block(
        self, *, stream: str, block_id: str, drop_chunk_ids: Sequence[str] = ()
    ) -> tuple[int, int]:
        """The peer holds nothing of the pending block: its chunks go back to the buffer, except
        ``drop_chunk_ids`` (the peer never will have them, or holds them elsewhere), which are
        dropped. Returns (chunks returned, chunks dropped); a block not pending is left alone."""
        check_stream_name(stream)
        check_token("block ID", block_id)
        reply = await self._run(self._scripts.refuse, stream, [block_id, *drop_chunk_ids])
        self._raise_for(reply, stream=stream)
        return int(reply[1]), int(reply[2])

    async def pool_level(self, *, stream: str, owner: str, size_bits: int) -> PoolLevel:
        """How many keys the active blocks of the pool (owner, size) can serve now."""
        reply = await self._pool("level", stream, owner, size_bits)
        return PoolLevel(keys=int(reply[1]), chunks=int(reply[2]))

    async def release_pool(self, *, stream: str, owner: str, size_bits: int) -> int:
        """Give every active block of the pool back (an idle pool): the keys leave the pool at
        once and return to the buffer once the peer has returned its copies. Returns how many
        keys left the pool."""
        reply = await self._pool("release", stream, owner, size_bits)
        return int(reply[1])

    async def _pool(self, mode: str, stream: str, owner: str, size_bits: int) -> list[Any]:
        check_stream_name(stream)
        check_token("owner", owner)
        check_size(size_bits)
        reply = await self._run(self._scripts.pool, stream, [mode, owner, size_bits])
        self._raise_for(reply, stream=stream)
        return reply

    # -- serving -------------------------------------------------------------------------------

    async def take(self, *, stream: str, owner: str, size_bits: int, count: int) -> Served:
        """Take ``count`` keys from the pool (owner, size) and delete them: they are delivered.
        All or nothing (``InsufficientKeysError``, ``available`` = keys in the pool)."""
        reply = await self._serve("take", stream, owner, size_bits, count, "", 0)
        return Served(keys=_keys(reply[3:]), pool_left=int(reply[1]))

    async def hold(
        self, *, stream: str, hold_id: str, owner: str, size_bits: int, count: int, hold_ms: int
    ) -> Hold:
        """Move ``count`` keys of the pool (owner, size) into the hold ``hold_id`` for
        ``hold_ms``, and return them; idempotent per hold ID. After the keys are written
        (delivered), ``commit_hold``; if they certainly were not, ``cancel_hold``; a hold past
        its deadline is dropped, never served again."""
        return await self._one(
            self._hold_step(
                stream=stream,
                hold_id=hold_id,
                owner=owner,
                size_bits=size_bits,
                count=count,
                hold_ms=hold_ms,
            )
        )

    def _hold_step(
        self, *, stream: str, hold_id: str, owner: str, size_bits: int, count: int, hold_ms: int
    ) -> _Step[Hold]:
        check_token("hold ID", hold_id)
        _check_positive("hold time", hold_ms)
        step = self._serve_step("hold", stream, owner, size_bits, count, hold_id, hold_ms)

        def read(reply: list[Any]) -> Hold:
            reply = step.read(reply)
            return Hold(
                hold_id=hold_id,
                owner=owner,
                size_bits=size_bits,
                deadline_ms=int(reply[2]),
                keys=_keys(reply[3:]),
                pool_left=int(reply[1]),
            )

        return _Step(step.script, stream, step.args, read)

    async def _serve(
        self,
        mode: str,
        stream: str,
        owner: str,
        size_bits: int,
        count: int,
        hold_id: str,
        hold_ms: int,
    ) -> list[Any]:
        return await self._one(
            self._serve_step(mode, stream, owner, size_bits, count, hold_id, hold_ms)
        )

    def _serve_step(
        self,
        mode: str,
        stream: str,
        owner: str,
        size_bits: int,
        count: int,
        hold_id: str,
        hold_ms: int,
    ) -> _Step[list[Any]]:
        check_stream_name(stream)
        check_token("owner", owner)
        check_size(size_bits)
        _check_positive("key count", count)

        def read(reply: list[Any]) -> list[Any]:
            if reply[0] == Status.E_INSUFFICIENT:
                raise InsufficientKeysError(
                    stream=stream, needed=count, available=int(reply[1]), what="pooled keys"
                )
            if reply[0] == Status.E_CONFLICT:
                raise BlockConflictError(stream=stream, block_id=hold_id)
            self._raise_for(reply, stream=stream)
            return reply

        args = [mode, owner, size_bits, count, hold_id, hold_ms]
        return _Step(self._scripts.serve, stream, args, read)

    async def get_hold(self, *, stream: str, hold_id: str) -> Hold | None:
        """The hold and its keys, or None if there is none (committed, cancelled, expired)."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        reply = await self._run(self._scripts.hold, stream, [hold_id])
        if reply[0] == Status.E_UNKNOWN_BLOCK:
            return None
        self._raise_for(reply, stream=stream)
        return Hold(
            hold_id=hold_id,
            owner=_text(reply[1]),
            size_bits=int(reply[2]),
            deadline_ms=int(reply[3]),
            keys=_keys(reply[4:]),
        )

    async def commit_hold(self, *, stream: str, hold_id: str, notice: Notice | None = None) -> int:
        """The hold's keys were delivered: delete them and, in the same atomic step, queue
        ``notice`` for the peer (unless it is queued or was acknowledged). Idempotent; returns
        the keys deleted now (0 if the hold was committed before, or expired)."""
        return await self._one(self._commit_step(stream=stream, hold_id=hold_id, notice=notice))

    def _commit_step(self, *, stream: str, hold_id: str, notice: Notice | None) -> _Step[int]:
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        args: list[str | int] = [hold_id, "", "", "", 0]
        if notice is not None:
            check_token("message ID", notice.message_id)
            args[1:] = [notice.message_id, notice.kind, json.dumps(notice.payload), notice.valid_ms]

        def read(reply: list[Any]) -> int:
            self._raise_for(reply, stream=stream)
            return int(reply[1])

        return _Step(self._scripts.commit, stream, args, read)

    async def cancel_hold(self, *, stream: str, hold_id: str) -> int:
        """The hold's keys were certainly not delivered: give them back where they came from (a
        master's through the peer, a slave's to the keys held for its pair)."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        reply = await self._run(self._scripts.cancel, stream, [hold_id])
        self._raise_for(reply, stream=stream)
        return int(reply[1])

    # -- the key relay (controllers.delivery.relay) ------------------------------------------

    async def drop_hold(self, *, stream: str, hold_id: str, notice: Notice | None = None) -> int:
        """A relay was aborted after the hold's keys may have left this node: drop them (never
        served again) and, in the same step, queue ``notice`` for the peer (unless queued
        already). Idempotent; returns the keys dropped now."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        args: list[str | int] = ["drop", hold_id, "", "", "", 0]
        if notice is not None:
            check_token("message ID", notice.message_id)
            args[2:] = [notice.message_id, notice.kind, json.dumps(notice.payload), notice.valid_ms]
        reply = await self._run(self._scripts.relay, stream, args)
        self._raise_for(reply, stream=stream)
        return int(reply[1])

    async def unclaim(self, *, stream: str, hold_id: str) -> int:
        """A relay's hold of keys claimed from those held for a pair (``claim`` into a hold)
        gives them back to the pair, under a new block ID, so that ``hold_id`` names nothing
        here and a retry claims them again. Idempotent; returns the keys given back now."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        reply = await self._run(self._scripts.relay, stream, ["unclaim", hold_id])
        self._raise_for(reply, stream=stream)
        return int(reply[1])

    async def relay_aborted(self, *, stream: str, hold_id: str) -> bool:
        """Whether the relay ``hold_id`` was aborted here (``drop_hold``) within the last day."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        reply = await self._run(self._scripts.relay, stream, ["aborted", hold_id])
        self._raise_for(reply, stream=stream)
        return bool(int(reply[1]))

    async def open_relayed(
        self,
        *,
        stream: str,
        hold_id: str,
        owner: str,
        tag: str,
        consumed: Sequence[str],
        relayed: Sequence[tuple[str, Key]],
    ) -> str | None:
        """At a relay's destination: the hold's pad keys become the relayed keys (each
        ``(pad key ID, relayed key)``), its ``consumed`` keys (the tag's) are consumed, and the
        hold remembers ``tag``. None when opened now; the tag it was opened with before
        otherwise. ``UnknownKeysError`` if a pad key is not in the hold (or no hold for
        ``owner``), ``BlockConflictError`` if a relayed key ID is in use here."""
        return await self._one(
            self._open_step(
                stream=stream,
                hold_id=hold_id,
                owner=owner,
                tag=tag,
                consumed=consumed,
                relayed=relayed,
            )
        )

    def _open_step(
        self,
        *,
        stream: str,
        hold_id: str,
        owner: str,
        tag: str,
        consumed: Sequence[str],
        relayed: Sequence[tuple[str, Key]],
    ) -> _Step[str | None]:
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        check_token("owner", owner)
        check_token("tag", tag)
        args: list[str | int | bytes] = ["open", hold_id, owner, tag, len(consumed), *consumed]
        for pad_id, key in relayed:
            args.extend((pad_id, key.key_id, key.material))
        named = [*consumed, *(p for p, _ in relayed), *(k.key_id for _, k in relayed)]
        if named:  # none: a retry, asking for the tag it was opened with
            check_key_ids(named)

        def read(reply: list[Any]) -> str | None:
            if reply[0] == Status.E_UNKNOWN_BLOCK:
                raise UnknownKeysError(
                    stream=stream, owner=owner, missing=len(relayed), examples=()
                )
            if reply[0] == Status.E_UNKNOWN_KEYS:
                raise UnknownKeysError(
                    stream=stream, owner=owner, missing=int(reply[1]), examples=()
                )
            if reply[0] == Status.E_CONFLICT:
                raise BlockConflictError(stream=stream, block_id=hold_id)
            self._raise_for(reply, stream=stream)
            return None if _text(reply[1]) == "new" else _text(reply[2])

        return _Step(self._scripts.relay, stream, args, read)

    async def relay_view(
        self, *, stream: str, hold_id: str, owner: str, key_ids: Sequence[str]
    ) -> RelayView:
        """What a relay message about ``key_ids`` finds here, changing nothing (no write, so no
        fsync): whether the relay ``hold_id`` was aborted here; else its hold for ``owner``
        and the hold's keys, or the tag it was opened with; else the keys of ``key_ids``, held
        here for ``owner`` (all of them, else ``UnknownKeysError``). ``BlockConflictError``
        if ``hold_id`` names something else here."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        check_token("owner", owner)
        check_key_ids(key_ids)
        reply = await self._run(self._scripts.relay, stream, ["peek", hold_id, owner, *key_ids])
        if reply[0] == Status.E_UNKNOWN_KEYS:
            raise UnknownKeysError(stream=stream, owner=owner, missing=int(reply[1]), examples=())
        if reply[0] == Status.E_CONFLICT:
            raise BlockConflictError(stream=stream, block_id=hold_id)
        self._raise_for(reply, stream=stream)
        state = _text(reply[1])
        if state == "aborted":
            return RelayView(aborted=True, held=False, tag=None, keys=())
        if state == "opened":
            return RelayView(aborted=False, held=True, tag=_text(reply[2]), keys=())
        return RelayView(aborted=False, held=state == "held", tag=None, keys=_keys(reply[3:]))

    async def streams_holding(self, *, hold_id: str) -> list[str]:
        """The streams with a hold ``hold_id``, in one round trip (no key material read)."""
        check_token("hold ID", hold_id)
        streams = await self.streams()

        def read(reply: list[Any]) -> bool:
            return reply[0] == Status.OK and bool(int(reply[1]))

        steps = [_Step(self._scripts.relay, s, ["held", hold_id], read) for s in streams]
        replies = await self._run_steps(steps) if steps else []
        return [s.stream for s, r in zip(steps, replies, strict=True) if s.read(r)]

    async def deliver_relayed(self, *, stream: str, hold_id: str, lease_ms: int) -> int:
        """At a relay's destination, once committed: the opened hold's keys are held for the
        slave SAE for ``lease_ms`` (claimed by ID as any). Idempotent; returns the keys."""
        check_stream_name(stream)
        check_token("hold ID", hold_id)
        _check_positive("lease", lease_ms)
        reply = await self._run(self._scripts.relay, stream, ["deliver", hold_id, lease_ms])
        self._raise_for(reply, stream=stream)
        return int(reply[1])

    # -- the peer side of blocks ---------------------------------------------------------------

    async def accept_block(
        self,
        *,
        stream: str,
        block_id: str,
        owner: str,
        size_bits: int,
        keys: Sequence[BlockKey],
        lease_ms: int,
        held_max: int,
    ) -> bool:
        """Hold exactly ``keys`` (as the master node's block names them) for ``owner`` until
        ``lease_ms`` from now, all or nothing; True if new, False for a retry of a block held
        already. ``BlockRefusedError`` says which chunks are not, never or elsewhere here;
        ``HeldBoundError`` if the chunks held for slave SAEs would exceed ``held_max``."""
        _check_block_args(stream, block_id, owner, size_bits)
        _check_positive("lease", lease_ms)
        if not keys:
            raise ValueError("a block needs at least one key")
        check_key_ids([k.key_id for k in keys])
        args: list[str | int | bytes] = [
            block_id,
            owner,
            size_bits,
            COMPOSED_KEY_NAMESPACE.bytes,
            FLUSH_LIMIT,
            "",
            lease_ms,
            held_max,
            len(keys),
        ]
        for key in keys:
            check_key_ids(key.chunk_ids)
            args.extend((key.key_id, len(key.chunks)))
            for chunk in key.chunks:
                args.extend((chunk.chunk_id, chunk.index, chunk.epoch))
        while (reply := await self._run(self._scripts.accept, stream, args))[0] == Status.E_RETRY:
            # The chunks lie deep in the incoming list; each call moves FLUSH_LIMIT more, from
            # the end the first call chose.
            args[5] = _text(reply[1])
        if reply[0] == Status.E_REFUSED:
            raise BlockRefusedError(
                stream=stream,
                never=_texts(reply[1]),
                not_yet=_texts(reply[2]),
                taken=_texts(reply[3]),
            )
        if reply[0] == Status.E_HELD_BOUND:
            raise HeldBoundError(stream=stream, mirrored=int(reply[1]), held_max=int(reply[2]))
        if reply[0] == Status.E_ID_MISMATCH:
            raise KeyIdMismatchError(stream=stream, key_id=_text(reply[1]), chunks_per_key=reply[2])
        if reply[0] == Status.E_CONFLICT:
            raise BlockConflictError(stream=stream, block_id=block_id)
        self._raise_for(reply, stream=stream)
        return _text(reply[1]) == "new"

    async def claim(
        self,
        *,
        stream: str,
        owner: str,
        key_ids: Sequence[str],
        hold_id: str | None = None,
        hold_ms: int = 0,
    ) -> tuple[Key, ...]:
        """Keys held here for ``owner`` (a slave SAE's pair), by ID, all or nothing
        (``UnknownKeysError``): deleted and returned (delivered), or with ``hold_id`` moved
        into that hold for up to ``hold_ms`` (idempotent per hold ID) and returned."""
        check_stream_name(stream)
        check_token("owner", owner)
        check_key_ids(key_ids)
        if hold_id is not None:
            check_token("hold ID", hold_id)
            _check_positive("hold time", hold_ms)
        if hold_id is not None:
            return await self._one(
                self._claim_step(
                    stream=stream, owner=owner, key_ids=key_ids, hold_id=hold_id, hold_ms=hold_ms
                )
            )
        reply = await self._claim("consume", stream, owner, key_ids, "", 0)
        return _keys(reply[1:])

    def _claim_step(
        self, *, stream: str, owner: str, key_ids: Sequence[str], hold_id: str, hold_ms: int
    ) -> _Step[tuple[Key, ...]]:
        check_stream_name(stream)
        check_token("owner", owner)
        check_key_ids(key_ids)
        check_token("hold ID", hold_id)
        _check_positive("hold time", hold_ms)
        step = self._claim_call("hold", stream, owner, key_ids, hold_id, hold_ms)
        return _Step(step.script, stream, step.args, lambda reply: _keys(step.read(reply)[1:]))

    async def holds_for(self, *, stream: str, owner: str, key_ids: Sequence[str]) -> bool:
        """Whether every key of ``key_ids`` is held here for ``owner`` (changes nothing)."""
        check_stream_name(stream)
        check_token("owner", owner)
        check_key_ids(key_ids)
        try:
            await self._claim("check", stream, owner, key_ids, "", 0)
        except UnknownKeysError:
            return False
        return True

    async def _claim(
        self, mode: str, stream: str, owner: str, key_ids: Sequence[str], hold_id: str, hold_ms: int
    ) -> list[Any]:
        return await self._one(self._claim_call(mode, stream, owner, key_ids, hold_id, hold_ms))

    def _claim_call(
        self, mode: str, stream: str, owner: str, key_ids: Sequence[str], hold_id: str, hold_ms: int
    ) -> _Step[list[Any]]:
        def read(reply: list[Any]) -> list[Any]:
            if reply[0] == Status.E_UNKNOWN_KEYS:
                raise UnknownKeysError(
                    stream=stream, owner=owner, missing=int(reply[1]), examples=_texts(reply[2:])
                )
            if reply[0] == Status.E_CONFLICT:
                raise BlockConflictError(stream=stream, block_id=hold_id)
            self._raise_for(reply, stream=stream)
            return reply

        return _Step(self._scripts.claim, stream, [mode, owner, hold_id, hold_ms, *key_ids], read)

    async def give_back(
        self, *, stream: str, owner: str, keys: Sequence[tuple[str, Sequence[str]]]
    ) -> GiveBack:
        """The peer side of a release: return the keys (key ID, chunk IDs) held here for
        ``owner`` to the buffer; say which are gone (delivered, dropped, held elsewhere)."""
        check_stream_name(stream)
        check_token("owner", owner)
        check_key_ids([k for k, _ in keys])
        args: list[str | int] = [owner]
        for key_id, chunk_ids in keys:
            check_key_ids(chunk_ids)
            args.extend((key_id, len(chunk_ids), *chunk_ids))
        reply = await self._run(self._scripts.give_back, stream, args)
        self._raise_for(reply, stream=stream)
        return GiveBack(returned=_texts(reply[1]), gone=_texts(reply[2]))

    async def finish_release(self, *, stream: str, block_id: str, gone: Sequence[str]) -> None:
        """The peer answered the release of ``block_id``: return our copies of its keys to the
        buffer except ``gone``, which are dropped; the release message is withdrawn."""
        check_stream_name(stream)
        check_token("block ID", block_id)
        reply = await self._run(self._scripts.released, stream, [block_id, *gone])
        self._raise_for(reply, stream=stream)

    async def mark_peer_dropped(
        self, *, stream: str, epoch: int, ranges: Sequence[tuple[int, int | None]]
    ) -> list[tuple[int, int]]:
        """The peer passed over the device index ``ranges`` ([start, end); end None: every
        index from start on, the peer left that key stream there) of the key stream of epoch
        ``epoch``: never store them here. Returns the index spans of those ranges that chunks
        in this buffer may have; ``drop_unstored`` drops them by ID (the caller derives the
        IDs from the epoch's KSID). No chunk of the ranges is stored after this returns."""
        check_stream_name(stream)
        if epoch < 0:
            raise ValueError(f"key stream epoch {epoch} must not be negative")
        args: list[str | int] = ["mark", epoch, len(ranges)]
        for start, end in ranges:
            if start < 0 or (end is not None and end <= start):
                raise ValueError(f"index range [{start}, {end}) is empty or negative")
            args.extend((start, "" if end is None else end))
        reply = await self._run(self._scripts.drop_peer, stream, args)
        self._raise_for(reply, stream=stream)
        return [(int(reply[i]), int(reply[i + 1])) for i in range(1, len(reply), 2)]

    async def drop_unstored(self, *, stream: str, chunk_ids: Sequence[str]) -> int:
        """Drop from the buffer the chunks of ``chunk_ids`` that are in it: the peer never
        stored them (``mark_peer_dropped``). Returns the chunks dropped."""
        check_stream_name(stream)
        if chunk_ids and not UUIDS.fullmatch("".join(chunk_ids)):
            raise ValueError("chunk IDs must be lowercase UUIDs")
        dropped = 0
        for start in range(0, len(chunk_ids), MAX_BATCH):
            args: list[str | int] = ["drop", FLUSH_LIMIT, "", *chunk_ids[start : start + MAX_BATCH]]
            while (reply := await self._run(self._scripts.drop_peer, stream, args))[0] == (
                Status.E_RETRY
            ):
                args[2] = _text(reply[1])
            self._raise_for(reply, stream=stream)
            dropped += int(reply[1])
        return dropped

    # -- deadlines and the outbox --------------------------------------------------------------

    async def sweep(self, *, stream: str, limit: int = 1000) -> SweepResult:
        """Act on the blocks past their deadline (``common.lua``, ``sweep.lua``)."""
        reply = await self._run(self._scripts.sweep, stream, [limit])
        self._raise_for(reply, stream=stream)
        return SweepResult(
            handled=int(reply[1]),
            released=int(reply[2]),
            dropped=int(reply[3]),
            more=bool(reply[4]),
            expired_held=int(reply[5]),
        )

    async def outbox_due(self, *, stream: str, limit: int = 100) -> list[OutboxMessage]:
        """The messages for the stream's peer that are due now."""
        return (await self.outbox_due_at(stream=stream, limit=limit))[1]

    async def outbox_due_at(
        self, *, stream: str, limit: int = 100
    ) -> tuple[int, list[OutboxMessage]]:
        """The Redis clock's now (ms), and the messages for the stream's peer due then."""
        reply = await self._run(self._scripts.outbox, stream, ["due", limit])
        self._raise_for(reply, stream=stream)
        messages = [
            OutboxMessage(message_id=_text(reply[i]), body=json.loads(reply[i + 1]))
            for i in range(2, len(reply), 2)
        ]
        return int(reply[1]), messages

    async def outbox_later(self, *, stream: str, message_id: str, delay_ms: int) -> None:
        """Try the message again after ``delay_ms``."""
        await self._run(self._scripts.outbox, stream, ["later", message_id, delay_ms])

    async def outbox_done(self, *, stream: str, message_id: str) -> None:
        """The peer acknowledged the message."""
        await self._run(self._scripts.outbox, stream, ["done", message_id])

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _raise_for(reply: list[Any], *, stream: str) -> None:
        code = reply[0]
        if code == Status.OK:
            return
        if code == Status.E_UNKNOWN_STREAM:
            raise UnknownStreamError(stream=stream)
        if code == Status.E_CORRUPT:
            raise KeyStoreCorruptError(stream=stream, key_id=_text(reply[1]))
        raise RuntimeError(f"key-store script returned unexpected status {code!r}")
