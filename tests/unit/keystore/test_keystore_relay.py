"""The key relay's store steps (``relay.lua``): at a relay's destination the held pad keys
become the relayed keys (``open_relayed``) and, once committed, keys held for the slave SAE
(``deliver_relayed``); anywhere, an aborted relay's hold is dropped with a notice for the peer
(``drop_hold``) and the relay is remembered as aborted (``relay_aborted``). A relay message
reads what it names first (``relay_view``) and writes its steps in one ``batch``. The counters
add up at every step."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from controllers.keystore import (
    BlockConflictError,
    Key,
    KeyStore,
    Notice,
    UnknownKeysError,
)
from tests.unit.keystore.helpers import OWNER, STREAM, agree, assert_counts_add_up, indexed_chunks

RELAY = str(uuid.uuid4())


@pytest.fixture
async def held(store: KeyStore, peer_store: KeyStore) -> list[Key]:
    """Three keys of 256 bits (two 16-byte chunks each) held on ``peer_store`` for OWNER, moved
    into the relay's hold there, as the destination claims its pads."""
    chunks = indexed_chunks(uuid.UUID(int=9), 0, 50)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    block = await agree(store, peer_store, str(uuid.uuid4()), count=3, size_bits=256)
    keys = await peer_store.claim(
        stream=STREAM, owner=OWNER, key_ids=block.key_ids, hold_id=RELAY, hold_ms=60_000
    )
    return sorted(keys, key=lambda k: k.key_id)


def relayed(n: int) -> list[Key]:
    return [Key(key_id=str(uuid.uuid4()), size_bits=256, material=os.urandom(32)) for _ in range(n)]


async def test_opened_pads_become_the_relayed_keys_and_deliver_makes_them_claimable(
    peer_store: KeyStore, held: list[Key]
) -> None:
    new = relayed(2)
    before = await peer_store.counts(stream=STREAM)
    opened = await peer_store.open_relayed(
        stream=STREAM,
        hold_id=RELAY,
        owner=OWNER,
        tag="ab12",
        consumed=[held[2].key_id],
        relayed=[(held[0].key_id, new[0]), (held[1].key_id, new[1])],
    )
    assert opened is None
    hold = await peer_store.get_hold(stream=STREAM, hold_id=RELAY)
    assert hold is not None
    assert {k.key_id: k.material for k in hold.keys} == {k.key_id: k.material for k in new}
    after = await peer_store.counts(stream=STREAM)
    assert after.consumed - before.consumed == 2  # the tag key's two chunks
    await assert_counts_add_up(peer_store)
    # Opened again (a retry of the same message): nothing changes, the tag is told.
    again = await peer_store.open_relayed(
        stream=STREAM, hold_id=RELAY, owner=OWNER, tag="cd34", consumed=(), relayed=()
    )
    assert again == "ab12"
    # Not claimable by the slave until delivered.
    with pytest.raises(UnknownKeysError):
        await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[new[0].key_id])
    assert await peer_store.deliver_relayed(stream=STREAM, hold_id=RELAY, lease_ms=60_000) == 2
    assert await peer_store.deliver_relayed(stream=STREAM, hold_id=RELAY, lease_ms=60_000) == 0
    assert (await peer_store.counts(stream=STREAM)).holding == 0
    got = await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[k.key_id for k in new])
    assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in new}
    await assert_counts_add_up(peer_store)
    # Each once; the pads' own IDs are gone.
    with pytest.raises(UnknownKeysError):
        await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[new[0].key_id])
    with pytest.raises(UnknownKeysError):
        await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[held[0].key_id])


async def test_open_refuses_keys_not_in_the_hold_or_ids_in_use_and_changes_nothing(
    peer_store: KeyStore, held: list[Key]
) -> None:
    before = await peer_store.counts(stream=STREAM)
    with pytest.raises(UnknownKeysError):
        await peer_store.open_relayed(
            stream=STREAM,
            hold_id=RELAY,
            owner=OWNER,
            tag="t",
            consumed=[],
            relayed=[(str(uuid.uuid4()), relayed(1)[0])],
        )
    # A relayed key ID that names a key of this store already.
    clash = Key(key_id=held[1].key_id, size_bits=256, material=os.urandom(32))
    with pytest.raises(BlockConflictError):
        await peer_store.open_relayed(
            stream=STREAM,
            hold_id=RELAY,
            owner=OWNER,
            tag="t",
            consumed=[],
            relayed=[(held[0].key_id, clash)],
        )
    with pytest.raises(UnknownKeysError):
        await peer_store.open_relayed(
            stream=STREAM,
            hold_id=RELAY,
            owner="someone/else",
            tag="t",
            consumed=[],
            relayed=[(held[0].key_id, relayed(1)[0])],
        )
    assert await peer_store.counts(stream=STREAM) == before
    hold = await peer_store.get_hold(stream=STREAM, hold_id=RELAY)
    assert hold is not None
    assert sorted(k.key_id for k in hold.keys) == [k.key_id for k in held]


async def test_an_aborted_relay_drops_its_hold_queues_one_notice_and_is_remembered(
    peer_store: KeyStore, held: list[Key]
) -> None:
    assert not await peer_store.relay_aborted(stream=STREAM, hold_id=RELAY)
    notice = Notice(message_id=f"ab:{RELAY}", kind="relay_abort", payload={"x": 1}, valid_ms=1000)
    before = await peer_store.counts(stream=STREAM)
    assert await peer_store.drop_hold(stream=STREAM, hold_id=RELAY, notice=notice) == 3
    assert await peer_store.drop_hold(stream=STREAM, hold_id=RELAY, notice=notice) == 0
    after = await peer_store.counts(stream=STREAM)
    assert (after.dropped - before.dropped, after.holding) == (6, 0)
    await assert_counts_add_up(peer_store)
    assert await peer_store.relay_aborted(stream=STREAM, hold_id=RELAY)
    due = await peer_store.outbox_due(stream=STREAM)
    assert [(m.message_id, m.kind, m.body["message"]) for m in due] == [
        (f"ab:{RELAY}", "relay_abort", {"x": 1})
    ]
    # The dropped keys are nowhere any more.
    with pytest.raises(UnknownKeysError):
        await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=[held[0].key_id])


@pytest.fixture
async def agreed(store: KeyStore, peer_store: KeyStore) -> list[str]:
    """Three keys of 256 bits held on ``peer_store`` for OWNER (an agreed block), not claimed."""
    chunks = indexed_chunks(uuid.UUID(int=9), 0, 50)
    for s in (store, peer_store):
        await s.add_chunks(stream=STREAM, chunks=chunks, first_index=0)
    block = await agree(store, peer_store, str(uuid.uuid4()), count=3, size_bits=256)
    return sorted(block.key_ids)


async def test_a_relay_view_reads_what_a_message_finds_and_changes_nothing(
    peer_store: KeyStore, agreed: list[str]
) -> None:
    before = await peer_store.counts(stream=STREAM)
    free = await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=agreed)
    assert (free.aborted, free.held, free.tag) == (False, False, None)
    assert sorted(k.key_id for k in free.keys) == agreed
    # Keys not held for the pair (another pair, or an unknown key): refused as claim would.
    with pytest.raises(UnknownKeysError):
        await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner="x/y", key_ids=agreed)
    with pytest.raises(UnknownKeysError):
        await peer_store.relay_view(
            stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=[*agreed, str(uuid.uuid4())]
        )
    assert await peer_store.counts(stream=STREAM) == before
    claimed = await peer_store.claim(
        stream=STREAM, owner=OWNER, key_ids=agreed, hold_id=RELAY, hold_ms=60_000
    )
    # The same material as the claim moved into the hold, found in the hold now.
    held = await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=agreed)
    assert (held.held, held.tag) == (True, None)
    assert {k.key_id: k.material for k in held.keys} == {k.key_id: k.material for k in free.keys}
    assert {k.key_id: k.material for k in claimed} == {k.key_id: k.material for k in free.keys}
    with pytest.raises(BlockConflictError):
        await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner="x/y", key_ids=agreed)
    await peer_store.open_relayed(
        stream=STREAM,
        hold_id=RELAY,
        owner=OWNER,
        tag="ab12",
        consumed=[agreed[2]],
        relayed=[(agreed[0], relayed(1)[0])],
    )
    opened = await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=agreed)
    assert (opened.held, opened.tag, opened.keys) == (True, "ab12", ())
    await peer_store.drop_hold(stream=STREAM, hold_id=RELAY)
    gone = await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=agreed)
    assert gone.aborted


async def test_a_batch_claims_and_opens_in_one_step_even_after_redis_lost_its_scripts(
    store: KeyStore, peer_store: KeyStore, agreed: list[str], redis_url: str
) -> None:
    # A restarted Redis has no scripts: the batch loads them and is sent again.
    client: Any = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    new = relayed(2)
    batch = peer_store.batch()
    claimed = batch.claim(stream=STREAM, owner=OWNER, key_ids=agreed, hold_id=RELAY, hold_ms=60_000)
    opened = batch.open_relayed(
        stream=STREAM,
        hold_id=RELAY,
        owner=OWNER,
        tag="ab12",
        consumed=[agreed[2]],
        relayed=[(agreed[0], new[0]), (agreed[1], new[1])],
    )
    with pytest.raises(RuntimeError, match="not run yet"):
        claimed.result()
    await batch.run()
    assert sorted(k.key_id for k in claimed.result()) == agreed
    assert opened.result() is None
    hold = await peer_store.get_hold(stream=STREAM, hold_id=RELAY)
    assert hold is not None
    assert {k.key_id: k.material for k in hold.keys} == {k.key_id: k.material for k in new}
    assert await peer_store.streams_holding(hold_id=RELAY) == [STREAM]
    assert await store.streams_holding(hold_id=RELAY) == []
    await assert_counts_add_up(peer_store)
    # A step that fails does so on its own: the claim finds the hold, the open its tag.
    again = peer_store.batch()
    claimed_again = again.claim(
        stream=STREAM, owner="x/y", key_ids=agreed, hold_id=RELAY, hold_ms=60_000
    )
    opened_again = again.open_relayed(
        stream=STREAM, hold_id=RELAY, owner=OWNER, tag="cd34", consumed=(), relayed=()
    )
    await again.run()
    with pytest.raises(BlockConflictError):
        claimed_again.result()
    assert opened_again.result() == "ab12"


async def test_unclaimed_keys_are_held_for_the_pair_again_and_a_retry_claims_them(
    peer_store: KeyStore, agreed: list[str]
) -> None:
    # A repeater claimed what came in, then could not hold pads for the next hop: it gives the
    # keys back and answers 503, and the source's retry (same relay ID) claims them again.
    before = await peer_store.counts(stream=STREAM)
    first = await peer_store.claim(
        stream=STREAM, owner=OWNER, key_ids=agreed, hold_id=RELAY, hold_ms=60_000
    )
    assert await peer_store.unclaim(stream=STREAM, hold_id=RELAY) == 3
    assert await peer_store.unclaim(stream=STREAM, hold_id=RELAY) == 0
    assert await peer_store.counts(stream=STREAM) == before
    assert await peer_store.streams_holding(hold_id=RELAY) == []
    view = await peer_store.relay_view(stream=STREAM, hold_id=RELAY, owner=OWNER, key_ids=agreed)
    assert (view.aborted, view.held) == (False, False)
    again = await peer_store.claim(
        stream=STREAM, owner=OWNER, key_ids=agreed, hold_id=RELAY, hold_ms=60_000
    )
    assert {k.key_id: k.material for k in again} == {k.key_id: k.material for k in first}
    await assert_counts_add_up(peer_store)
    # Given back once more, they are the slave's to fetch as any keys held for the pair.
    await peer_store.unclaim(stream=STREAM, hold_id=RELAY)
    got = await peer_store.claim(stream=STREAM, owner=OWNER, key_ids=agreed)
    assert {k.key_id for k in got} == set(agreed)
    await assert_counts_add_up(peer_store)
