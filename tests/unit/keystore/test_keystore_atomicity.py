"""Concurrency and durability: reservations never share a key, counters always add up, and a
Redis restart loses nothing (the fixture's server runs with AOF, fsync always)."""

from __future__ import annotations

import asyncio

from controllers.keystore import InsufficientKeysError, KeyStore, Reservation
from tests.fixtures.redis import RedisServer
from tests.unit.keystore.helpers import STREAM, assert_counts_add_up, make_chunks


async def test_concurrent_reservations_never_share_a_chunk(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(300))

    async def one(i: int) -> Reservation | None:
        try:
            return await store.reserve(
                stream=STREAM, reservation_id=f"r{i}", owner=f"sae-{i % 7}", count=1, size_bits=256
            )
        except InsufficientKeysError:
            return None

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = [r for r in results if r is not None]
    assert len(granted) == 150
    chunk_ids = [c for r in granted for k in r.keys for c in k.chunk_ids]
    assert len(chunk_ids) == len(set(chunk_ids)) == 300
    await assert_counts_add_up(store)

    # Consume half, release the other half, concurrently; everything still adds up.
    async def settle(i: int, r: Reservation) -> None:
        if i % 2:
            await store.consume(stream=STREAM, owner=r.owner, key_ids=r.key_ids)
        else:
            await store.release(stream=STREAM, reservation_id=r.reservation_id)

    await asyncio.gather(*(settle(i, r) for i, r in enumerate(granted)))
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved, counts.consumed) == (150, 0, 150)
    await assert_counts_add_up(store)


async def test_concurrent_consumers_get_each_key_once(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(50))
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=50, size_bits=128
    )

    async def grab(key_id: str) -> int:
        try:
            await store.consume(stream=STREAM, owner="sae-a", key_ids=[key_id])
        except Exception:
            return 0
        return 1

    served = await asyncio.gather(*(grab(k) for k in r.key_ids for _ in range(4)))
    assert sum(served) == 50
    await assert_counts_add_up(store)


async def test_redis_restart_loses_nothing(store: KeyStore, redis_server: RedisServer) -> None:
    chunks = make_chunks(20)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r1 = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=4, size_bits=128
    )
    r2 = await store.reserve(
        stream=STREAM, reservation_id="r2", owner="sae-a", count=2, size_bits=256
    )
    await store.consume(stream=STREAM, owner="sae-a", key_ids=r1.key_ids[:2])
    before = await store.counts(stream=STREAM)

    await asyncio.to_thread(redis_server.restart)

    assert await store.counts(stream=STREAM) == before
    assert await store.reservation(stream=STREAM, reservation_id="r2") == r2
    keys = await store.consume(stream=STREAM, owner="sae-a", key_ids=r2.key_ids)
    assert keys[0].material == chunks[4].material + chunks[5].material
    again = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert again.accepted == 0
    await assert_counts_add_up(store)
