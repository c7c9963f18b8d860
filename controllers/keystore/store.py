"""``KeyStore``: the typed, async face of the key store over one Redis client.

Called by the QKDM (configure_stream, add_chunks, counts), the KeyRequest and relay handlers
(reserve, reserve_ids, fetch, consume, release, reservation) and the KeyStream reconciler
(counts). Each method is one Lua script round trip; see ``layout.py`` for the data model and
the ``*.lua`` files for the atomic steps.

Both ends: ``reserve`` takes the oldest available chunks, or with ``from_newest`` the newest, so
that the two nodes of a link, each reserving for its own SAEs, do not take the same chunks
(the caller picks the end from the node IDs). The peer's ``reserve_ids`` searches its incoming
list from the end nearer the chunks, so either way it finds them at once.

Exactly once: ``consume`` reads and deletes in one script. If the connection drops after the
script ran, redis-py's retry re-sends it and it fails with ``UnknownKeysError``: such keys are
lost, never served twice. A caller that must not lose keys fetches, delivers, then consumes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from controllers.keystore.checks import UUID, UUIDS, check_key_ids, check_size, check_token
from controllers.keystore.errors import (
    ChunkSizeChangeError,
    InsufficientKeysError,
    InvalidChunkError,
    KeyIdMismatchError,
    KeyStoreCorruptError,
    KeysUnavailableError,
    ReservationConflictError,
    UnknownKeysError,
    UnknownReservationError,
    UnknownStreamError,
)
from controllers.keystore.keyids import COMPOSED_KEY_NAMESPACE
from controllers.keystore.layout import StreamKeys, check_stream_name
from controllers.keystore.model import (
    AddResult,
    Chunk,
    Key,
    Reservation,
    ReservedKey,
    StreamCounts,
)
from controllers.keystore.scripts import Scripts

# Script status codes (common.lua).
_OK = 0
_E_UNKNOWN_STREAM = -1
_E_CONFLICT = -2
_E_INSUFFICIENT = -3
_E_ID_MISMATCH = -4
_E_UNKNOWN_RESERVATION = -5
_E_UNKNOWN_KEYS = -6
_E_CORRUPT = -7
_E_CHUNK_SIZE_CHANGE = -8
_E_BAD_CHUNK = -9
_E_RETRY = -10

# Chunks per script call: big enough to amortise the round trip, small enough that one call
# does not hold Redis (single-threaded) for long. add_chunks splits larger batches.
MAX_BATCH = 10_000
# reserve_ids moves at most about this many chunks per script call while it looks for the
# peer's chunks in the incoming list, so one call never holds Redis for long.
FLUSH_LIMIT = 50_000
# The position, among reserve_ids.lua's arguments, of the end of the incoming list it searches
# from: '' on the first call (the script chooses), then what its retry reply says.
_DIRECTION_ARG = 5


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class KeyStore:
    """The key store of one node. Create with ``KeyStore(redis=client)`` (the caller closes the
    client) or ``KeyStore.from_url(url)`` (``aclose`` closes it); the client must not decode
    responses, key material is bytes."""

    def __init__(self, *, redis: Redis, tombstone_seconds: int = 3600) -> None:
        if tombstone_seconds <= 0:
            raise ValueError("tombstone_seconds must be positive")
        self._redis = redis
        # A consumed chunk's ID is remembered this long (at least), so a late retry of an add
        # that already went through cannot put consumed material back.
        self._tombstone_seconds = tombstone_seconds
        self._scripts = Scripts.register(redis)
        self._owns_client = False

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 32, tombstone_seconds: int = 3600
    ) -> KeyStore:
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
        store = cls(redis=client, tombstone_seconds=tombstone_seconds)
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

    # -- streams -------------------------------------------------------------------------------

    async def configure_stream(self, *, stream: str, capacity: int, chunk_bytes: int) -> None:
        """Create ``stream`` or set its capacity (in chunks); its chunk size is fixed for life."""
        check_stream_name(stream)
        if capacity < 0:
            raise ValueError(f"capacity {capacity} of key stream {stream!r} must not be negative")
        if not 1 <= chunk_bytes <= 65536:
            raise ValueError(f"chunk size {chunk_bytes} bytes must be between 1 and 65536")
        keys = StreamKeys(stream)
        reply = await self._scripts.configure(keys=[keys.meta], args=[capacity, chunk_bytes])
        if reply[0] == _E_CHUNK_SIZE_CHANGE:
            raise ChunkSizeChangeError(stream=stream, current=reply[1], requested=chunk_bytes)

    async def drop_stream(self, *, stream: str) -> bool:
        """Delete ``stream`` with all its keys and reservations; False if it did not exist."""
        check_stream_name(stream)
        keys = StreamKeys(stream)
        bucket = self._bucket()
        reply = await self._scripts.drop(
            keys=[
                keys.meta,
                keys.avail,
                keys.incoming,
                keys.data,
                keys.rsv,
                keys.keys,
                keys.res,
                keys.gaps,
                keys.gone(bucket),
                keys.gone(bucket - 1),
            ]
        )
        return bool(reply[1])

    async def counts(self, *, stream: str) -> StreamCounts:
        check_stream_name(stream)
        keys = StreamKeys(stream)
        reply = await self._scripts.counts(keys=[keys.meta, keys.avail, keys.incoming])
        self._raise_for(reply, stream=stream)
        capacity, chunk_bytes, added, reserved, consumed, available = reply[1:7]
        return StreamCounts(
            capacity=capacity,
            chunk_bytes=chunk_bytes,
            added=added,
            available=available,
            reserved=reserved,
            consumed=consumed,
        )

    # -- ingest (QKDM) -------------------------------------------------------------------------

    async def add_chunks(
        self, *, stream: str, chunks: Sequence[Chunk], first_index: int | None = None
    ) -> AddResult:
        """Add chunks in order. Idempotent per chunk ID: a chunk already held, or consumed
        within the tombstone period, counts as a duplicate; the same ID twice in one batch is
        a caller bug (``InvalidChunkError``). With ``first_index`` (the device index of
        ``chunks[0]``), the stream's ingest cursor becomes ``first_index + stored`` in the same
        atomic step. When the stream reaches capacity
        the rest of the batch is refused (``AddResult.refused``) and nothing of it is kept."""
        check_stream_name(stream)
        if first_index is not None and first_index < 0:
            raise ValueError(f"first_index {first_index} must not be negative")
        keys = StreamKeys(stream)
        bucket = self._bucket()
        script_keys = [
            keys.meta,
            keys.avail,
            keys.incoming,
            keys.data,
            keys.gone(bucket),
            keys.gone(bucket - 1),
        ]
        accepted = duplicates = 0
        for start in range(0, len(chunks), MAX_BATCH):
            part = chunks[start : start + MAX_BATCH]
            ids = [c.chunk_id for c in part]
            joined = "".join(ids)
            # Checked for the whole batch at C speed; the per-chunk loop only finds the culprit.
            if set(map(len, ids)) != {36} or not UUIDS.fullmatch(joined):
                bad = next(i for i, c in enumerate(ids) if not UUID.match(c))
                raise InvalidChunkError(
                    stream=stream, index=start + bad, reason="the chunk ID is not a lowercase UUID"
                )
            if len(set(ids)) != len(ids):
                bad = next(i for i, c in enumerate(ids) if c in ids[:i])
                raise InvalidChunkError(
                    stream=stream, index=start + bad, reason="its ID appears earlier in the batch"
                )
            cursor = "" if first_index is None else first_index + start
            reply = await self._scripts.add(
                keys=script_keys, args=[joined, b"".join(c.material for c in part), cursor]
            )
            if reply[0] == _E_BAD_CHUNK:
                size = int(reply[1])
                bad = next(i for i, c in enumerate(part) if len(c.material) != size)
                raise InvalidChunkError(
                    stream=stream,
                    index=start + bad,
                    reason=f"the stream takes chunks of exactly {size} bytes",
                )
            self._raise_for(reply, stream=stream)
            accepted += reply[1]
            duplicates += reply[2]
            if reply[3]:
                return AddResult(
                    accepted=accepted,
                    duplicates=duplicates,
                    refused=len(chunks) - start - len(part) + reply[3],
                )
        return AddResult(accepted=accepted, duplicates=duplicates, refused=0)

    async def ingest_cursor(self, *, stream: str) -> int:
        """The next device index the stream's QKDM fetches (0 for a new stream)."""
        return (await self._cursor(stream, "", ""))[0]

    async def set_ingest_cursor(self, *, stream: str, cursor: int) -> None:
        """Move the ingest cursor, e.g. past device indices that expired unread."""
        if cursor < 0:
            raise ValueError(f"ingest cursor {cursor} must not be negative")
        await self._cursor(stream, cursor, "")

    async def ingest_key_stream(self, *, stream: str) -> str | None:
        """The device key stream (KSID) the ingest cursor counts in; None before the QKDM
        named one (a stream whose cursor predates KSIDs in the store, or a new one)."""
        return (await self._cursor(stream, "", ""))[1] or None

    async def start_key_stream(self, *, stream: str, ksid: str) -> None:
        """The QKDM opened a new device key stream: the cursor counts from 0 in ``ksid`` now
        (one atomic step). Keys already stored stay; their IDs name the old KSID."""
        if not ksid:
            raise ValueError("a key stream ID must not be empty")
        await self._cursor(stream, 0, ksid)

    async def _cursor(self, stream: str, value: int | str, ksid: str) -> tuple[int, str]:
        check_stream_name(stream)
        reply = await self._scripts.cursor(keys=[StreamKeys(stream).meta], args=[value, ksid])
        self._raise_for(reply, stream=stream)
        return int(reply[1]), _text(reply[2])

    # -- reservations (key requests, relay) ----------------------------------------------------

    async def reserve(
        self,
        *,
        stream: str,
        reservation_id: str,
        owner: str,
        count: int,
        size_bits: int,
        from_newest: bool = False,
    ) -> Reservation:
        """Reserve ``count`` keys of ``size_bits`` from the oldest available chunks, or with
        ``from_newest`` the newest, all or nothing (``InsufficientKeysError``). A key longer
        than a chunk is made of consecutive chunks in stream order (also from the newest end,
        so its ID is the one the peer's ``reserve_ids`` derives); ``size_bits`` need not fill
        the last one (the rest is discarded on consume). Retrying with the same reservation ID
        returns the same reservation, whichever end the retry names.

        Two neighbours that each reserve for their own SAEs at the same time would otherwise
        take the same oldest chunks and then fail to reserve them on each other; the callers
        pass ``from_newest = local node ID > peer node ID`` so the two directions of a link
        draw from opposite ends and meet only when the buffer is nearly empty."""
        self._check_reservation_args(stream, reservation_id, owner, size_bits)
        if count <= 0:
            raise ValueError(f"key count {count} must be positive")
        keys = StreamKeys(stream)
        reply = await self._scripts.reserve(
            keys=[keys.meta, keys.avail, keys.incoming, keys.keys, keys.res, keys.rsv, keys.gaps],
            args=[
                reservation_id,
                owner,
                size_bits,
                count,
                COMPOSED_KEY_NAMESPACE.bytes,
                "newest" if from_newest else "oldest",
            ],
        )
        if reply[0] == _E_INSUFFICIENT:
            raise InsufficientKeysError(stream=stream, needed=reply[1], available=reply[2])
        self._raise_for(reply, stream=stream, reservation_id=reservation_id)
        return self._reservation(reservation_id, reply)

    async def reserve_ids(
        self,
        *,
        stream: str,
        reservation_id: str,
        owner: str,
        size_bits: int,
        keys: Sequence[ReservedKey],
    ) -> Reservation:
        """The peer side of ``reserve``: reserve exactly ``keys`` (as the other node's
        ``Reservation.keys``, from either end), all or nothing (``KeysUnavailableError``).
        Idempotent per reservation ID."""
        self._check_reservation_args(stream, reservation_id, owner, size_bits)
        check_key_ids([k.key_id for k in keys])
        args: list[str | int | bytes] = [
            reservation_id,
            owner,
            size_bits,
            COMPOSED_KEY_NAMESPACE.bytes,
            FLUSH_LIMIT,
            "",  # _DIRECTION_ARG
            len(keys),
        ]
        for key in keys:
            check_key_ids(key.chunk_ids)
            args.extend((key.key_id, len(key.chunk_ids), *key.chunk_ids))
        names = StreamKeys(stream)
        script_keys = [
            names.meta,
            names.avail,
            names.incoming,
            names.data,
            names.keys,
            names.res,
            names.rsv,
            names.gaps,
        ]
        while (reply := await self._scripts.reserve_ids(keys=script_keys, args=args))[0] == (
            _E_RETRY
        ):
            # The chunks lie deep in the incoming list; each call moves FLUSH_LIMIT more, from
            # the end the first call chose.
            args[_DIRECTION_ARG] = _text(reply[1])
        if reply[0] == _E_INSUFFICIENT:
            raise KeysUnavailableError(
                stream=stream, missing=reply[1], examples=[_text(c) for c in reply[2:]]
            )
        if reply[0] == _E_ID_MISMATCH:
            raise KeyIdMismatchError(stream=stream, key_id=_text(reply[1]), chunks_per_key=reply[2])
        self._raise_for(reply, stream=stream, reservation_id=reservation_id)
        return self._reservation(reservation_id, reply)

    async def release(self, *, stream: str, reservation_id: str) -> int:
        """Put a reservation's unconsumed keys back to available, at their old place in the
        order; returns how many keys went back."""
        check_stream_name(stream)
        check_token("reservation ID", reservation_id)
        keys = StreamKeys(stream)
        reply = await self._scripts.release(
            keys=[keys.meta, keys.avail, keys.keys, keys.res, keys.rsv], args=[reservation_id]
        )
        self._raise_for(reply, stream=stream, reservation_id=reservation_id)
        return int(reply[1])

    async def reservation(self, *, stream: str, reservation_id: str) -> Reservation | None:
        """The reservation's keys not consumed yet, or None if there is no such reservation."""
        check_stream_name(stream)
        check_token("reservation ID", reservation_id)
        keys = StreamKeys(stream)
        reply = await self._scripts.lookup(
            keys=[keys.meta, keys.keys, keys.res], args=[reservation_id]
        )
        if reply[0] == _E_UNKNOWN_RESERVATION:
            return None
        self._raise_for(reply, stream=stream, reservation_id=reservation_id)
        return self._reservation(reservation_id, reply)

    # -- delivery ------------------------------------------------------------------------------

    async def fetch(self, *, stream: str, owner: str, key_ids: Sequence[str]) -> list[Key]:
        """Read reserved keys (in the order asked) without removing them."""
        return await self._take("fetch", stream=stream, owner=owner, key_ids=key_ids)

    async def consume(self, *, stream: str, owner: str, key_ids: Sequence[str]) -> list[Key]:
        """Read and delete reserved keys, exactly once, all or nothing (``UnknownKeysError``
        when any is not reserved for ``owner``, e.g. already consumed)."""
        return await self._take("consume", stream=stream, owner=owner, key_ids=key_ids)

    async def _take(
        self, mode: str, *, stream: str, owner: str, key_ids: Sequence[str]
    ) -> list[Key]:
        check_stream_name(stream)
        check_token("owner", owner)
        check_key_ids(key_ids)
        keys = StreamKeys(stream)
        reply = await self._scripts.take(
            keys=[keys.meta, keys.data, keys.keys, keys.res, keys.gone(self._bucket()), keys.rsv],
            args=[mode, owner, 2 * self._tombstone_seconds, *key_ids],
        )
        if reply[0] == _E_UNKNOWN_KEYS:
            raise UnknownKeysError(
                stream=stream,
                owner=owner,
                missing=reply[1],
                examples=[_text(k) for k in reply[2:]],
            )
        if reply[0] == _E_CORRUPT:
            raise KeyStoreCorruptError(stream=stream, key_id=_text(reply[1]))
        self._raise_for(reply, stream=stream)
        out = []
        for entry in reply[1:]:
            size_bits = int(entry[1])
            out.append(
                Key(
                    key_id=_text(entry[0]),
                    size_bits=size_bits,
                    material=b"".join(entry[2:])[: size_bits // 8],
                )
            )
        return out

    # -- helpers -------------------------------------------------------------------------------

    def _bucket(self) -> int:
        # Tombstones live in one set per period; add checks this period's and the last one's.
        return int(time.time()) // self._tombstone_seconds

    @staticmethod
    def _check_reservation_args(
        stream: str, reservation_id: str, owner: str, size_bits: int
    ) -> None:
        check_stream_name(stream)
        check_token("reservation ID", reservation_id)
        check_token("owner", owner)
        check_size(size_bits)

    @staticmethod
    def _reservation(reservation_id: str, reply: list[Any]) -> Reservation:
        return Reservation(
            reservation_id=reservation_id,
            owner=_text(reply[1]),
            size_bits=int(reply[2]),
            keys=tuple(
                ReservedKey(key_id=_text(e[0]), chunk_ids=tuple(_text(c) for c in e[1:]))
                for e in _as_list(reply[3:])
            ),
        )

    @staticmethod
    def _raise_for(reply: list[Any], *, stream: str, reservation_id: str = "") -> None:
        code = reply[0]
        if code == _OK:
            return
        if code == _E_UNKNOWN_STREAM:
            raise UnknownStreamError(stream=stream)
        if code == _E_CONFLICT:
            raise ReservationConflictError(stream=stream, reservation_id=reservation_id)
        if code == _E_UNKNOWN_RESERVATION:
            raise UnknownReservationError(stream=stream, reservation_id=reservation_id)
        raise RuntimeError(f"key-store script returned unexpected status {code!r}")


def _as_list(entries: Iterable[Any]) -> list[list[Any]]:
    return [list(e) for e in entries]
