"""Pools of keys agreed per SAE pair between two real nodes (real stores, real KRP over mTLS):
serving takes no peer round trip, keys are shared exactly once, pools refill, idle pools give
their keys back, and one busy pair cannot take more than its share."""

from __future__ import annotations

import asyncio

import pytest

from controllers.delivery.api import DeliveredKey, InsufficientKeys, UnknownKeys
from tests.unit.delivery.conftest import CAPACITY, Pair
from tests.unit.delivery.harness import STREAM, register
from tests.waiting import eventually_async


async def enc(
    pair: Pair,
    *,
    master: str = "alice",
    slave: str = "bob",
    number: int = 1,
    size: int = 256,
    timeout: float = 10.0,
) -> list[DeliveredKey]:
    node = pair.a if master in pair.a.saes.ids else pair.b
    return await node.delivery.get_keys(
        request_id="r",
        master_sae_id=master,
        slave_sae_id=slave,
        number=number,
        size_bits=size,
        timeout=timeout,
    )


async def test_concurrent_requests_both_ways_share_no_key_and_each_is_obtainable_once(
    pair: Pair,
) -> None:
    async def one(master: str, slave: str) -> list[DeliveredKey]:
        return await enc(pair, master=master, slave=slave, number=3)

    jobs = [one("alice", "bob") for _ in range(60)] + [one("bob", "alice") for _ in range(60)]
    results = await asyncio.gather(*jobs)
    from_a = [k for r in results[:60] for k in r]
    from_b = [k for r in results[60:] for k in r]
    ids = [k.key_id for k in from_a + from_b]
    assert len(ids) == len(set(ids)) == 360
    assert len({k.material for k in from_a + from_b}) == 360
    # Each master key is obtainable exactly once on the other side, byte for byte.
    got = await pair.b.delivery.get_keys_with_ids(
        slave_sae_id="bob", master_sae_id="alice", key_ids=[k.key_id for k in from_a]
    )
    assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in from_a}
    got = await pair.a.delivery.get_keys_with_ids(
        slave_sae_id="alice", master_sae_id="bob", key_ids=[k.key_id for k in from_b]
    )
    assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in from_b}
    for node, slave, master, keys in (
        (pair.b, "bob", "alice", from_a),
        (pair.a, "alice", "bob", from_b),
    ):
        with pytest.raises(UnknownKeys):
            await node.delivery.get_keys_with_ids(
                slave_sae_id=slave, master_sae_id=master, key_ids=[keys[0].key_id]
            )


async def test_a_served_request_needs_no_peer_round_trip_once_the_pool_is_filled(
    pair: Pair,
) -> None:
    await enc(pair)  # the first request fills the pool
    level = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
    assert level.keys > 0
    # The peer's channel goes away: requests the pool can serve are served all the same.
    await pair.b.server.close()
    for _ in range(min(level.keys, 10)):
        await enc(pair, timeout=0.5)


async def test_a_pool_refills_before_it_runs_dry(pair: Pair) -> None:
    first = await enc(pair)
    assert first
    start = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
    for _ in range(start.keys):
        await enc(pair)

    async def refilled() -> bool:
        level = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
        return level.keys > 0

    await eventually_async(refilled, timeout=10, what="the pool refilled in the background")
    counts = await pair.b.store.counts(stream=STREAM)
    assert counts.mirrored >= start.keys + 1  # the peer holds what was served, and the refill


async def test_a_pool_drained_by_holds_refills_before_it_runs_dry(pair: Pair) -> None:
    # KeyRequests and relays hold their keys (written somewhere first, then committed): a
    # pool they drain must be topped up in the background like one drained by enc_keys.
    pool = await pair.a.delivery.pool_for(
        master_sae_id="alice", slave_sae_id="bob", number=1, size_bits=256
    )
    floor = pair.a.settings.pool_min_keys

    async def level() -> int:
        found = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
        return found.keys

    await pair.a.delivery.hold(pool=pool, number=1, hold_id="first", timeout=5)

    async def settled() -> bool:
        # The refill the first hold started (the pool was empty) has finished: whatever
        # refills the pool from here on was started by the next hold.
        refill = pair.a.pools._pools[pool].refill
        return refill is None or refill.done()

    await eventually_async(settled, timeout=10, what="the first refill finished")
    # One hold takes the pool below half its target (at least the floor) in one step, so no
    # background top-up can keep pace with it, however loaded the machine.
    start = await level()
    left = floor // 2 - 1
    await pair.a.delivery.hold(pool=pool, number=start - left, hold_id="second", timeout=5)

    async def refilled() -> bool:
        return await level() >= min(start, floor)

    await eventually_async(refilled, timeout=10, what=f"the pool refilled from {left} keys")


async def test_a_request_that_gave_up_does_not_stall_the_next_ones_of_its_pool(
    pair: Pair,
) -> None:
    # 100 keys of 8192 bits need 3,200 chunks: fewer than the buffer holds (so the request
    # waits for them), more than the stream has now (2,000), so it gives up at its deadline.
    with pytest.raises(InsufficientKeys):
        await enc(pair, number=100, size=8192, timeout=1.0)
    # A request the stream can serve is served: the refill no longer aims at the 100.
    assert len(await enc(pair, number=1, size=8192, timeout=5.0)) == 1
    level = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=8192)
    assert level.keys < 100


async def test_an_idle_pool_gives_its_keys_back_on_both_nodes(pair: Pair) -> None:
    await enc(pair)
    served = 1
    before_b = await pair.b.store.counts(stream=STREAM)
    assert before_b.mirrored > served
    # Nobody asks for a while: the pool goes back (its keys through the peer first).
    pair.a.pools._settings = pair.a.settings.__class__(
        **{**pair.a.settings.__dict__, "pool_idle_seconds": 0.2}
    )

    async def returned() -> bool:
        a = await pair.a.store.counts(stream=STREAM)
        b = await pair.b.store.counts(stream=STREAM)
        return a.pooled == 0 and b.mirrored == served and a.available == b.available

    await eventually_async(returned, timeout=15, what="the idle pool given back")
    a = await pair.a.store.counts(stream=STREAM)
    assert (a.available, a.consumed) == (2000 - served, served)


async def test_one_busy_pair_cannot_take_more_than_its_share(pair: Pair) -> None:
    register(pair.a, "carol", [pair.b])
    share = int(pair.a.settings.pool_share * CAPACITY)
    # alice asks a lot, all the time: her pool grows with her demand, up to the share.
    highest = 0
    for _ in range(25):
        await asyncio.gather(*(enc(pair, number=10) for _ in range(4)))
        level = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
        highest = max(highest, level.chunks)
        assert level.chunks <= share
    assert highest > pair.a.settings.pool_min_keys  # it did grow with her demand
    # carol, another pair on the same stream, is served at once.
    assert len(await enc(pair, master="carol", number=5, timeout=5)) == 5
