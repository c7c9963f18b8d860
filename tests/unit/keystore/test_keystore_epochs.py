"""Device indices count within one device key stream (KSID): when the QKDMs move a KeyStream to
the next KSID of its sequence (its next *epoch*, docs/key-streams.md), indices start at 0 again
in the same store stream. So the store compares a chunk's index with the ingest cursor, a
tombstone or a drop range only within one epoch: a chunk of an epoch this end has left, not
held, is ``never``; one of a later epoch than its cursor's is ``not_yet``; tombstones and drop
notices name their epoch (notices their KSID). Tombstones over chunks held already are kept
until no chunk of theirs can come back, then forgotten."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from controllers.keystore import BlockRefusedError, Chunk, KeyStore
from controllers.keystore.layout import NAMES, stream_keys
from controllers.qkdm.ids import epoch_ksid
from tests.unit.keystore.helpers import (
    STREAM,
    accept,
    assert_counts_add_up,
    indexed_chunks,
    reserve,
)

BASE = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://qss.dev/test/epochs"))


def ksid(epoch: int) -> str:
    return epoch_ksid(BASE, epoch)


async def on_epoch(store: KeyStore, epoch: int) -> None:
    """The QKDM opened the KeyStream's KSID of ``epoch``."""
    await store.start_key_stream(stream=STREAM, ksid=ksid(epoch), epoch=epoch)


async def ingest(store: KeyStore, epoch: int, first: int, n: int) -> list[Chunk]:
    """The QKDM stores chunks ``first`` .. ``first + n - 1`` of the KSID of ``epoch``."""
    chunks = indexed_chunks(uuid.UUID(ksid(epoch)), first, n)
    await store.add_chunks(stream=STREAM, chunks=chunks, first_index=first)
    return chunks


def ids(chunks: list[Chunk]) -> list[str]:
    return [c.chunk_id for c in chunks]


async def test_blocks_carry_each_chunks_epoch_beside_its_index(store: KeyStore) -> None:
    await on_epoch(store, 0)
    await ingest(store, 0, 0, 3)
    await on_epoch(store, 1)
    await ingest(store, 1, 0, 3)
    counts = await store.counts(stream=STREAM)
    assert (counts.epoch, counts.cursor, counts.available) == (1, 3, 6)
    block = await reserve(store, "b", count=6)
    assert [(c.index, c.epoch) for k in block.keys for c in k.chunks] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (0, 1),
        (1, 1),
        (2, 1),
    ]
    # A retry of the block names them alike.
    again = await reserve(store, "b", count=6)
    assert sorted((c.chunk_id, c.index, c.epoch) for k in again.keys for c in k.chunks) == sorted(
        (c.chunk_id, c.index, c.epoch) for k in block.keys for c in k.chunks
    )


async def test_a_chunk_of_an_epoch_the_peer_left_without_it_is_never(
    store: KeyStore, peer_store: KeyStore
) -> None:
    await on_epoch(store, 0)
    chunks = await ingest(store, 0, 0, 10)
    # The peer stored 0..4, then its device restarted: it is on epoch 1 now, cursor 0 there,
    # which is below indices 5..9 of epoch 0 (compared across epochs, they would be "not yet").
    await on_epoch(peer_store, 0)
    await ingest(peer_store, 0, 0, 5)
    await on_epoch(peer_store, 1)
    block = await reserve(store, "b", count=10)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    assert sorted(refused.value.never) == sorted(ids(chunks[5:]))
    assert (refused.value.not_yet, refused.value.taken) == ((), ())
    # The refusal changed nothing there.
    assert (await peer_store.counts(stream=STREAM)).available == 5


async def test_a_chunk_of_a_later_epoch_than_the_peers_is_not_yet(
    store: KeyStore, peer_store: KeyStore
) -> None:
    # This end moved on first and stored 0..4 of epoch 1; the peer is still on epoch 0 with its
    # cursor at 10 (above those indices: compared across epochs, they would be "never").
    await on_epoch(store, 1)
    chunks = await ingest(store, 1, 0, 5)
    await on_epoch(peer_store, 0)
    await ingest(peer_store, 0, 0, 10)
    block = await reserve(store, "b", count=5)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    assert sorted(refused.value.not_yet) == sorted(ids(chunks))
    assert (refused.value.never, refused.value.taken) == ((), ())
    # Once the peer is on epoch 1 and has them, it holds the block.
    await on_epoch(peer_store, 1)
    await ingest(peer_store, 1, 0, 5)
    assert await accept(peer_store, block) is True
    assert (await peer_store.counts(stream=STREAM)).mirrored == 5


async def test_in_the_cursors_epoch_an_index_below_the_cursor_not_held_is_never(
    store: KeyStore, peer_store: KeyStore
) -> None:
    await on_epoch(store, 2)
    chunks = await ingest(store, 2, 0, 6)
    await on_epoch(peer_store, 2)
    await ingest(peer_store, 2, 0, 2)
    await peer_store.set_ingest_cursor(stream=STREAM, cursor=4)  # 2 and 3 expired unread
    block = await reserve(store, "b", count=6)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    assert sorted(refused.value.never) == sorted(ids(chunks[2:4]))
    assert sorted(refused.value.not_yet) == sorted(ids(chunks[4:]))


async def test_tombstones_count_in_their_own_epoch(store: KeyStore, peer_store: KeyStore) -> None:
    await on_epoch(store, 0)
    await ingest(store, 0, 0, 10)
    # The peer is ahead, on epoch 1, and skipped 2..3 there; and skipped 20..29 of epoch 0.
    assert await store.mark_peer_dropped(stream=STREAM, epoch=1, ranges=[(2, 4)]) == []
    assert await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(20, 30)]) == []
    # Indices 2 and 3 of epoch 0 are still here, and still good for a block.
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.dropped) == (10, 0)
    await on_epoch(peer_store, 0)
    await ingest(peer_store, 0, 0, 10)
    assert await accept(peer_store, await reserve(store, "b0", count=4)) is True
    # On epoch 1, this end never stores 2 and 3, but stores 20..29 (epoch 0's tombstone).
    await on_epoch(store, 1)
    result = await store.add_chunks(
        stream=STREAM, chunks=indexed_chunks(uuid.UUID(ksid(1)), 0, 30), first_index=0
    )
    assert (result.accepted, result.duplicates) == (28, 2)
    block = await reserve(store, "b1", count=6 + 28)
    indices = [(c.index, c.epoch) for k in block.keys for c in k.chunks]
    assert indices[6:10] == [(0, 1), (1, 1), (4, 1), (5, 1)]
    assert indices[-10:] == [(i, 1) for i in range(20, 30)]
    await assert_counts_add_up(store)


async def test_a_master_chunk_in_a_range_the_slave_dropped_in_its_epoch_is_never(
    store: KeyStore, peer_store: KeyStore
) -> None:
    # The peer (this test's `store`) told the slave side it skipped 2..3 of epoch 1 while the
    # slave was still on epoch 0; a later block naming them is refused `never` there.
    await on_epoch(peer_store, 0)
    await ingest(peer_store, 0, 0, 10)
    await peer_store.mark_peer_dropped(stream=STREAM, epoch=1, ranges=[(2, 4)])
    await on_epoch(peer_store, 1)
    await on_epoch(store, 1)
    chunks = indexed_chunks(uuid.UUID(ksid(1)), 0, 4)
    # The master side here stored them (the test plays a master whose tombstone was lost).
    await store.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    block = await reserve(store, "b", count=4)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    assert sorted(refused.value.never) == sorted(ids(chunks[2:4]))
    assert sorted(refused.value.not_yet) == sorted(ids(chunks[:2]))


async def test_a_drop_to_the_end_of_an_epoch_left_drops_only_that_epochs_chunks(
    store: KeyStore,
) -> None:
    await on_epoch(store, 0)
    old = await ingest(store, 0, 0, 10)
    await on_epoch(store, 1)
    await ingest(store, 1, 0, 8)  # indices 0..7 again, of epoch 1
    # The peer left epoch 0 at its index 6.
    spans = await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(6, None)])
    assert spans == [(6, 10)]
    assert await store.drop_unstored(stream=STREAM, chunk_ids=ids(old[6:])) == 4
    # Again (a retried notice): nothing more goes.
    assert await store.drop_unstored(stream=STREAM, chunk_ids=ids(old[6:])) == 0
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.dropped, counts.epoch, counts.cursor) == (14, 4, 1, 8)
    block = await reserve(store, "b", count=14)
    indices = [(c.index, c.epoch) for k in block.keys for c in k.chunks]
    assert indices == [(i, 0) for i in range(6)] + [(i, 1) for i in range(8)]
    await assert_counts_add_up(store)


async def test_an_open_drop_in_the_cursors_epoch_stops_storing_it(store: KeyStore) -> None:
    await on_epoch(store, 0)
    await ingest(store, 0, 0, 6)
    # The peer left epoch 0 at 8, before this end got there.
    assert await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(8, None)]) == []
    result = await store.add_chunks(
        stream=STREAM, chunks=indexed_chunks(uuid.UUID(ksid(0)), 6, 6), first_index=6
    )
    assert (result.accepted, result.duplicates) == (2, 4)
    assert await store.ingest_cursor(stream=STREAM) == 12


async def test_drop_notices_name_the_ksid_and_epoch_they_count_in(store: KeyStore) -> None:
    await on_epoch(store, 0)
    await ingest(store, 0, 0, 5)
    await store.set_ingest_cursor(stream=STREAM, cursor=7)  # 5, 6 expired unread
    await on_epoch(store, 1)  # the device restarted: the rest of epoch 0 is never stored here
    await on_epoch(store, 1)  # starting the KSID counted in already changes nothing
    await store.add_chunks(
        stream=STREAM, chunks=indexed_chunks(uuid.UUID(ksid(1)), 3, 2), first_index=3
    )
    due = await store.outbox_due(stream=STREAM)
    assert sorted((m.body["ksid"], m.body["epoch"], m.body["ranges"]) for m in due) == sorted(
        [
            (ksid(0), 0, [[5, 7]]),
            (ksid(0), 0, [[7]]),
            (ksid(1), 1, [[0, 3]]),
        ]
    )
    assert {m.kind for m in due} == {"drop"}
    assert await store.ingest_cursor(stream=STREAM) == 5


async def test_a_store_from_before_ksids_leaves_epoch_0_by_its_cursor(store: KeyStore) -> None:
    # Its cursor counted in the base KSID, which the store never recorded.
    await ingest(store, 0, 0, 4)
    await on_epoch(store, 1)
    due = await store.outbox_due(stream=STREAM)
    # The upkeep names epoch 0's KSID, which the store does not know.
    assert [(m.body["ksid"], m.body["epoch"], m.body["ranges"]) for m in due] == [("", 0, [[4]])]


async def test_a_refused_block_drops_what_the_peer_said_it_never_stored(store: KeyStore) -> None:
    # This end put chunks into a pending block while the peer lagged (it answered `not_yet`);
    # then the peer left epoch 0 at index 6 and skipped 2..3 of epoch 1, below this end's
    # cursor there. The notices drop nothing (the chunks are out of the buffer), but when the
    # block is refused without naming them, those chunks must not go back to the buffer: the
    # peer never will hold them, and the two stores would disagree until a later block asked.
    await on_epoch(store, 0)
    old = await ingest(store, 0, 0, 10)
    await on_epoch(store, 1)
    new = await ingest(store, 1, 0, 8)
    block = await reserve(store, "b", count=18)
    assert await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(6, None)]) == []
    assert await store.mark_peer_dropped(stream=STREAM, epoch=1, ranges=[(2, 4)]) == []
    assert await store.drop_unstored(stream=STREAM, chunk_ids=ids(old[6:] + new[2:4])) == 0
    assert await store.refuse_block(stream=STREAM, block_id=block.block_id) == (12, 6)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.dropped, counts.pooled) == (12, 6, 0)
    again = await reserve(store, "b2", count=12)
    assert sorted(c.chunk_id for k in again.keys for c in k.chunks) == sorted(
        ids(old[:6] + new[:2] + new[4:])
    )
    # The tombstone below the cursor does not stop ingest past it.
    result = await store.add_chunks(
        stream=STREAM, chunks=indexed_chunks(uuid.UUID(ksid(1)), 8, 2), first_index=8
    )
    assert (result.accepted, result.duplicates) == (2, 0)
    await assert_counts_add_up(store)


async def kept_tombstones(redis_url: str) -> list[str]:
    """The kept tombstones in node A's store (``common.lua``: ranges the peer dropped of chunks
    this end may hold): read from Redis, as a scan of the store would find them."""
    client: Any = aioredis.Redis.from_url(redis_url)
    try:
        members = await client.zrange(stream_keys(STREAM)[NAMES.index("drops")], 0, -1)
    finally:
        await client.aclose()
    return sorted(m.decode() for m in members if m.endswith(b":k"))


async def test_kept_tombstones_go_once_a_refusal_leaves_none_of_their_chunks(
    store: KeyStore, redis_url: str
) -> None:
    await on_epoch(store, 0)
    old = await ingest(store, 0, 0, 10)
    await on_epoch(store, 1)
    new = await ingest(store, 1, 0, 8)
    block = await reserve(store, "b", count=18)
    await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(6, None)])
    await store.mark_peer_dropped(stream=STREAM, epoch=1, ranges=[(2, 4)])
    await store.drop_unstored(stream=STREAM, chunk_ids=ids(old[6:] + new[2:4]))
    # The pending block may come back with chunks of both ranges: the tombstones stay.
    await store.sweep(stream=STREAM)
    assert await kept_tombstones(redis_url) == ["0:6::k", "1:2:4:k"]
    assert await store.refuse_block(stream=STREAM, block_id=block.block_id) == (12, 6)
    # Refused: both ends agree those chunks are gone, and nothing else can bring one back.
    assert await kept_tombstones(redis_url) == []
    await assert_counts_add_up(store)


async def test_kept_tombstones_go_once_the_buffer_has_none_of_their_chunks(
    store: KeyStore, redis_url: str
) -> None:
    await on_epoch(store, 0)
    old = await ingest(store, 0, 0, 10)
    await on_epoch(store, 1)
    new = await ingest(store, 1, 0, 4)
    spans = await store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(6, None)])
    assert spans == [(6, 10)]
    # Marked, but its chunks are still in the buffer until the notice's drop step.
    await store.sweep(stream=STREAM)
    assert await kept_tombstones(redis_url) == ["0:6::k"]
    assert await store.drop_unstored(stream=STREAM, chunk_ids=ids(old[6:])) == 4
    await store.sweep(stream=STREAM)
    assert await kept_tombstones(redis_url) == []
    # What the buffer holds is unchanged by forgetting them.
    again = await reserve(store, "b", count=10)
    assert sorted(c.chunk_id for k in again.keys for c in k.chunks) == sorted(ids(old[:6] + new))
    await assert_counts_add_up(store)
