"""Adding chunks: idempotence per chunk ID, capacity and back-pressure, validation."""

from __future__ import annotations

import pytest

from controllers.keystore import (
    Chunk,
    ChunkSizeChangeError,
    InvalidChunkError,
    KeyStore,
    UnknownStreamError,
)
from controllers.keystore import store as store_module
from tests.unit.keystore.helpers import STREAM, assert_counts_add_up, make_chunks


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


async def test_consumed_chunk_cannot_be_added_again(store: KeyStore) -> None:
    chunks = make_chunks(3)
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=3, size_bits=128
    )
    await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    again = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (again.accepted, again.duplicates) == (0, 3)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.consumed) == (0, 3)


async def test_batch_beyond_capacity_is_refused_at_its_tail(store: KeyStore) -> None:
    await store.configure_stream(stream=STREAM, capacity=4, chunk_bytes=16)
    chunks = make_chunks(6)
    result = await store.add_chunks(stream=STREAM, chunks=chunks)
    assert (result.accepted, result.refused) == (4, 2)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.free) == (4, 0)
    # The refused tail goes in once room is made, and the stored head counts as duplicates.
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=2, size_bits=128
    )
    await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
    retry = await store.add_chunks(stream=STREAM, chunks=chunks[result.stored :])
    assert (retry.accepted, retry.refused) == (2, 0)
    await assert_counts_add_up(store)


async def test_reserved_chunks_count_against_capacity(store: KeyStore) -> None:
    await store.configure_stream(stream=STREAM, capacity=2, chunk_bytes=16)
    await store.add_chunks(stream=STREAM, chunks=make_chunks(2))
    await store.reserve(stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=128)
    result = await store.add_chunks(stream=STREAM, chunks=make_chunks(1))
    assert result.refused == 1


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


async def test_key_material_stays_out_of_reprs_and_errors(store: KeyStore) -> None:
    chunks = make_chunks(2)
    assert chunks[0].material.hex() not in repr(chunks[0])
    await store.add_chunks(stream=STREAM, chunks=chunks)
    r = await store.reserve(
        stream=STREAM, reservation_id="r1", owner="sae-a", count=1, size_bits=128
    )
    [key] = await store.consume(stream=STREAM, owner="sae-a", key_ids=r.key_ids)
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
    # A retried batch (all duplicates) still counts as held.
    await store.set_ingest_cursor(stream=STREAM, cursor=0)
    await store.add_chunks(stream=STREAM, chunks=chunks[:5], first_index=0)
    assert await store.ingest_cursor(stream=STREAM) == 5
    # Without first_index, the cursor stays where it is.
    await store.add_chunks(stream=STREAM, chunks=chunks[:2])
    assert await store.ingest_cursor(stream=STREAM) == 5


async def test_ingest_cursor_of_unknown_stream_fails(store: KeyStore) -> None:
    with pytest.raises(UnknownStreamError):
        await store.ingest_cursor(stream="nope")
    with pytest.raises(UnknownStreamError):
        await store.set_ingest_cursor(stream="nope", cursor=3)


async def test_a_new_key_stream_restarts_the_cursor_in_one_step(store: KeyStore) -> None:
    assert await store.ingest_key_stream(stream=STREAM) is None
    await store.set_ingest_cursor(stream=STREAM, cursor=336_000)
    await store.start_key_stream(stream=STREAM, ksid="6f1c0d3e-0000-8000-8000-000000000001")
    assert await store.ingest_cursor(stream=STREAM) == 0
    assert await store.ingest_key_stream(stream=STREAM) == "6f1c0d3e-0000-8000-8000-000000000001"
    await store.set_ingest_cursor(stream=STREAM, cursor=7)
    assert await store.ingest_key_stream(stream=STREAM) == "6f1c0d3e-0000-8000-8000-000000000001"
