"""Reserving, composing, releasing, fetching and consuming keys, on one node and its peer."""

from __future__ import annotations

import pytest

from controllers.keystore import (
    InsufficientKeysError,
    KeyIdMismatchError,
    KeyStore,
    KeysUnavailableError,
    ReservationConflictError,
    ReservedKey,
    UnknownKeysError,
    UnknownReservationError,
    composed_key_id,
)
from controllers.keystore import store as store_module
from tests.unit.keystore.helpers import STREAM, assert_counts_add_up, make_chunks


async def test_reservation_takes_the_oldest_chunks_in_order(store: KeyStore) -> None:
    chunks = make_chunks(5)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=3, size_bits=128
    )
    assert r.key_ids == tuple(c.chunk_id for c in chunks[:3])
    assert (r.owner, r.size_bits) == ("sae-a", 128)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (2, 3)


async def test_reservation_beyond_available_fails_and_takes_nothing(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(3))
    with pytest.raises(InsufficientKeysError, match="3 chunks available, 4 needed"):
        await store.reserve(
            stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=256
        )
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (3, 0)


async def test_key_longer_than_a_chunk_is_composed_of_consecutive_chunks(store: KeyStore) -> None:
    chunks = make_chunks(4)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=256
    )
    ids = [c.chunk_id for c in chunks]
    assert [k.chunk_ids for k in r.keys] == [tuple(ids[0:2]), tuple(ids[2:4])]
    # The Lua scripts derive the same composed ID as Python does.
    assert [k.key_id for k in r.keys] == [composed_key_id(ids[0:2]), composed_key_id(ids[2:4])]
    keys = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert [k.material for k in keys] == [
        chunks[0].material + chunks[1].material,
        chunks[2].material + chunks[3].material,
    ]


async def test_key_size_between_chunks_uses_whole_chunks_and_truncates(store: KeyStore) -> None:
    chunks = make_chunks(2)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=136
    )
    [key] = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert key.material == (chunks[0].material + chunks[1].material)[:17]
    assert (await store.counts(stream=STREAM)).consumed == 2


async def test_retried_reservation_returns_the_same_keys(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    first = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    again = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    assert again == first
    assert (await store.counts(stream=STREAM)).reserved == 2


async def test_reservation_id_reused_for_another_request_is_a_conflict(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    await store.reserve(stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128)
    with pytest.raises(ReservationConflictError, match="'r1'"):
        await store.reserve(
            stream=STREAM, reservation_id="r1", owner="sae-b", count=2, size_bits=128
        )


async def test_released_keys_go_back_in_their_old_order(store: KeyStore) -> None:
    chunks = make_chunks(6)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r1 = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    r2 = await store.reserve(
        stream=STREAM, reservation_id="r2", owner="sae-a", count=2, size_bits=128
    )
    assert await store.release(stream=STREAM, reservation_id="r1") == 2
    assert await store.reservation(stream=STREAM, reservation_id="r1") is None
    r3 = await store.reserve(
        stream=STREAM, reservation_id="r3", owner="sae-a", count=4, size_bits=128
    )
    assert r3.key_ids == r1.key_ids + tuple(c.chunk_id for c in chunks[4:])
    assert not set(r3.key_ids) & set(r2.key_ids)
    await assert_counts_add_up(store)


async def test_release_of_unknown_reservation_fails(store: KeyStore) -> None:
    with pytest.raises(UnknownReservationError, match="'nope'"):
        await store.release(stream=STREAM, reservation_id="nope")


async def test_key_is_consumed_exactly_once(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(2))
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    first = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert len(first) == 2
    with pytest.raises(UnknownKeysError, match=r"2 keys .* not reserved for 'sae-a'"):
        await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    counts = await store.counts(stream=STREAM)
    assert (counts.reserved, counts.consumed) == (0, 2)
    assert await store.reservation(stream=STREAM, reservation_id="r1") is None


async def test_consume_is_all_or_nothing(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(2))
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids[:1])
    with pytest.raises(UnknownKeysError):
        await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    [left] = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids[1:])
    assert left.key_id == r.key_ids[1]


async def test_keys_of_another_owner_are_not_served(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(1))
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=128
    )
    with pytest.raises(UnknownKeysError):
        await store.fetch(stream=STREAM, owner="sae-b", key_ids=r.key_ids)
    with pytest.raises(UnknownKeysError):
        await store.consume(stream=STREAM, owner="sae-b", key_ids=r.key_ids)
    assert (await store.counts(stream=STREAM)).reserved == 1


async def test_fetch_reads_without_consuming(store: KeyStore) -> None:
    chunks = make_chunks(1)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=128
    )
    fetched = await store.fetch(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    consumed = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    assert fetched == consumed
    assert fetched[0].material == chunks[0].material


async def test_release_after_partial_consume_returns_only_the_rest(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(3))
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=3, size_bits=128
    )
    await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids[:1])
    left = await store.reservation(stream=STREAM, reservation_id="r1")
    assert left is not None
    assert left.key_ids == r.key_ids[1:]
    assert await store.release(stream=STREAM, reservation_id="r1") == 2
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved, counts.consumed) == (2, 0, 1)


async def test_peer_reserves_the_same_key_ids_and_gets_the_same_keys(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(6)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    await peer_store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=3, size_bits=256
    )
    peer = await peer_store.reserve_ids(
        stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=256, keys=r.keys
    )
    assert peer.keys == r.keys
    mine = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    theirs = await peer_store.consume(stream=STREAM, owner="sae-b", key_ids=r.key_ids)
    assert [k.material for k in mine] == [k.material for k in theirs]
    again = await peer_store.add_chunks(stream=STREAM, chunks=chunks)
    assert again.accepted == 0


async def test_peer_reservation_is_idempotent(store: KeyStore) -> None:
    chunks = make_chunks(2)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    keys = [ReservedKey(key_id=c.chunk_id, chunk_ids=(c.chunk_id,)) for c in chunks]
    first = await store.reserve_ids(
        stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=128, keys=keys
    )
    again = await store.reserve_ids(
        stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=128, keys=keys
    )
    assert first == again
    assert (await store.counts(stream=STREAM)).reserved == 2


async def test_peer_reservation_of_missing_chunks_fails_and_takes_nothing(
    store: KeyStore,
) -> None:
    chunks = make_chunks(3)
    await store.add_chunks(stream=STREAM, chunks=chunks[:2])
    keys = [ReservedKey(key_id=c.chunk_id, chunk_ids=(c.chunk_id,)) for c in chunks]
    with pytest.raises(KeysUnavailableError, match=f"1 of the requested .*{chunks[2].chunk_id}"):
        await store.reserve_ids(
            stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=128, keys=keys
        )
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.reserved) == (2, 0)


async def test_peer_reservation_with_a_wrong_key_id_fails(store: KeyStore) -> None:
    chunks = make_chunks(2)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    forged = ReservedKey(key_id=chunks[0].chunk_id, chunk_ids=tuple(c.chunk_id for c in chunks))
    with pytest.raises(KeyIdMismatchError):
        await store.reserve_ids(
            stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=256, keys=[forged]
        )
    # A key made of one chunk at 256 bits is also refused: it must be made of two.
    single = ReservedKey(key_id=chunks[0].chunk_id, chunk_ids=(chunks[0].chunk_id,))
    with pytest.raises(KeyIdMismatchError):
        await store.reserve_ids(
            stream=STREAM, reservation_id="r1", owner="sae-b", size_bits=256, keys=[single]
        )
    assert (await store.counts(stream=STREAM)).available == 2


async def test_bad_arguments_are_refused_with_a_clear_message(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        await store.reserve(
            stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=12
        )
    with pytest.raises(ValueError, match="must be positive"):
        await store.reserve(
            stream=STREAM, reservation_id="r1", owner="sae-a", count=0, size_bits=128
        )
    with pytest.raises(ValueError, match="owner"):
        await store.consume(stream=STREAM, owner="", key_ids=["x"])
    key_id = make_chunks(1)[0].chunk_id
    with pytest.raises(ValueError, match="more than once"):
        await store.consume(stream=STREAM, owner="sae-a", key_ids=[key_id, key_id])


async def test_peer_reservation_finds_chunks_anywhere_and_keeps_the_order(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # New chunks wait in a list; the peer may name chunks deep in it. Make each script call
    # search only a little of it, so that the search takes several calls.
    monkeypatch.setattr(store_module, "FLUSH_LIMIT", 1)
    await store.configure_stream(stream=STREAM, capacity=5000, chunk_bytes=16)
    chunks = make_chunks(2500)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    wanted = [chunks[10], chunks[2400]]
    keys = [ReservedKey(key_id=c.chunk_id, chunk_ids=(c.chunk_id,)) for c in wanted]
    await store.reserve_ids(
        stream=STREAM, reservation_id="peer", owner="sae-b", size_bits=128, keys=keys
    )
    await assert_counts_add_up(store)
    assert (await store.counts(stream=STREAM)).available == 2498
    # What is left comes out oldest first, as it went in.
    rest = await store.reserve(
        stream=STREAM, reservation_id="all", owner="sae-a", count=2498, size_bits=128
    )
    assert list(rest.key_ids) == [c.chunk_id for c in chunks if c not in wanted]
    # Released, the peer's two chunks are the oldest available again.
    await store.release(stream=STREAM, reservation_id="peer")
    again = await store.reserve(
        stream=STREAM, reservation_id="again", owner="sae-a", count=2, size_bits=128
    )
    assert list(again.key_ids) == [c.chunk_id for c in wanted]
