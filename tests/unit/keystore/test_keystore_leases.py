"""Every block has a deadline, on both nodes, and ``sweep`` acts on it: nothing is held forever,
a master's unserved keys go back only through the peer, and what may have been delivered never
returns to the buffer. Deadlines are short here (the Redis clock decides); the tests wait on
the store's state, not on time."""

from __future__ import annotations

import uuid

import pytest

from controllers.keystore import (
    InsufficientKeysError,
    KeyStore,
    Notice,
    OutboxMessage,
    UnknownKeysError,
)
from tests.unit.keystore.helpers import (
    OWNER,
    STREAM,
    accept,
    agree,
    assert_counts_add_up,
    indexed_chunks,
    reserve,
)
from tests.waiting import eventually_async

SHORT_MS = 150


@pytest.fixture
async def both(store: KeyStore, peer_store: KeyStore) -> tuple[KeyStore, KeyStore]:
    chunks = indexed_chunks(uuid.UUID(int=9), 0, 50)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    return store, peer_store


async def swept_until(store: KeyStore, done: object) -> None:
    async def check() -> bool:
        await store.sweep(stream=STREAM)
        counts = await store.counts(stream=STREAM)
        return bool(done(counts))  # type: ignore[operator]

    await eventually_async(check, timeout=10, what="the sweeper's work")


async def test_a_block_whose_agreement_takes_too_long_is_given_back_through_the_peer(
    store: KeyStore,
) -> None:
    await store.add_chunks(stream=STREAM, chunks=indexed_chunks(uuid.uuid4(), 0, 5), first_index=0)
    await store.reserve_block(
        stream=STREAM,
        block_id="b1",
        owner=OWNER,
        size_bits=128,
        count=5,
        from_newest=False,
        lease_ms=60_000,
        pending_ms=SHORT_MS,
    )

    async def released() -> list[OutboxMessage]:
        await store.sweep(stream=STREAM)
        return await store.outbox_due(stream=STREAM)

    [message] = await eventually_async(released, timeout=10, what="a release message")
    counts = await store.counts(stream=STREAM)
    assert (counts.pooled, counts.available) == (5, 0)
    assert (message.kind, message.body["block"], len(message.body["keys"])) == ("release", "b1", 5)
    # An answer that comes after that is too late to serve the block.
    with pytest.raises(Exception, match=r"not exist .* in the state asked for"):
        await store.activate_block(stream=STREAM, block_id="b1", serve_ms=60_000)


async def test_a_block_past_its_serve_deadline_serves_no_more_and_gives_the_rest_back(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await agree(store, peer, "b1", count=10, serve_ms=400)
    served = await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=3)

    async def stopped() -> bool:
        level = await store.pool_level(stream=STREAM, owner=OWNER, size_bits=128)
        return level.keys == 0

    await eventually_async(stopped, timeout=10, what="the block stops serving")
    with pytest.raises(InsufficientKeysError):
        await store.take(stream=STREAM, owner=OWNER, size_bits=128, count=1)
    [message] = await store.outbox_due(stream=STREAM)
    listed = {k[0] for k in message.body["keys"]}
    assert listed == set(block.key_ids) - {k.key_id for k in served.keys}
    answer = await peer.give_back(
        stream=STREAM, owner=OWNER, keys=[(k[0], k[1:]) for k in message.body["keys"]]
    )
    await store.finish_release(stream=STREAM, block_id="b1", gone=answer.gone)
    for s in (store, peer):
        assert (await s.counts(stream=STREAM)).available == 47
        await assert_counts_add_up(s)


async def test_a_master_block_whose_peer_never_answers_the_release_is_dropped_after_the_lease(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, _ = both
    await store.reserve_block(
        stream=STREAM,
        block_id="b1",
        owner=OWNER,
        size_bits=128,
        count=4,
        from_newest=False,
        lease_ms=SHORT_MS,
        pending_ms=SHORT_MS,
    )
    # Pending too long -> releasing; no answer within the peer's lease -> dropped: the peer's
    # copies are gone by then, so ours must never serve or return.
    await swept_until(store, lambda c: c.dropped == 4)
    counts = await store.counts(stream=STREAM)
    assert (counts.available, counts.pooled) == (46, 0)
    assert await store.outbox_due(stream=STREAM) == []
    await assert_counts_add_up(store)


async def test_keys_held_for_a_slave_are_dropped_after_their_lease_on_the_peer(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=6)
    await accept(peer, block, lease_ms=SHORT_MS)
    await swept_until(peer, lambda c: c.mirrored == 0)
    with pytest.raises(UnknownKeysError):
        await peer.claim(stream=STREAM, owner=OWNER, key_ids=list(block.key_ids[:1]))
    counts = await peer.counts(stream=STREAM)
    assert (counts.available, counts.dropped) == (44, 6)
    await assert_counts_add_up(peer)


async def test_an_expired_hold_is_dropped_and_its_commit_still_hands_over(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=5)
    hold = await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=128, count=2, hold_ms=SHORT_MS
    )
    await swept_until(store, lambda c: c.holding == 0)
    counts = await store.counts(stream=STREAM)
    assert (counts.dropped, counts.pooled) == (2, 3)
    # The request may have written the keys before it was stopped: they are never served again,
    # and a late commit still tells the peer, which holds its copies for the slave.
    notice = Notice(message_id="ho:req", kind="handover", payload={"n": 1}, valid_ms=60_000)
    await store.commit_hold(stream=STREAM, hold_id="req", notice=notice)
    assert [m.message_id for m in await store.outbox_due(stream=STREAM)] == ["ho:req"]
    assert len(await peer.claim(stream=STREAM, owner=OWNER, key_ids=list(hold.key_ids))) == 2


async def test_a_slave_hold_never_outlives_the_keys_it_took(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    block = await reserve(store, "b1", count=3)
    await accept(peer, block, lease_ms=SHORT_MS * 2)
    await peer.claim(
        stream=STREAM,
        owner=OWNER,
        key_ids=list(block.key_ids),
        hold_id="slave",
        hold_ms=60_000,
    )
    await swept_until(peer, lambda c: c.holding == 0 and c.dropped == 3)


async def test_a_message_put_off_is_not_due_until_later(store: KeyStore) -> None:
    await store.add_chunks(stream=STREAM, chunks=indexed_chunks(uuid.uuid4(), 5, 1), first_index=5)
    [message] = await store.outbox_due(stream=STREAM)
    await store.outbox_later(stream=STREAM, message_id=message.message_id, delay_ms=SHORT_MS)
    assert await store.outbox_due(stream=STREAM) == []
    again = await eventually_async(lambda: store.outbox_due(stream=STREAM), timeout=10)
    assert again == [message]
    await store.outbox_done(stream=STREAM, message_id=message.message_id)
    assert await store.outbox_due(stream=STREAM) == []


async def test_a_sweep_counts_the_keys_held_for_a_slave_that_expired_and_nothing_else(
    both: tuple[KeyStore, KeyStore],
) -> None:
    store, peer = both
    await agree(store, peer, "b1", count=3)  # agreed and held: not due
    block = await reserve(store, "b2", count=6)
    await accept(peer, block, lease_ms=SHORT_MS)
    await store.hold(
        stream=STREAM, hold_id="req", owner=OWNER, size_bits=128, count=2, hold_ms=SHORT_MS
    )
    expired = {"peer": 0, "master": 0}

    async def all_expired() -> bool:
        expired["peer"] += (await peer.sweep(stream=STREAM)).expired_held
        expired["master"] += (await store.sweep(stream=STREAM)).expired_held
        return (await store.counts(stream=STREAM)).holding == 0 and expired["peer"] >= 6

    await eventually_async(all_expired, timeout=10, what="the held keys expired")
    # Exactly the six keys held for the slave; the master's expired hold is not one of them.
    assert expired == {"peer": 6, "master": 0}
