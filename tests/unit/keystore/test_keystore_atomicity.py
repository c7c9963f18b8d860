"""Concurrency and durability: blocks and serving never share a key, counters always add up, and
a Redis restart loses nothing (the fixture's server runs with AOF, fsync always)."""

from __future__ import annotations

import asyncio

from controllers.keystore import (
    Block,
    InsufficientKeysError,
    KeyStore,
    UnknownKeysError,
)
from tests.fixtures.redis import RedisServer
from tests.unit.keystore.helpers import (
    OWNER,
    STREAM,
    agree,
    assert_counts_add_up,
    chunk_ids_of,
    make_chunks,
    reserve,
)


async def test_concurrent_blocks_never_share_a_chunk(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(300))

    async def one(i: int) -> Block | None:
        try:
            return await reserve(store, f"r{i}", count=1, size_bits=256, owner=f"sae-{i % 7}/x")
        except InsufficientKeysError:
            return None

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = [b for b in results if b is not None]
    assert len(granted) == 150
    chunk_ids = [c for b in granted for c in chunk_ids_of(b)]
    assert len(chunk_ids) == len(set(chunk_ids)) == 300
    await assert_counts_add_up(store)


async def test_concurrent_servers_and_claimers_get_each_key_once(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(200)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)
    for i in range(4):
        await agree(store, peer_store, f"b{i}", count=50)

    async def take() -> list[str]:
        try:
            served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=3)
        except InsufficientKeysError:
            return []
        return [k.key_id for k in served.keys]

    taken = [k for ks in await asyncio.gather(*(take() for _ in range(80))) for k in ks]
    assert len(taken) == len(set(taken)) == 198  # 66 requests of 3; 2 keys stay

    async def claim(key_id: str) -> int:
        try:
            await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[key_id])
        except UnknownKeysError:
            return 0
        return 1

    claimed = await asyncio.gather(*(claim(k) for k in taken for _ in range(3)))
    assert sum(claimed) == 198
    for s in (store, peer_store):
        await assert_counts_add_up(s)


async def test_redis_restart_loses_nothing(
    store: KeyStore, peer_store: KeyStore, redis_server: RedisServer
) -> None:
    chunks = make_chunks(20)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)
    await agree(store, peer_store, "b1", count=4, size_bits=256)
    hold = await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=256, count=2, hold_ms=60_000
    )
    before = (await store.counts(stream=STREAM), await peer_store.counts(stream=STREAM))

    await asyncio.to_thread(redis_server.restart)

    assert (await store.counts(stream=STREAM), await peer_store.counts(stream=STREAM)) == before
    again = await store.get_hold(stream=STREAM, hold_id="req")
    assert again is not None
    assert {k.key_id: k.material for k in again.keys} == {k.key_id: k.material for k in hold.keys}
    theirs = await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=list(hold.key_ids))
    assert {k.key_id: k.material for k in theirs} == {k.key_id: k.material for k in hold.keys}
    assert (await store.add_chunks(stream=STREAM, chunks=chunks)).accepted == 0
    await assert_counts_add_up(store)
