"""Blocks from the newest end (``reserve_block(from_newest=True)``): the two directions of a
link draw from opposite ends of the shared stream, so their blocks do not collide; the keys'
IDs, giving back, idempotence and the peer's ``accept_block`` work as from the oldest end, and
whatever goes back to the buffer takes its old place in the order."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import pytest
from redis.asyncio import Redis

from controllers.keystore import (
    Block,
    BlockChunk,
    BlockKey,
    InsufficientKeysError,
    KeyStore,
    composed_key_id,
)
from controllers.keystore import store as store_module
from controllers.keystore.layout import NAMES, stream_keys
from tests.unit.keystore.helpers import (
    OWNER,
    STREAM,
    accept,
    agree,
    assert_counts_add_up,
    chunk_ids_of,
    make_chunks,
    reserve,
)

Scored = list[tuple[str, float]]


def key(name: str) -> str:
    return stream_keys(STREAM)[NAMES.index(name)]


def single(chunk_ids: list[str]) -> tuple[BlockKey, ...]:
    """Keys of one chunk each, as a master block names them (device index unknown)."""
    return tuple(BlockKey(key_id=c, chunks=(BlockChunk(chunk_id=c, index=-1),)) for c in chunk_ids)


def peer_block(block_id: str, chunk_ids: list[str]) -> Block:
    return Block(
        block_id=block_id, owner=OWNER, size_bits=128, state="pending", keys=single(chunk_ids)
    )


async def drain(
    store: KeyStore, *, from_newest: bool = False, tag: str = "drain", batch: int = 97
) -> list[str]:
    """Reserve everything available in blocks of ``batch`` one-chunk keys (``tag-0``,
    ``tag-1``, ...): the chunk IDs in the order taken, newest first from the newest end (each
    block lists its keys in stream order)."""
    taken: list[str] = []
    while available := (await store.counts(stream=STREAM)).available:
        block = await reserve(
            store,
            f"{tag}-{len(taken) // batch}",
            count=min(batch, available),
            newest=from_newest,
        )
        ids = chunk_ids_of(block)
        taken.extend(reversed(ids) if from_newest else ids)
    return taken


async def undo_drain(store: KeyStore, *, tag: str = "drain", blocks: int) -> None:
    for i in range(blocks):
        await store.refuse_block(stream=STREAM, block_id=f"{tag}-{i}")


async def test_from_newest_takes_the_newest_chunks(store: KeyStore) -> None:
    chunks = make_chunks(6)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    block = await reserve(store, "b1", count=2, newest=True)
    # The newest chunks, in stream order.
    assert block.key_ids == tuple(c.chunk_id for c in chunks[4:])
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (4, 2)
    # The oldest end is untouched.
    assert await drain(store) == [c.chunk_id for c in chunks[:4]]


async def test_composed_keys_from_the_newest_end_are_in_stream_order(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(7)
    ids = [c.chunk_id for c in chunks]
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)
    block = await agree(store, peer_store, "b1", count=2, size_bits=384, newest=True)
    assert [k.chunk_ids for k in block.keys] == [tuple(ids[1:4]), tuple(ids[4:7])]
    assert [k.key_id for k in block.keys] == [
        composed_key_id(ids[1:4]),
        composed_key_id(ids[4:7]),
    ]
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=384, count=2)
    assert {k.key_id: k.material for k in served.keys} == {
        composed_key_id(ids[1:4]): b"".join(c.material for c in chunks[1:4]),
        composed_key_id(ids[4:7]): b"".join(c.material for c in chunks[4:7]),
    }


async def test_peer_derives_the_same_ids_for_keys_from_the_newest_end(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(40)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)
    block = await agree(store, peer_store, "b1", count=5, size_bits=256, newest=True)
    assert chunk_ids_of(block) == [c.chunk_id for c in chunks[30:]]
    assert all(k.key_id == composed_key_id(k.chunk_ids) for k in block.keys)
    mine = await store.take(stream=STREAM, owner=OWNER, size_bits=256, count=5)
    theirs = await peer_store.claim(
        stream=STREAM, owner=OWNER, key_ids=[k.key_id for k in mine.keys]
    )
    assert [k.material for k in mine.keys] == [k.material for k in theirs]
    # What the peer has left is the same stream in the same order.
    assert await drain(peer_store) == [c.chunk_id for c in chunks[:30]]
    await assert_counts_add_up(peer_store)


async def test_oldest_and_newest_blocks_never_overlap_while_keys_last(store: KeyStore) -> None:
    chunks = make_chunks(100)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    oldest: list[Block] = []
    newest: list[Block] = []
    for i in range(25):
        for from_newest, taken in ((False, oldest), (True, newest)):
            taken.append(await reserve(store, f"r{i}-{from_newest}", count=2, newest=from_newest))
    # The oldest end took the first half forwards, the newest end the second half backwards.
    ids = [c.chunk_id for c in chunks]
    assert [c for b in oldest for c in chunk_ids_of(b)] == ids[:50]
    assert [c for b in reversed(newest) for c in chunk_ids_of(b)] == ids[50:]
    with pytest.raises(InsufficientKeysError):
        await reserve(store, "more", count=1)
    await assert_counts_add_up(store)


async def test_given_back_keys_from_the_newest_end_go_back_in_their_old_order(
    store: KeyStore,
) -> None:
    chunks = make_chunks(10)
    ids = [c.chunk_id for c in chunks]
    await store.add_chunks(stream=STREAM, chunks=chunks[:6])
    block = await reserve(store, "b1", count=2, size_bits=256, newest=True)
    assert chunk_ids_of(block) == ids[2:6]
    # Chunks added after the block are newer than its chunks, whichever end they were taken
    # from: given back, these go between the older and the newer chunks.
    await store.add_chunks(stream=STREAM, chunks=chunks[6:])
    assert await store.refuse_block(stream=STREAM, block_id="b1") == (4, 0)
    await assert_counts_add_up(store)
    assert await drain(store, from_newest=True) == ids[::-1]


async def test_giving_back_after_mixed_blocks_restores_the_whole_order(store: KeyStore) -> None:
    chunks = make_chunks(30)
    ids = [c.chunk_id for c in chunks]
    await store.add_chunks(stream=STREAM, chunks=chunks[:20])
    blocks = []
    for i, from_newest in enumerate([True, False, True, True, False]):
        blocks.append(await reserve(store, f"r{i}", count=1, newest=from_newest))
        if i == 2:
            await store.add_chunks(stream=STREAM, chunks=chunks[20:25])
    # The peer side of a block of chunks in the middle and at the end of the list.
    await accept(store, peer_block("peer", [ids[9], ids[22]]))
    await store.add_chunks(stream=STREAM, chunks=chunks[25:])
    for b in reversed(blocks):
        await store.refuse_block(stream=STREAM, block_id=b.block_id)
    answer = await store.give_back(
        stream=STREAM, owner=OWNER, keys=[(ids[9], [ids[9]]), (ids[22], [ids[22]])]
    )
    assert answer.returned == (ids[9], ids[22])
    await assert_counts_add_up(store)
    assert await drain(store) == ids


async def test_retried_block_from_the_newest_end_returns_the_same_keys(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(8))
    first = await reserve(store, "b1", count=2, size_bits=256, newest=True)
    await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    for from_newest in (True, False):
        again = await reserve(store, "b1", count=2, size_bits=256, newest=from_newest)
        assert sorted(again.keys, key=lambda k: k.key_id) == sorted(
            first.keys, key=lambda k: k.key_id
        )
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (8, 4)


async def test_block_from_the_newest_end_beyond_available_takes_nothing(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(3))
    with pytest.raises(InsufficientKeysError, match="3 chunks available, 4 needed"):
        await reserve(store, "b1", count=2, size_bits=256, newest=True)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (3, 0)


async def test_peer_finds_newest_chunks_from_the_lists_end(
    store: KeyStore, peer_store: KeyStore, redis_url: str
) -> None:
    for s in (store, peer_store):
        await s.configure_stream(stream=STREAM, capacity=5000, chunk_bytes=16)
    chunks = make_chunks(3000)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    # The peer's QKDM is 10 chunks behind this node's.
    await peer_store.add_chunks(stream=STREAM, chunks=chunks[:2990])
    block = await reserve(peer_store, "b1", count=10, newest=True)
    await accept(store, block)
    # Searched from the list's end: only the last slice (1000 chunks) was taken out of the
    # list, and what was not wanted of it went to the sorted set; the list's start stayed.
    raw = Redis.from_url(redis_url)
    try:
        assert await raw.zcard(key("avail")) == 990
        assert await raw.llen(key("incoming")) == 2000
    finally:
        await raw.aclose()
    # Everything left keeps its place in the order.
    ids = [c.chunk_id for c in chunks]
    assert await drain(store, from_newest=True) == ids[2990:][::-1] + ids[:2980][::-1]
    await assert_counts_add_up(store)


async def test_peer_search_from_the_end_resumes_in_the_same_direction(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setattr(store_module, "FLUSH_LIMIT", 1)
    await store.configure_stream(stream=STREAM, capacity=5000, chunk_bytes=16)
    chunks = make_chunks(4000)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    # Near the end, and 2500 chunks from it: found one slice (1000 chunks) per call.
    wanted = [chunks[3999].chunk_id, chunks[1500].chunk_id]
    await accept(store, peer_block("peer", wanted))
    # Three calls each took the next 1000 chunks from the list's end; its start stayed.
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await raw.lrange(key("incoming"), 0, -1) == [c.chunk_id for c in chunks[:1000]]
    finally:
        await raw.aclose()
    rest = [c.chunk_id for c in chunks if c.chunk_id not in wanted]
    assert await drain(store) == rest
    await undo_drain(store, blocks=(len(rest) + 96) // 97)
    await store.give_back(stream=STREAM, owner=OWNER, keys=[(c, [c]) for c in wanted])
    assert await drain(store, from_newest=True) == [c.chunk_id for c in reversed(chunks)]
    await assert_counts_add_up(store)


async def test_two_nodes_agreeing_at_once_from_opposite_ends_never_collide(
    store: KeyStore, peer_store: KeyStore
) -> None:
    # Node A (the higher node ID) reserves from the newest end, node B from the oldest; each
    # then has the other hold the same keys, as key delivery does.
    chunks = make_chunks(500)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)

    async def request(master: KeyStore, slave: KeyStore, bid: str, newest: bool) -> Block:
        block = await reserve(master, bid, count=1, size_bits=256, newest=newest)
        await accept(slave, block)
        return block

    jobs = [request(store, peer_store, f"a{i}", True) for i in range(100)]
    jobs += [request(peer_store, store, f"b{i}", False) for i in range(100)]
    random.Random(7).shuffle(jobs)
    granted = await asyncio.gather(*jobs)
    chunk_ids = [c for b in granted for c in chunk_ids_of(b)]
    assert len(chunk_ids) == len(set(chunk_ids)) == 400
    ids = [c.chunk_id for c in chunks]
    from_a = {c for b in granted if b.block_id.startswith("a") for c in chunk_ids_of(b)}
    assert from_a == set(ids[300:])
    for s in (store, peer_store):
        counts = await s.counts(stream=STREAM)
        assert (counts.available, counts.pooled, counts.mirrored) == (100, 200, 200)
        await assert_counts_add_up(s)
    assert await drain(store) == await drain(peer_store) == ids[200:300]


async def test_concurrent_blocks_from_both_ends_never_share_a_chunk(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(300))

    async def one(i: int) -> Block | None:
        try:
            return await reserve(store, f"r{i}", count=1, size_bits=256, newest=i % 2 == 1)
        except InsufficientKeysError:
            return None

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = [b for b in results if b is not None]
    assert len(granted) == 150
    chunk_ids = [c for b in granted for c in chunk_ids_of(b)]
    assert len(chunk_ids) == len(set(chunk_ids)) == 300
    await assert_counts_add_up(store)
    await asyncio.gather(*(store.refuse_block(stream=STREAM, block_id=b.block_id) for b in granted))
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (300, 0)
    await assert_counts_add_up(store)


async def numbering(redis_url: str) -> dict[str, int]:
    """Every available chunk's number as the store's data says (layout.py): the list's from
    its head and jumps, the sorted set's from the scores."""
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        # The client decodes responses: strings, and floats for the scores.
        jump_list = cast(Scored, await raw.zrange(key("gaps"), 0, -1, withscores=True))
        scored = cast(Scored, await raw.zrange(key("avail"), 0, -1, withscores=True))
        listed = cast(list[str], await raw.lrange(key("incoming"), 0, -1))
        head = int(await raw.hget(key("meta"), "head") or 0)
        added = int(await raw.hget(key("meta"), "added") or 0)
    finally:
        await raw.aclose()
    jumps = {int(before): int(after) for after, before in jump_list}
    numbers = {c: int(n) for c, n in scored}
    number = head
    for c in listed:
        assert c not in numbers
        numbers[c] = number
        number = jumps.pop(number, number + 1)
    # Every jump was passed, the last (if any) to the number the next chunk added gets.
    assert (jumps, number) == ({}, added + 1)
    return numbers


@pytest.mark.parametrize(("seed", "flush_limit"), [(0, 1), (1, 1), (2, 50_000), (3, 50_000)])
async def test_random_operations_keep_the_stream_order(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, redis_url: str, seed: int, flush_limit: int
) -> None:
    """Adds, blocks from both ends, the peer side of blocks, giving back and delivering in
    random order, against a model: the available chunks in arrival order."""
    monkeypatch.setattr(store_module, "FLUSH_LIMIT", flush_limit)
    rng = random.Random(seed)
    await store.configure_stream(stream=STREAM, capacity=100_000, chunk_bytes=16)
    order: dict[str, int] = {}  # chunk ID -> arrival number
    available: list[str] = []  # in arrival order
    pending: dict[str, list[str]] = {}  # master block ID -> its chunk IDs
    peer: dict[str, list[str]] = {}  # peer block ID -> its chunk IDs not delivered
    for step in range(300):
        op = rng.choice(["add", "add", "reserve", "reserve", "peer", "refuse", "return", "claim"])
        bid = f"r{step}"
        if op == "add":
            chunks = make_chunks(rng.choice([1, 3, 20, 300, 1200]))
            await store.add_chunks(stream=STREAM, chunks=chunks)
            for c in chunks:
                order[c.chunk_id] = len(order)
                available.append(c.chunk_id)
        elif op == "reserve" and available:
            per_key = rng.choice([1, 2, 3])
            count = rng.randint(1, max(1, min(40, len(available) // per_key)))
            newest = rng.random() < 0.5
            try:
                block = await reserve(
                    store, bid, count=count, size_bits=128 * per_key, newest=newest
                )
            except InsufficientKeysError:
                assert len(available) < count * per_key
                continue
            need = count * per_key
            expected = available[-need:] if newest else available[:need]
            assert chunk_ids_of(block) == expected
            available = available[:-need] if newest else available[need:]
            pending[bid] = expected
        elif op == "peer" and available:
            # Mostly chunks at one end (what a peer reserved there), sometimes any.
            n = min(len(available), rng.randint(1, 5))
            where = rng.choice(["oldest", "newest", "newest", "anywhere"])
            if where == "anywhere":
                picked = sorted(rng.sample(available, n), key=order.__getitem__)
            else:
                window = available[:8] if where == "oldest" else available[-8:]
                picked = sorted(rng.sample(window, min(n, len(window))), key=order.__getitem__)
            await accept(store, peer_block(bid, picked))
            gone = set(picked)
            available = [c for c in available if c not in gone]
            peer[bid] = picked
        elif op == "refuse" and pending:
            victim = rng.choice(sorted(pending))
            await store.refuse_block(stream=STREAM, block_id=victim)
            available = sorted(available + pending.pop(victim), key=order.__getitem__)
        elif op == "return" and peer:
            victim = rng.choice(sorted(peer))
            back = peer.pop(victim)
            await store.give_back(stream=STREAM, owner=OWNER, keys=[(c, [c]) for c in back])
            available = sorted(available + back, key=order.__getitem__)
        elif op == "claim" and peer:
            victim = rng.choice(sorted(peer))
            await store.claim(stream=STREAM, owner=OWNER, key_ids=peer[victim][:1])
            peer[victim] = peer[victim][1:]
            if not peer[victim]:
                del peer[victim]
        counts = await store.counts(stream=STREAM)
        assert counts.available == len(available)
        if step % 30 == 0:
            assert await numbering(redis_url) == {c: order[c] + 1 for c in available}
    assert await numbering(redis_url) == {c: order[c] + 1 for c in available}
    await assert_counts_add_up(store)
    assert await drain(store, from_newest=seed % 2 == 1) == (
        available[::-1] if seed % 2 else available
    )
