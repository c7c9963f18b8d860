"""Reserving from the newest end (``reserve(from_newest=True)``): the two directions of a link
draw from opposite ends of the shared stream, so their reservations do not collide; the keys'
IDs, release, idempotence and the peer's ``reserve_ids`` work as from the oldest end."""

from __future__ import annotations

import asyncio
import random
from typing import cast

import pytest
from redis.asyncio import Redis

from controllers.keystore import (
    InsufficientKeysError,
    KeyStore,
    Reservation,
    ReservedKey,
    composed_key_id,
)
from controllers.keystore import store as store_module
from controllers.keystore.layout import StreamKeys
from tests.unit.keystore.helpers import STREAM, assert_counts_add_up, make_chunks

Scored = list[tuple[str, float]]


def chunk_ids_of(r: Reservation) -> list[str]:
    return [c for k in r.keys for c in k.chunk_ids]


async def drain(
    store: KeyStore, *, from_newest: bool = False, tag: str = "drain", batch: int = 97
) -> list[str]:
    """Reserve everything available, one chunk per key, ``batch`` keys per reservation (named
    ``tag-0``, ``tag-1``, ...): the chunk IDs in the order taken, newest first from the newest
    end (each reservation lists its keys in stream order)."""
    taken: list[str] = []
    while available := (await store.counts(stream=STREAM)).available:
        r = await store.reserve(
            stream=STREAM,
            reservation_id=f"{tag}-{len(taken) // batch}",
            owner="drain",
            count=min(batch, available),
            size_bits=128,
            from_newest=from_newest,
        )
        taken.extend(reversed(r.key_ids) if from_newest else r.key_ids)
    return taken


async def undo_drain(store: KeyStore, *, tag: str = "drain") -> None:
    i = 0
    while await store.reservation(stream=STREAM, reservation_id=f"{tag}-{i}"):
        await store.release(stream=STREAM, reservation_id=f"{tag}-{i}")
        i += 1


async def test_from_newest_takes_the_newest_chunks(store: KeyStore) -> None:
    chunks = make_chunks(6)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-a",
        count=2,
        size_bits=128,
        from_newest=True,
    )
    # The newest chunks, in stream order.
    assert r.key_ids == tuple(c.chunk_id for c in chunks[4:])
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (4, 2)
    keys = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert [k.material for k in keys] == [c.material for c in chunks[4:]]
    # The oldest end is untouched.
    assert await drain(store) == [c.chunk_id for c in chunks[:4]]


async def test_composed_keys_from_the_newest_end_are_in_stream_order(store: KeyStore) -> None:
    chunks = make_chunks(7)
    ids = [c.chunk_id for c in chunks]
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-a",
        count=2,
        size_bits=384,
        from_newest=True,
    )
    assert [k.chunk_ids for k in r.keys] == [tuple(ids[1:4]), tuple(ids[4:7])]
    assert [k.key_id for k in r.keys] == [composed_key_id(ids[1:4]), composed_key_id(ids[4:7])]
    keys = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert [k.material for k in keys] == [
        b"".join(c.material for c in chunks[1:4]),
        b"".join(c.material for c in chunks[4:7]),
    ]


async def test_peer_derives_the_same_ids_for_keys_from_the_newest_end(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(40)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    await peer_store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-a",
        count=5,
        size_bits=256,
        from_newest=True,
    )
    assert chunk_ids_of(r) == [c.chunk_id for c in chunks[30:]]
    # The peer checks every key ID against its chunk IDs (KeyIdMismatchError otherwise).
    peer = await peer_store.reserve_ids(
        stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=256, keys=r.keys
    )
    assert peer.keys == r.keys
    assert all(k.key_id == composed_key_id(k.chunk_ids) for k in r.keys)
    mine = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    theirs = await peer_store.consume(stream=STREAM, owner="sae-b", key_ids=r.key_ids)
    assert [k.material for k in mine] == [k.material for k in theirs]
    # What the peer has left is the same stream in the same order.
    assert await drain(peer_store) == [c.chunk_id for c in chunks[:30]]
    await assert_counts_add_up(peer_store)


async def test_oldest_and_newest_reservations_never_overlap_while_keys_last(
    store: KeyStore,
) -> None:
    chunks = make_chunks(100)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    oldest: list[Reservation] = []
    newest: list[Reservation] = []
    for i in range(25):
        for from_newest, taken in ((False, oldest), (True, newest)):
            taken.append(
                await store.reserve(
                    stream=STREAM,
                    reservation_id=f"r{i}-{from_newest}",
                    owner="sae-a",
                    count=1,
                    size_bits=256,
                    from_newest=from_newest,
                )
            )
    # The oldest end took the first half forwards, the newest end the second half backwards.
    ids = [c.chunk_id for c in chunks]
    assert [c for r in oldest for c in chunk_ids_of(r)] == ids[:50]
    assert [c for r in reversed(newest) for c in chunk_ids_of(r)] == ids[50:]
    with pytest.raises(InsufficientKeysError):
        await store.reserve(
            stream=STREAM, reservation_id="more", owner="sae-a", count=1, size_bits=128
        )
    await assert_counts_add_up(store)


async def test_released_keys_from_the_newest_end_go_back_in_their_old_order(
    store: KeyStore,
) -> None:
    chunks = make_chunks(10)
    ids = [c.chunk_id for c in chunks]
    await store.add_chunks(stream=STREAM, chunks=chunks[:6])
    r = await store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-a",
        count=2,
        size_bits=256,
        from_newest=True,
    )
    assert chunk_ids_of(r) == ids[2:6]
    # Chunks added after the reservation are newer than the reserved ones, whichever end they
    # were taken from: released, these go back between the older and the newer chunks.
    await store.add_chunks(stream=STREAM, chunks=chunks[6:])
    assert await store.release(stream=STREAM, reservation_id="r1") == 2
    await assert_counts_add_up(store)
    newest_first = await drain(store, from_newest=True)
    assert newest_first == ids[::-1]


async def test_release_after_mixed_reservations_restores_the_whole_order(
    store: KeyStore,
) -> None:
    chunks = make_chunks(30)
    ids = [c.chunk_id for c in chunks]
    await store.add_chunks(stream=STREAM, chunks=chunks[:20])
    reservations = []
    for i, from_newest in enumerate([True, False, True, True, False]):
        r = await store.reserve(
            stream=STREAM,
            reservation_id=f"r{i}",
            owner="sae-a",
            count=1,
            size_bits=256,
            from_newest=from_newest,
        )
        reservations.append(r)
        if i == 2:
            await store.add_chunks(stream=STREAM, chunks=chunks[20:25])
    # A peer reservation of chunks in the middle and at the end of the list.
    middle = [ReservedKey(key_id=c, chunk_ids=(c,)) for c in (ids[9], ids[22])]
    await store.reserve_ids(
        stream=STREAM, reservation_id="peer", owner="sae-b", size_bits=128, keys=middle
    )
    await store.add_chunks(stream=STREAM, chunks=chunks[25:])
    for r in reversed(reservations):
        await store.release(stream=STREAM, reservation_id=r.reservation_id)
    await store.release(stream=STREAM, reservation_id="peer")
    await assert_counts_add_up(store)
    assert await drain(store) == ids


async def test_retried_reservation_from_the_newest_end_returns_the_same_keys(
    store: KeyStore,
) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(8))
    first = await store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-a",
        count=2,
        size_bits=256,
        from_newest=True,
    )
    await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    for from_newest in (True, False):
        again = await store.reserve(
            stream=STREAM,
            reservation_id="r1",
            owner="sae-a",
            count=2,
            size_bits=256,
            from_newest=from_newest,
        )
        assert again == first
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (8, 4)


async def test_reservation_from_the_newest_end_beyond_available_takes_nothing(
    store: KeyStore,
) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(3))
    with pytest.raises(InsufficientKeysError, match="3 chunks available, 4 needed"):
        await store.reserve(
            stream=STREAM,
            reservation_id="r1",
            owner="sae-a",
            count=2,
            size_bits=256,
            from_newest=True,
        )
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (3, 0)


async def test_peer_finds_newest_chunks_from_the_lists_end(
    store: KeyStore, peer_store: KeyStore, redis_url: str
) -> None:
    for s in (store, peer_store):
        await s.configure_stream(stream=STREAM, capacity=5000, chunk_bytes=16)
    chunks = make_chunks(3000)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    # The peer's QKDM is 10 chunks behind this node's.
    await peer_store.add_chunks(stream=STREAM, chunks=chunks[:2990])
    r = await peer_store.reserve(
        stream=STREAM,
        reservation_id="r1",
        owner="sae-b",
        count=10,
        size_bits=128,
        from_newest=True,
    )
    mine = await store.reserve_ids(
        stream=STREAM, reservation_id="r1", owner="sae-a", size_bits=128, keys=r.keys
    )
    assert mine.keys == r.keys
    # Searched from the list's end: only the last slice (1000 chunks) was taken out of the
    # list, and what was not wanted of it went to the sorted set; the list's start stayed.
    raw = Redis.from_url(redis_url)
    try:
        assert await raw.zcard(StreamKeys(STREAM).avail) == 990
        assert await raw.llen(StreamKeys(STREAM).incoming) == 2000
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
    wanted = [chunks[3999], chunks[1500]]
    keys = [ReservedKey(key_id=c.chunk_id, chunk_ids=(c.chunk_id,)) for c in wanted]
    await store.reserve_ids(
        stream=STREAM, reservation_id="peer", owner="sae-b", size_bits=128, keys=keys
    )
    # Three calls each took the next 1000 chunks from the list's end; its start stayed.
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await raw.lrange(StreamKeys(STREAM).incoming, 0, -1) == [
            c.chunk_id for c in chunks[:1000]
        ]
    finally:
        await raw.aclose()
    rest = [c.chunk_id for c in chunks if c not in wanted]
    assert await drain(store) == rest
    await undo_drain(store)
    await store.release(stream=STREAM, reservation_id="peer")
    assert await drain(store, from_newest=True) == [c.chunk_id for c in reversed(chunks)]
    await assert_counts_add_up(store)


async def test_two_nodes_reserving_at_once_from_opposite_ends_never_collide(
    store: KeyStore, peer_store: KeyStore
) -> None:
    # Node A (the higher node ID) reserves from the newest end, node B from the oldest; each
    # then reserves the same keys on the other node, as the key request handlers do.
    chunks = make_chunks(500)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    await peer_store.add_chunks(stream=STREAM, chunks=chunks)

    async def request(master: KeyStore, slave: KeyStore, rid: str, newest: bool) -> Reservation:
        r = await master.reserve(
            stream=STREAM,
            reservation_id=rid,
            owner="sae-m",
            count=1,
            size_bits=256,
            from_newest=newest,
        )
        await slave.reserve_ids(
            stream=STREAM, reservation_id=rid, owner="sae-s", size_bits=256, keys=r.keys
        )
        return r

    jobs = [request(store, peer_store, f"a{i}", True) for i in range(100)]
    jobs += [request(peer_store, store, f"b{i}", False) for i in range(100)]
    random.Random(7).shuffle(jobs)
    granted = await asyncio.gather(*jobs)
    chunk_ids = [c for r in granted for c in chunk_ids_of(r)]
    assert len(chunk_ids) == len(set(chunk_ids)) == 400
    ids = [c.chunk_id for c in chunks]
    from_a = {c for r in granted if r.reservation_id.startswith("a") for c in chunk_ids_of(r)}
    assert from_a == set(ids[300:])
    for s in (store, peer_store):
        counts = await s.counts(stream=STREAM)
        assert (counts.available, counts.reserved) == (100, 400)
        await assert_counts_add_up(s)
    assert await drain(store) == await drain(peer_store) == ids[200:300]


async def test_concurrent_reservations_from_both_ends_never_share_a_chunk(
    store: KeyStore,
) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(300))

    async def one(i: int) -> Reservation | None:
        try:
            return await store.reserve(
                stream=STREAM,
                reservation_id=f"r{i}",
                owner=f"sae-{i % 7}",
                count=1,
                size_bits=256,
                from_newest=i % 2 == 1,
            )
        except InsufficientKeysError:
            return None

    results = await asyncio.gather(*(one(i) for i in range(200)))
    granted = [r for r in results if r is not None]
    assert len(granted) == 150
    chunk_ids = [c for r in granted for c in chunk_ids_of(r)]
    assert len(chunk_ids) == len(set(chunk_ids)) == 300
    await assert_counts_add_up(store)

    async def settle(i: int, r: Reservation) -> None:
        if i % 2:
            await store.consume(stream=STREAM, owner=r.owner, key_ids=r.key_ids)
        else:
            await store.release(stream=STREAM, reservation_id=r.reservation_id)

    await asyncio.gather(*(settle(i, r) for i, r in enumerate(granted)))
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved, counts.consumed) == (150, 0, 150)
    await assert_counts_add_up(store)


async def numbering(redis_url: str) -> dict[str, int]:
    """Every available chunk's number as the store's data says (layout.py): the list's from
    its head and jumps, the sorted set's from the scores."""
    keys = StreamKeys(STREAM)
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        # The client decodes responses: strings, and floats for the scores.
        jump_list = cast(Scored, await raw.zrange(keys.gaps, 0, -1, withscores=True))
        scored = cast(Scored, await raw.zrange(keys.avail, 0, -1, withscores=True))
        listed = cast(list[str], await raw.lrange(keys.incoming, 0, -1))
        head = int(await raw.hget(keys.meta, "head") or 0)
        added = int(await raw.hget(keys.meta, "added") or 0)
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
    """Adds, reservations from both ends, peer reservations, releases and consumes in random
    order, against a model: the available chunks in arrival order."""
    monkeypatch.setattr(store_module, "FLUSH_LIMIT", flush_limit)
    rng = random.Random(seed)
    await store.configure_stream(stream=STREAM, capacity=100_000, chunk_bytes=16)
    order: dict[str, int] = {}  # chunk ID -> arrival number
    available: list[str] = []  # in arrival order
    held: dict[str, list[str]] = {}  # reservation ID -> chunk IDs not consumed
    for step in range(300):
        op = rng.choice(["add", "add", "reserve", "reserve", "peer", "release", "consume"])
        rid = f"r{step}"
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
                r = await store.reserve(
                    stream=STREAM,
                    reservation_id=rid,
                    owner="sae",
                    count=count,
                    size_bits=128 * per_key,
                    from_newest=newest,
                )
            except InsufficientKeysError:
                assert len(available) < count * per_key
                continue
            need = count * per_key
            expected = available[-need:] if newest else available[:need]
            assert chunk_ids_of(r) == expected
            available = available[:-need] if newest else available[need:]
            held[rid] = expected
        elif op == "peer" and available:
            # Mostly chunks at one end (what a peer reserved there), sometimes any.
            n = min(len(available), rng.randint(1, 5))
            where = rng.choice(["oldest", "newest", "newest", "anywhere"])
            if where == "anywhere":
                picked = sorted(rng.sample(available, n), key=order.__getitem__)
            else:
                window = available[:8] if where == "oldest" else available[-8:]
                picked = sorted(rng.sample(window, min(n, len(window))), key=order.__getitem__)
            keys = [ReservedKey(key_id=c, chunk_ids=(c,)) for c in picked]
            await store.reserve_ids(
                stream=STREAM, reservation_id=rid, owner="sae", size_bits=128, keys=keys
            )
            gone = set(picked)
            available = [c for c in available if c not in gone]
            held[rid] = picked
        elif op == "release" and held:
            victim = rng.choice(sorted(held))
            await store.release(stream=STREAM, reservation_id=victim)
            available = sorted(available + held.pop(victim), key=order.__getitem__)
        elif op == "consume" and held:
            victim = rng.choice(sorted(held))
            r2 = await store.reservation(stream=STREAM, reservation_id=victim)
            assert r2 is not None
            await store.consume(stream=STREAM, owner="sae", key_ids=r2.key_ids[:1])
            left = [c for k in r2.keys[1:] for c in k.chunk_ids]
            if left:
                held[victim] = left
            else:
                del held[victim]
        counts = await store.counts(stream=STREAM)
        assert counts.available == len(available)
        if step % 30 == 0:
            assert await numbering(redis_url) == {c: order[c] + 1 for c in available}
    assert await numbering(redis_url) == {c: order[c] + 1 for c in available}
    await assert_counts_add_up(store)
    assert await drain(store, from_newest=seed % 2 == 1) == (
        available[::-1] if seed % 2 else available
    )
