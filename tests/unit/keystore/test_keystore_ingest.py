"""Adding chunks: idempotence per chunk ID and per device index, capacity and back-pressure,
the ingest cursor, the device index ranges a peer dropped, validation."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from controllers.keystore import (
    Chunk,
    ChunkSizeChangeError,
    InvalidChunkError,
    KeyStore,
    UnknownStreamError,
)
from controllers.keystore import store as store_module
from tests.unit.keystore.helpers import (
    OWNER,
    STREAM,
    agree,
    assert_counts_add_up,
    indexed_chunks,
    make_chunks,
    reserve,
)


async def test_added_chunks_are_counted_as_available(store: KeyStore) -> None:
    result = await store.add_chunks(stream=STREAM, chunks=make_chunks(5))
    assert (result.accepted, result.duplicates, result.refused) == (5, 0, 0)
    counts = await store.counts(stream=STREAM)
    assert (counts.added, counts.available, counts.reserved, counts.consumed) == (5, 5, 0, 0)


async def test_retried_batch_is_not_stored_twice(store: KeyStore) -> None:
    chunks = make_chunks(10)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    again = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (again.accepted, again.duplicates, again.stored) == (0, 10, 10)
    assert (await store.counts(stream=STREAM)).available == 10


async def test_same_chunk_twice_in_one_batch_is_refused(store: KeyStore) -> None:
    chunks = make_chunks(3)
    with pytest.raises(InvalidChunkError, match=r"chunk 3 .* appears earlier"):
        await store.add_chunks(stream=STREAM, chunks=[*chunks, chunks[1]])
    assert (await store.counts(stream=STREAM)).added == 0


async def test_delivered_chunk_cannot_be_added_again_below_the_cursor(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = indexed_chunks(uuid.uuid4(), 0, 3)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    await agree(store, peer_store, "b1", count=3)
    await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=3)
    # A QKDM that re-sends what the store passed already (its cursor says 3) stores nothing.
    again = await store.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    assert (again.accepted, again.duplicates) == (0, 3)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.consumed, counts.cursor) == (0, 3, 3)


async def test_batch_beyond_capacity_is_refused_at_its_tail(store: KeyStore) -> None:
    await store.configure_stream(stream=STREAM, capacity=4, chunk_bytes=16)
    chunks = make_chunks(6)
    result = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (result.accepted, result.refused) == (4, 2)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.free) == (4, 0)
    # The refused tail goes in once room is made, and the stored head counts as duplicates.
    await reserve(store, "b1", count=2)
    retry = await store.add_chunks(stream=STREAM, chunks=chunks[result.stored :])
    assert (retry.accepted, retry.refused) == (2, 0)
    await assert_counts_add_up(store)


async def test_chunks_set_aside_in_blocks_leave_the_buffer_and_its_capacity(
    store: KeyStore, peer_store: KeyStore
) -> None:
    # Keys pooled on the master node and held for the slave on the peer never stop ingest, so
    # both ends keep taking the same chunks from the device.
    chunks = indexed_chunks(uuid.uuid4(), 0, 4)
    for s in (store, peer_store):
        await s.configure_stream(stream=STREAM, capacity=2, chunk_bytes=16)
        await s.add_chunks(stream=STREAM, chunks=chunks[:2], first_index=0)
    await agree(store, peer_store, "b1", count=1)
    for s in (store, peer_store):
        result = await s.add_chunks(stream=STREAM, chunks=chunks[2:], first_index=2)
        assert (result.accepted, result.refused) == (1, 1)
        counts = await s.counts(stream=STREAM)
        assert (counts.available, counts.reserved, counts.free) == (2, 1, 0)


async def test_full_stream_still_recognises_duplicates(store: KeyStore) -> None:
    await store.configure_stream(stream=STREAM, capacity=2, chunk_bytes=16)
    chunks = make_chunks(2)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    again = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (again.duplicates, again.refused) == (2, 0)


async def test_large_batch_is_split_and_still_refused_only_at_its_tail(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_BATCH", 3)
    await store.configure_stream(stream=STREAM, capacity=7, chunk_bytes=16)
    result = await store.add_chunks(stream=STREAM, chunks=make_chunks(10))
    assert (result.accepted, result.refused) == (7, 3)


async def test_chunk_of_wrong_size_rejects_the_whole_batch(store: KeyStore) -> None:
    chunks = [*make_chunks(2), *make_chunks(1, size=15)]
    with pytest.raises(InvalidChunkError, match=r"chunk 2 .* exactly 16 bytes"):
        await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (await store.counts(stream=STREAM)).added == 0


async def test_chunk_id_must_be_a_uuid(store: KeyStore) -> None:
    with pytest.raises(InvalidChunkError, match="not a lowercase UUID"):
        await store.add_chunks(stream=STREAM, chunks=[Chunk(chunk_id="k1", material=bytes(16))])


async def test_adding_to_an_unknown_stream_fails(store: KeyStore) -> None:
    with pytest.raises(UnknownStreamError, match="'nope' does not exist"):
        await store.add_chunks(stream="nope", chunks=make_chunks(1))


async def test_chunk_size_of_a_stream_cannot_change(store: KeyStore) -> None:
    with pytest.raises(ChunkSizeChangeError, match="16 bytes"):
        await store.configure_stream(stream=STREAM, capacity=10, chunk_bytes=32)


async def test_bad_stream_name_is_refused_before_redis(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="key stream name"):
        await store.counts(stream="a{b}")


async def test_dropped_stream_is_gone(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(3))
    assert await store.drop_stream(stream=STREAM) is True
    with pytest.raises(UnknownStreamError):
        await store.counts(stream=STREAM)
    assert await store.drop_stream(stream=STREAM) is False


async def test_key_material_stays_out_of_reprs_and_errors(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = make_chunks(2)
    assert chunks[0].material.hex() not in repr(chunks[0])
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks)
    await agree(store, peer_store, "b1", count=1)
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)
    [key] = served.keys
    assert key.material == chunks[0].material
    assert key.material.hex() not in repr(key)
    assert repr(key.material)[2:-1] not in repr(key)


async def test_ingest_cursor_moves_past_what_the_store_holds(store: KeyStore) -> None:
    assert await store.ingest_cursor(stream=STREAM) == 0
    await store.configure_stream(stream=STREAM, capacity=5, chunk_bytes=16)
    chunks = make_chunks(8)
    first = await store.add_chunks(stream=STREAM, chunks=chunks[:3], first_index=0)
    assert await store.ingest_cursor(stream=STREAM) == first.stored == 3
    # A batch that runs into capacity moves the cursor only past the part that was kept.
    second = await store.add_chunks(stream=STREAM, chunks=chunks[3:], first_index=3)
    assert (second.accepted, second.refused) == (2, 3)
    assert await store.ingest_cursor(stream=STREAM) == 5
    # A retried batch (all duplicates) still counts as held, and the cursor never goes back.
    again = await store.add_chunks(stream=STREAM, chunks=chunks[:5], first_index=0)
    assert (again.duplicates, await store.ingest_cursor(stream=STREAM)) == (5, 5)
    # Without first_index, the cursor stays where it is.
    await store.add_chunks(stream=STREAM, chunks=chunks[:2])
    assert await store.ingest_cursor(stream=STREAM) == 5


async def test_ingest_cursor_of_unknown_stream_fails(store: KeyStore) -> None:
    with pytest.raises(UnknownStreamError):
        await store.ingest_cursor(stream="nope")
    with pytest.raises(UnknownStreamError):
        await store.set_ingest_cursor(stream="nope", cursor=3)


async def test_moving_the_cursor_forward_tells_the_peer_to_drop_what_was_passed(
    store: KeyStore,
) -> None:
    await store.add_chunks(stream=STREAM, chunks=indexed_chunks(uuid.uuid4(), 0, 3), first_index=0)
    await store.set_ingest_cursor(stream=STREAM, cursor=10)  # indices 3..9 expired unread
    # A batch that starts beyond the cursor passes over indices too.
    await store.add_chunks(
        stream=STREAM, chunks=indexed_chunks(uuid.uuid4(), 12, 2), first_index=12
    )
    due = await store.outbox_due(stream=STREAM)
    # Two notices, in either order (written in the same millisecond they tie on their due time,
    # and each range stands alone).
    assert sorted((m.kind, m.body["ranges"]) for m in due) == [
        ("drop", [[3, 10]]),
        ("drop", [[10, 12]]),
    ]
    assert await store.ingest_cursor(stream=STREAM) == 14


async def test_indices_the_peer_dropped_are_never_stored_and_leave_the_buffer(
    store: KeyStore,
) -> None:
    ksid = uuid.uuid4()
    chunks = indexed_chunks(ksid, 0, 10)
    await store.add_chunks(stream=STREAM, chunks=chunks[:6], first_index=0)
    # The peer skipped 4..7: 4 and 5 are here already, 6 and 7 not yet.
    spans = await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(4, 8)])
    assert spans == [(4, 6)]  # what may be here of them
    dropped = await store.drop_unstored(stream=STREAM, chunk_ids=[c.chunk_id for c in chunks[4:6]])
    assert dropped == 2
    result = await store.add_chunks(stream=STREAM, chunks=chunks[6:], first_index=6)
    assert (result.accepted, result.duplicates) == (2, 2)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.dropped, counts.cursor) == (6, 2, 10)
    block = await reserve(store, "all", count=6)
    assert [c.index for k in block.keys for c in k.chunks] == [0, 1, 2, 3, 8, 9]
    await assert_counts_add_up(store)


async def test_blocks_carry_each_chunks_device_index(store: KeyStore) -> None:
    ksid = uuid.uuid4()
    await store.add_chunks(stream=STREAM, chunks=indexed_chunks(ksid, 100, 3), first_index=100)
    await store.add_chunks(stream=STREAM, chunks=indexed_chunks(ksid, 200, 2), first_index=200)
    await store.add_chunks(stream=STREAM, chunks=make_chunks(1))  # no index known
    block = await reserve(store, "b", count=6)
    assert [c.index for k in block.keys for c in k.chunks] == [100, 101, 102, 200, 201, -1]


async def test_a_new_key_stream_restarts_the_cursor_in_one_step(store: KeyStore) -> None:
    assert await store.ingest_key_stream(stream=STREAM) is None
    await store.set_ingest_cursor(stream=STREAM, cursor=336_000)
    await store.start_key_stream(
        stream=STREAM, ksid="6f1c0d3e-0000-8000-8000-000000000001", epoch=1
    )
    assert await store.ingest_cursor(stream=STREAM) == 0
    assert await store.ingest_key_stream(stream=STREAM) == "6f1c0d3e-0000-8000-8000-000000000001"
    await store.set_ingest_cursor(stream=STREAM, cursor=7)
    assert await store.ingest_key_stream(stream=STREAM) == "6f1c0d3e-0000-8000-8000-000000000001"


async def test_a_run_is_stored_as_its_chunks_one_by_one_would_be(
    store: KeyStore, peer_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_BATCH", 4)  # the run crosses script calls
    chunks = indexed_chunks(uuid.uuid4(), 0, 10)
    result = await store.add_run(
        stream=STREAM,
        chunk_ids="".join(c.chunk_id for c in chunks).encode(),
        material=b"".join(c.material for c in chunks),
        first_index=0,
    )
    assert (result.accepted, result.refused, result.free) == (10, 0, 1000 - 10)
    await peer_store.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    await agree(store, peer_store, "b1", count=10)
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=10)
    assert {(k.key_id, k.material) for k in served.keys} == {
        (c.chunk_id, c.material) for c in chunks
    }
    assert (await store.counts(stream=STREAM)).cursor == 10


async def test_each_batch_says_the_room_left_as_counts_does(store: KeyStore) -> None:
    await store.configure_stream(stream=STREAM, capacity=7, chunk_bytes=16)
    first = await store.add_chunks(stream=STREAM, chunks=make_chunks(5))
    assert first.free == (await store.counts(stream=STREAM)).free == 2
    full = await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    assert (full.accepted, full.refused, full.free) == (2, 2, 0)


async def test_a_run_whose_material_does_not_split_into_its_chunks_is_refused(
    store: KeyStore,
) -> None:
    ids = "".join(c.chunk_id for c in make_chunks(3)).encode()
    with pytest.raises(InvalidChunkError, match="47 bytes of material do not split into 3"):
        await store.add_run(stream=STREAM, chunk_ids=ids, material=bytes(47))
    with pytest.raises(InvalidChunkError, match=r"chunk 0 .* exactly 16 bytes"):
        await store.add_run(stream=STREAM, chunk_ids=ids, material=bytes(45))
    assert (await store.counts(stream=STREAM)).added == 0


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (lambda i: i.upper(), "not a lowercase UUID"),
        (lambda i: i.replace("-", "", 1) + "0", "not a lowercase UUID"),
        (lambda i: i[:-1] + "g", "not a lowercase UUID"),
    ],
)
async def test_a_run_names_its_first_bad_chunk_id(
    store: KeyStore, bad: Callable[[str], str], says: str
) -> None:
    ids = [c.chunk_id for c in make_chunks(4)]
    ids[2] = bad(ids[2])
    with pytest.raises(InvalidChunkError, match=f"chunk 2 .* {says}"):
        await store.add_run(stream=STREAM, chunk_ids="".join(ids).encode(), material=bytes(64))
    with pytest.raises(InvalidChunkError, match="not a lowercase UUID"):
        await store.add_run(stream=STREAM, chunk_ids="".join(ids).encode()[:-1], material=bytes(64))
    ids = [c.chunk_id for c in make_chunks(4)]
    with pytest.raises(InvalidChunkError, match=r"chunk 3 .* appears earlier"):
        await store.add_run(
            stream=STREAM, chunk_ids="".join([*ids[:3], ids[1]]).encode(), material=bytes(64)
        )
    assert (await store.counts(stream=STREAM)).added == 0
