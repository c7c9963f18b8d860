"""Pool blocks between a master node's store and its peer's: reserving, the peer's answer
(held, not yet, never, taken), serving and holding, the slave side by ID, giving back."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from controllers.keystore import (
    BlockChunk,
    BlockConflictError,
    BlockKey,
    BlockRefusedError,
    HeldBoundError,
    InsufficientKeysError,
    KeyIdMismatchError,
    KeyStore,
    KeyStoreCorruptError,
    Notice,
    UnknownBlockError,
    UnknownKeysError,
    composed_key_id,
)
from controllers.keystore.layout import stream_keys
from tests.unit.keystore.helpers import (
    OWNER,
    STREAM,
    accept,
    agree,
    assert_counts_add_up,
    chunk_ids_of,
    indexed_chunks,
    make_chunks,
    reserve,
)


@pytest.fixture
async def both(store: KeyStore, peer_store: KeyStore) -> tuple[KeyStore, KeyStore]:
    """Both ends hold chunks 0..99 of one stream, with their device indices."""
    chunks = indexed_chunks(uuid.UUID(int=7), 0, 100)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    return store, peer_store


async def test_block_takes_the_oldest_chunks_and_names_their_indices(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, _ = both
    block = await reserve(store, "b1", count=3)
    assert [c.index for k in block.keys for c in k.chunks] == [0, 1, 2]
    assert (block.state, block.owner, block.size_bits) == ("pending", OWNER, 128)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (97, 3)


async def test_a_pending_block_serves_nothing_until_the_peer_holds_it(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=3)
    with pytest.raises(InsufficientKeysError, match="0 pooled keys available, 1 needed"):
        await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)
    assert await accept(peer, block) is True
    assert await store.activate_block(stream=STREAM, block_id="b1", serve_ms=10_000)
    assert (await store.pool_level(stream=STREAM, owner=OWNER, size_bits=128)).keys == 3


async def test_served_keys_are_obtainable_exactly_once_on_the_peer_with_the_same_bytes(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=10, size_bits=256)  # keys of two chunks each
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=256, count=4)
    assert served.pool_left == 6
    ids = [k.key_id for k in served.keys]
    theirs = await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids)
    assert [k.material for k in theirs] == [k.material for k in served.keys]
    assert all(len(k.material) == 32 for k in theirs)
    with pytest.raises(UnknownKeysError, match=r"4 keys .* not held for 'sae-a/sae-b'"):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids)
    for s in (store, peer):
        await assert_counts_add_up(s)
    assert (await store.counts(stream=STREAM)).consumed == 8
    assert (await peer.counts(stream=STREAM)).consumed == 8


async def test_key_size_between_chunks_uses_whole_chunks_and_truncates_alike(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=1, size_bits=136)
    [mine] = (await store.take(stream=STREAM, owner=OWNER, size_bits=136, count=1)).keys
    [theirs] = await peer.claim(stream=STREAM, owner=OWNER, key_ids=[mine.key_id])
    assert len(mine.material) == 17
    assert mine.material == theirs.material
    assert mine.key_id == composed_key_id(
        [str(uuid.uuid5(uuid.UUID(int=7), str(i))) for i in (0, 1)]
    )


async def test_keys_of_another_pair_are_not_served_on_either_side(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=2)
    with pytest.raises(InsufficientKeysError):
        await store.take(stream=STREAM, owner="sae-a/sae-c", size_bits=128, count=1)
    [key] = (await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)).keys
    with pytest.raises(UnknownKeysError):
        await peer.claim(stream=STREAM, owner="sae-a/sae-c", key_ids=[key.key_id])
    # The whole request is refused when any key is not the pair's: nothing is taken.
    with pytest.raises(UnknownKeysError, match="1 keys"):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=[key.key_id, str(uuid.uuid4())])
    assert len(await peer.claim(stream=STREAM, owner=OWNER, key_ids=[key.key_id])) == 1


async def test_the_peer_says_which_chunks_are_not_yet_never_or_elsewhere_and_changes_nothing(
    store: KeyStore, peer_store: KeyStore
) -> None:
    ksid = uuid.uuid4()
    chunks = indexed_chunks(ksid, 0, 30)
    await store.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    # The peer skipped 5..9 (the device dropped them before its QKDM came), is at 20 now,
    # and holds 0..1 for another block of its own.
    await peer_store.add_chunks(stream=STREAM, chunks=chunks[:5], first_index=0)
    await peer_store.set_ingest_cursor(stream=STREAM, cursor=10)
    await peer_store.add_chunks(stream=STREAM, chunks=chunks[10:20], first_index=10)
    await reserve(peer_store, "theirs", count=2)
    before = await peer_store.counts(stream=STREAM)
    block = await reserve(store, "mine", count=30)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    ids = [c.chunk_id for c in chunks]
    assert set(refused.value.taken) == set(ids[:2])
    assert set(refused.value.never) == set(ids[5:10])
    assert set(refused.value.not_yet) == set(ids[20:])
    assert await peer_store.counts(stream=STREAM) == before
    # The master drops what the peer never will have (and what it holds for another block),
    # and gets the rest back.
    returned, dropped = await store.refuse_block(
        stream=STREAM,
        block_id="mine",
        drop_chunk_ids=[*refused.value.never, *refused.value.taken],
    )
    assert (returned, dropped) == (23, 7)
    await assert_counts_add_up(store)


async def test_the_peer_says_never_for_indices_it_was_told_to_drop(
    store: KeyStore, peer_store: KeyStore
) -> None:
    chunks = indexed_chunks(uuid.uuid4(), 0, 10)
    await store.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    await peer_store.mark_peer_dropped(stream=STREAM, epoch=0, ranges=[(8, 12)])
    block = await reserve(store, "b", count=10)
    with pytest.raises(BlockRefusedError) as refused:
        await accept(peer_store, block)
    assert set(refused.value.never) == {chunks[8].chunk_id, chunks[9].chunk_id}
    assert len(refused.value.not_yet) == 8


async def test_a_retried_block_is_held_once(both: tuple[KeyStore, KeyStore]) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=5)
    again = await reserve(store, "b1", count=5)
    assert {k.key_id for k in again.keys} == set(block.key_ids)
    assert await accept(peer, block) is True
    assert await accept(peer, block) is False
    assert (await peer.counts(stream=STREAM)).mirrored == 5


async def test_a_block_id_reused_for_another_block_is_a_conflict(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=5)
    with pytest.raises(BlockConflictError, match="'b1'"):
        await reserve(store, "b1", count=6)
    await accept(peer, block)
    other = await reserve(store, "b2", count=1)
    with pytest.raises(BlockConflictError):
        await peer.accept_block(
            stream=STREAM,
            block_id="b1",
            owner="sae-x/sae-y",
            size_bits=128,
            keys=other.keys,
            lease_ms=1000,
            held_max=1000,
        )


async def test_a_key_id_that_its_chunks_do_not_compose_is_refused(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=1, size_bits=256)
    forged = BlockKey(key_id=str(uuid.uuid4()), chunks=block.keys[0].chunks)
    with pytest.raises(KeyIdMismatchError):
        await peer.accept_block(
            stream=STREAM,
            block_id="b1",
            owner=OWNER,
            size_bits=256,
            keys=[forged],
            lease_ms=1000,
            held_max=1000,
        )
    short = BlockKey(key_id=block.keys[0].chunks[0].chunk_id, chunks=block.keys[0].chunks[:1])
    with pytest.raises(KeyIdMismatchError, match="2 distinct chunks"):
        await peer.accept_block(
            stream=STREAM,
            block_id="b1",
            owner=OWNER,
            size_bits=256,
            keys=[short],
            lease_ms=1000,
            held_max=1000,
        )
    assert (await peer.counts(stream=STREAM)).mirrored == 0


async def test_the_peer_refuses_a_block_beyond_its_bound_for_slave_keys(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await accept(peer, await reserve(store, "b1", count=6), held_max=10)
    with pytest.raises(HeldBoundError, match=r"holds 6 chunks .* \(bound 10\)"):
        await accept(peer, await reserve(store, "b2", count=5), held_max=10)
    await accept(peer, await reserve(store, "b3", count=4), held_max=10)


async def test_a_hold_is_idempotent_and_commit_queues_the_hand_over_once(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=5)
    hold = await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=128, count=3, hold_ms=10_000
    )
    again = await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=128, count=3, hold_ms=10_000
    )
    assert {k.key_id: k.material for k in again.keys} == {k.key_id: k.material for k in hold.keys}
    looked_up = await store.get_hold(stream=STREAM, hold_id="req")
    assert looked_up is not None
    assert set(looked_up.key_ids) == set(hold.key_ids)
    assert (await store.counts(stream=STREAM)).holding == 3
    notice = Notice(message_id="ho:req", kind="handover", payload={"n": 1}, valid_ms=60_000)
    assert await store.commit_hold(stream=STREAM, hold_id="req", notice=notice) == 3
    assert await store.commit_hold(stream=STREAM, hold_id="req", notice=notice) == 0
    [queued] = await store.outbox_due(stream=STREAM)
    assert queued.message_id == "ho:req"
    assert (queued.kind, queued.body["message"]) == ("handover", {"n": 1})
    assert queued.body["until_ms"] > 0
    await store.outbox_done(stream=STREAM, message_id="ho:req")
    # Committed again after the peer acknowledged it (a request resumed late): no second one.
    await store.commit_hold(stream=STREAM, hold_id="req", notice=notice)
    assert await store.outbox_due(stream=STREAM) == []
    assert await store.get_hold(stream=STREAM, hold_id="req") is None
    counts = await store.counts(stream=STREAM)
    assert (counts.holding, counts.consumed, counts.pooled) == (0, 3, 2)


async def test_a_cancelled_master_hold_goes_back_only_through_the_peer(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=4)
    hold = await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=128, count=2, hold_ms=10_000
    )
    assert await store.cancel_hold(stream=STREAM, hold_id="req") == 2
    # Not servable again, and not in the buffer until the peer has returned its copies.
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled, counts.holding) == (96, 4, 0)
    [message] = await store.outbox_due(stream=STREAM)
    assert message.kind == "release"
    assert {k[0] for k in message.body["keys"]} == set(hold.key_ids)
    answer = await peer.give_back(
        stream=STREAM,
        owner=message.body["owner"],
        keys=[(k[0], k[1:]) for k in message.body["keys"]],
    )
    assert set(answer.returned) == set(hold.key_ids)
    await store.finish_release(stream=STREAM, block_id=message.body["block"], gone=answer.gone)
    for s in (store, peer):
        counts = await s.counts(stream=STREAM)
        assert counts.available == 98
        await assert_counts_add_up(s)


async def test_a_slave_hold_takes_keys_by_id_and_a_cancelled_one_is_held_again(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=4)
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=2)
    ids = [k.key_id for k in served.keys]
    held = await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids, hold_id="slave", hold_ms=5000)
    assert [k.material for k in held] == [k.material for k in served.keys]
    # Held for the request: not obtainable by ID meanwhile.
    with pytest.raises(UnknownKeysError):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids)
    await peer.cancel_hold(stream=STREAM, hold_id="slave")
    assert len(await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids)) == 2


async def test_giving_back_returns_only_the_unserved_keys_on_both_sides(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await agree(store, peer, "b1", count=10)
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=4)
    assert await store.release_pool(stream=STREAM, owner=OWNER, size_bits=128) == 6
    with pytest.raises(InsufficientKeysError):
        await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)
    [message] = await store.outbox_due(stream=STREAM)
    listed = [(k[0], k[1:]) for k in message.body["keys"]]
    answer = await peer.give_back(stream=STREAM, owner=OWNER, keys=listed)
    # A retried release gets the same answer (the keys are in the peer's buffer by then).
    assert await peer.give_back(stream=STREAM, owner=OWNER, keys=listed) == answer
    await store.finish_release(stream=STREAM, block_id="b1", gone=answer.gone)
    assert answer.gone == ()
    # The served keys stay obtainable by the slave, and only they.
    served_ids = [k.key_id for k in served.keys]
    assert len(await peer.claim(stream=STREAM, owner=OWNER, key_ids=served_ids)) == 4
    rest = [k for k in block.key_ids if k not in served_ids]
    with pytest.raises(UnknownKeysError):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=rest[:1])
    for s in (store, peer):
        counts = await s.counts(stream=STREAM)
        assert (counts.available, counts.consumed, counts.reserved) == (96, 4, 0)


async def test_a_key_gone_on_the_peer_is_dropped_on_the_master_too(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await agree(store, peer, "b1", count=3)
    # The slave fetched a key the master never served (key IDs can be guessed).
    await peer.claim(stream=STREAM, owner=OWNER, key_ids=[block.key_ids[0]])
    await store.release_pool(stream=STREAM, owner=OWNER, size_bits=128)
    [message] = await store.outbox_due(stream=STREAM)
    answer = await peer.give_back(
        stream=STREAM, owner=OWNER, keys=[(k[0], k[1:]) for k in message.body["keys"]]
    )
    assert answer.gone == (block.key_ids[0],)
    await store.finish_release(stream=STREAM, block_id="b1", gone=answer.gone)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.dropped) == (99, 1)
    assert await store.outbox_due(stream=STREAM) == []


async def test_a_release_of_a_block_the_peer_never_held_returns_everything(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=3)  # the agreement never reached the peer
    answer = await peer.give_back(
        stream=STREAM, owner=OWNER, keys=[(k.key_id, list(k.chunk_ids)) for k in block.keys]
    )
    assert set(answer.returned) == set(block.key_ids)
    assert (await peer.counts(stream=STREAM)).available == 100


async def test_a_key_whose_chunks_were_removed_from_outside_is_a_clear_corruption_error(
    both: tuple[KeyStore, KeyStore], redis_url: str
) -> None:
    store, peer = both
    block = await agree(store, peer, "b1", count=2)
    ids = [k.key_id for k in block.keys]
    # Someone deletes the keys' chunks from each store's data (layout.NAMES: "data").
    for url in (redis_url, redis_url.rsplit("/", 1)[0] + "/1"):
        async with Redis.from_url(url) as raw:
            assert await raw.hdel(stream_keys(STREAM)[4], *chunk_ids_of(block)) == 2
    # Each way of reading keys says which key is broken and why, never a key error or a crash.
    with pytest.raises(KeyStoreCorruptError, match="changed outside this package") as taken:
        await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)
    assert taken.value.key_id in ids
    with pytest.raises(KeyStoreCorruptError) as held:
        await store.hold(
            stream=STREAM, hold_id="h", owner=OWNER, size_bits=128, count=1, hold_ms=1000
        )
    assert held.value.key_id in ids
    with pytest.raises(KeyStoreCorruptError, match=f"key {ids[0]!r}"):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=ids[:1])


async def test_activating_a_block_that_is_not_pending_fails(store: KeyStore) -> None:
    with pytest.raises(UnknownBlockError):
        await store.activate_block(stream=STREAM, block_id="nope", serve_ms=1000)


async def test_bad_arguments_are_refused_with_a_clear_message(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=make_chunks(4))
    with pytest.raises(ValueError, match="key size 7 bits"):
        await reserve(store, "b", count=1, size_bits=7)
    with pytest.raises(ValueError, match="key count 0"):
        await reserve(store, "b", count=0)
    with pytest.raises(ValueError, match="owner 'a b'"):
        await reserve(store, "b", count=1, owner="a b")
    with pytest.raises(ValueError, match="not a lowercase UUID"):
        await store.claim(stream=STREAM, owner=OWNER, key_ids=["nope"])
    key = str(uuid.uuid4())
    with pytest.raises(ValueError, match="more than once"):
        await store.claim(stream=STREAM, owner=OWNER, key_ids=[key, key])
    block = await reserve(store, "b", count=1)
    assert chunk_ids_of(block)
    with pytest.raises(ValueError, match="at least one key"):
        await store.accept_block(
            stream=STREAM,
            block_id="x",
            owner=OWNER,
            size_bits=128,
            keys=[],
            lease_ms=1,
            held_max=1,
        )
    bad_chunk = BlockKey(key_id="k", chunks=(BlockChunk(chunk_id="k", index=0),))
    with pytest.raises(ValueError, match="not a lowercase UUID"):
        await store.accept_block(
            stream=STREAM,
            block_id="x",
            owner=OWNER,
            size_bits=128,
            keys=[bad_chunk],
            lease_ms=1,
            held_max=1,
        )
