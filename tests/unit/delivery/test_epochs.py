"""Key delivery across a change of device key stream (KSID) between two real nodes: when the
QKDMs move the KeyStream to the next KSID of its sequence, indices start at 0 again in the same
store stream. Each end tells the other where it left the old KSID (a drop notice naming it), the
other drops what it holds beyond that, and keys of both KSIDs are delivered alike at both ends.
A drop notice naming a KSID of no epoch of the stream is refused and changes nothing."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from controllers.delivery.messages import DropIndices, IndexRange
from controllers.delivery.peer import KrpPeers, KrpRefused
from controllers.keystore.layout import NAMES, stream_keys
from controllers.qkdm.ids import chunk_id, epoch_ksid
from tests.unit.delivery.conftest import Pair, db
from tests.unit.delivery.harness import KSID, STREAM, Node, feed
from tests.waiting import eventually_async

NEXT = epoch_ksid(KSID, 1)


async def move_on(node: Node) -> None:
    """The node's QKDM opened the next KSID (its device restarted)."""
    await node.store.start_key_stream(stream=STREAM, ksid=NEXT, epoch=1)


async def same_keys(master: Node, slave: Node, master_sae: str, slave_sae: str) -> None:
    keys = await master.delivery.get_keys(
        request_id=str(uuid.uuid4()),
        master_sae_id=master_sae,
        slave_sae_id=slave_sae,
        number=20,
        size_bits=256,
        timeout=20,
    )
    got = await slave.delivery.get_keys_with_ids(
        slave_sae_id=slave_sae, master_sae_id=master_sae, key_ids=[k.key_id for k in keys]
    )
    assert [k.material for k in got] == [k.material for k in keys]


async def test_after_a_ksid_change_each_end_drops_what_the_other_never_stored_and_keys_flow(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    # Both hold 0..1999 of the base KSID; node-b's QKDM got 100 more before the device
    # restarted. Both move to epoch 1.
    await feed([b], 2000, 100)
    await move_on(a)
    await move_on(b)

    async def agreed() -> bool:
        ca = await a.store.counts(stream=STREAM)
        cb = await b.store.counts(stream=STREAM)
        return cb.dropped == 100 and ca.dropped == 0 and ca.available == cb.available == 2000

    await eventually_async(agreed, timeout=20, what="node-b dropped 2000..2099 of the old KSID")
    # The new KSID's indices start at 0 again; both ends store them beside the old ones.
    await feed([a, b], 0, 1000, ksid=NEXT)
    # node-b (the higher ID) draws from the newest end (the new KSID), node-a from the oldest.
    await same_keys(b, a, "bob", "alice")
    await same_keys(a, b, "alice", "bob")

    async def alike() -> bool:
        # Whatever the pools' background refills are doing: both ends hold the same chunks.
        ca = await a.store.counts(stream=STREAM)
        cb = await b.store.counts(stream=STREAM)
        assert (ca.epoch, ca.cursor) == (cb.epoch, cb.cursor) == (1, 1000)
        assert ca.consumed == cb.consumed == 40
        return (ca.available, ca.pooled, ca.mirrored) == (cb.available, cb.mirrored, cb.pooled)

    await eventually_async(alike, timeout=20, what="both ends hold the same chunks")


async def test_a_drop_notice_drops_only_the_chunks_of_the_ksid_it_names(
    pair: Pair, redis_url: str
) -> None:
    a, b = pair.a, pair.b
    await move_on(a)
    await move_on(b)
    await feed([a, b], 0, 100, ksid=NEXT)
    # node-a skipped 10..19 of the new KSID (say they expired on its device).
    answer = await KrpPeers(a.clients).drop(
        "node-b",
        DropIndices(stream=STREAM, ksid=NEXT, ranges=(IndexRange(start=10, end=20),)),
    )
    assert answer.dropped == 10
    data = stream_keys(STREAM)[NAMES.index("data")]
    async with Redis.from_url(db(redis_url, 5)) as raw:
        new = [bool(await raw.hexists(data, chunk_id(NEXT, i))) for i in range(8, 22)]
        old = [bool(await raw.hexists(data, chunk_id(KSID, i))) for i in range(8, 22)]
    assert new == [True] * 2 + [False] * 10 + [True] * 2
    assert old == [True] * 14  # the same indices of the old KSID stay


async def test_a_drop_notice_for_a_ksid_of_no_epoch_of_the_stream_changes_nothing(
    pair: Pair,
) -> None:
    with pytest.raises(KrpRefused) as refused:
        await KrpPeers(pair.a.clients).drop(
            "node-b",
            DropIndices(
                stream=STREAM, ksid=str(uuid.uuid4()), ranges=(IndexRange(start=0, end=10),)
            ),
        )
    assert (refused.value.status, refused.value.reason) == (409, "Conflict")
    counts = await pair.b.store.counts(stream=STREAM)
    assert (counts.available, counts.dropped) == (2000, 0)
