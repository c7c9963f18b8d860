"""The KRP between two real nodes (real stores, mutual TLS): what the peer answers decides what
happens to a block: a conflict fails the request at once with its reason, chunks the peer has
not stored yet are tried again until it has, chunks it never will have are dropped and others
used; and a master node that dies after the peer held its block gets the peer to give the keys
back when it comes back, exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from controllers.delivery.api import KeyConflict
from controllers.delivery.messages import BlockKeyRef, ChunkRef, ReserveBlock
from controllers.delivery.peer import KrpPeers
from tests.unit.delivery.conftest import CAPACITY, Pair, db
from tests.unit.delivery.harness import STREAM, feed, join, start_node
from tests.waiting import eventually_async


async def test_a_real_conflict_fails_at_once_with_its_reason(pair: Pair) -> None:
    # node-b took the oldest chunks into a block of its own just as node-a chose them.
    await pair.b.store.reserve_block(
        stream=STREAM,
        block_id=str(uuid.uuid4()),
        owner="bob/alice",
        size_bits=256,
        count=3000 // 100,
        from_newest=False,
        lease_ms=60_000,
        pending_ms=60_000,
    )
    started = time.monotonic()
    with pytest.raises(KeyConflict, match=r"holds .* for another block"):
        await pair.a.delivery.get_keys(
            request_id="r",
            master_sae_id="alice",
            slave_sae_id="bob",
            number=1,
            size_bits=256,
            timeout=20,
        )
    assert time.monotonic() - started < 5, "the conflict was retried instead of failing"
    # node-a dropped the chunks in conflict; the rest of its block went back.
    counts = await pair.a.store.counts(stream=STREAM)
    assert counts.dropped == 30
    assert counts.pooled == 0
    # A new request uses other chunks.
    keys = await pair.a.delivery.get_keys(
        request_id="r2",
        master_sae_id="alice",
        slave_sae_id="bob",
        number=1,
        size_bits=256,
        timeout=10,
    )
    assert len(keys) == 1


async def test_chunks_not_stored_yet_on_the_peer_are_tried_again_until_they_are(
    pair: Pair,
) -> None:
    # node-b (the higher ID) draws from the newest end: chunks node-a's QKDM has not stored yet.
    await feed([pair.b], 2000, 50)

    async def late_qkdm() -> None:
        await asyncio.sleep(0.4)
        await feed([pair.a], 2000, 50)

    catch_up = asyncio.create_task(late_qkdm())
    started = time.monotonic()
    keys = await pair.b.delivery.get_keys(
        request_id="r",
        master_sae_id="bob",
        slave_sae_id="alice",
        number=5,
        size_bits=256,
        timeout=10,
    )
    await catch_up
    assert time.monotonic() - started >= 0.4
    got = await pair.a.delivery.get_keys_with_ids(
        slave_sae_id="alice", master_sae_id="bob", key_ids=[k.key_id for k in keys]
    )
    assert [k.material for k in got] == [k.material for k in keys]
    assert (await pair.b.store.counts(stream=STREAM)).dropped == 0


async def test_chunks_the_peer_never_stored_are_dropped_and_others_used(pair: Pair) -> None:
    await feed([pair.b], 2000, 50)
    # node-a's QKDM found those expired on the device and went past them.
    await pair.a.store.set_ingest_cursor(stream=STREAM, cursor=2050)
    keys = await pair.b.delivery.get_keys(
        request_id="r",
        master_sae_id="bob",
        slave_sae_id="alice",
        number=5,
        size_bits=256,
        timeout=10,
    )
    assert len(keys) == 5

    async def agree() -> bool:
        a = await pair.a.store.counts(stream=STREAM)
        b = await pair.b.store.counts(stream=STREAM)
        # The 5 served keys wait on node-a for alice; the pool is held on both ends alike.
        return b.dropped == 50 and a.available == b.available and a.mirrored == b.pooled + 5

    # Both ends hold the same chunks again: the orphans are gone at node-b (from the refusal,
    # and from node-a's drop notice, whichever came first).
    await eventually_async(agree, timeout=10, what="node-b dropped what node-a never had")


async def test_the_peer_gives_a_dead_masters_block_back_when_it_returns_exactly_once(
    pair: Pair, redis_url: str
) -> None:
    a, b = pair.a, pair.b
    block = await a.store.reserve_block(
        stream=STREAM,
        block_id=str(uuid.uuid4()),
        owner="alice/bob",
        size_bits=256,
        count=40,
        from_newest=False,
        lease_ms=a.settings.lease_ms,
        pending_ms=int(a.settings.agree_seconds * 1000),
    )
    message = ReserveBlock(
        block_id=block.block_id,
        stream=STREAM,
        master_sae="alice",
        slave_sae="bob",
        size_bits=256,
        lease_ms=a.settings.lease_ms,
        keys=tuple(
            BlockKeyRef(
                key_id=k.key_id,
                chunks=tuple(
                    ChunkRef(id=c.chunk_id, index=c.index, epoch=c.epoch) for c in k.chunks
                ),
            )
            for k in block.keys
        ),
    )
    await KrpPeers(a.clients).reserve("node-b", message)
    assert (await b.store.counts(stream=STREAM)).mirrored == 40
    # node-a dies before it heard the answer; it comes back on the same store and address.
    port = a.server.port
    await a.stop()
    pair.started.remove(a)
    a = await start_node(
        "node-a", db(redis_url, 4), a.settings, capacity=CAPACITY, ca=a.ca, port=port
    )
    pair.started.append(a)
    await join(a, b)

    async def back() -> bool:
        ca = await a.store.counts(stream=STREAM)
        cb = await b.store.counts(stream=STREAM)
        return ca.reserved == 0 and cb.reserved == 0

    await eventually_async(back, timeout=20, what="the block given back on both nodes")
    for node in (a, b):
        counts = await node.store.counts(stream=STREAM)
        assert (counts.available, counts.dropped, counts.consumed) == (2000, 0, 0)
