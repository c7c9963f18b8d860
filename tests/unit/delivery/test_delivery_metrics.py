"""The metrics key delivery records at its boundaries, on real nodes (real stores, real KRP and
relay over mTLS): blocks agreed on the master's node match the keys the peer holds for its
slave SAE, the pool gauge reads the store, an idle pool's give-back is counted, keys held for a
slave SAE that expire unfetched are counted, blocks refused at the held bound are counted and
posted as a SlaveBacklog Event, and a relay counts its keys once per role on the path. The
registry is the process's own (both nodes of a test share it), so each test compares values
before and after, by the labels it owns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from controllers import metrics
from controllers.delivery.api import SlaveBacklog
from controllers.delivery.settings import DeliverySettings
from controllers.events import EventType, Regarding
from tests.unit.delivery.conftest import CAPACITY, Line, Pair, db
from tests.unit.delivery.harness import STREAM, feed, join, register, start_node
from tests.unit.delivery.test_pools import enc
from tests.unit.delivery.test_relay import enc as relay_enc
from tests.unit.delivery.test_relay import fetched, warm
from tests.waiting import eventually_async


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def pools_watched(pair: Pair) -> Iterator[Pair]:
    metrics.watch_pools(pair.a.pools)
    yield pair
    metrics.watch_pools(None)


async def test_keys_agreed_for_a_pool_are_the_keys_the_peer_holds_for_its_slave(
    pools_watched: Pair,
) -> None:
    pair = pools_watched
    agreed = {"peer": "node-b", "master_sae": "alice", "slave_sae": "bob"}
    held = {"peer": "node-a", "master_sae": "alice", "slave_sae": "bob"}
    before = (
        value("qss_pool_blocks_agreed_total", **agreed),
        value("qss_pool_keys_agreed_total", **agreed),
        value("qss_slave_keys_held_total", **held),
    )
    await enc(pair, number=3)

    async def settled() -> bool:
        """The pool's refill (it may still top the pool up) is over: the counts agree."""
        keys = value("qss_pool_keys_agreed_total", **agreed) - before[1]
        level = await pair.a.store.pool_level(stream=STREAM, owner="alice/bob", size_bits=256)
        mirrored = (await pair.b.store.counts(stream=STREAM)).mirrored
        return level.keys == keys - 3 and mirrored == keys  # one chunk per 256-bit key

    await eventually_async(settled, timeout=10, what="the pool settled")
    keys = value("qss_pool_keys_agreed_total", **agreed) - before[1]
    assert value("qss_pool_blocks_agreed_total", **agreed) - before[0] >= 1
    assert keys >= 3
    # What the master's node agreed is exactly what the peer holds for the slave SAE.
    assert value("qss_slave_keys_held_total", **held) - before[2] == keys
    # The pool gauge is read from the store at scrape time: what is left after the three.
    await metrics.refresh()
    assert metrics.POOLS.levels == {("node-b", "alice", "bob"): keys - 3}


async def test_an_idle_pool_given_back_counts_its_keys(pair: Pair) -> None:
    labels = {"peer": "node-b", "master_sae": "alice", "slave_sae": "bob"}
    before = value("qss_pool_keys_given_back_total", **labels)
    agreed = value("qss_pool_keys_agreed_total", **labels)
    await enc(pair)
    pair.a.pools._settings = pair.a.settings.__class__(
        **{**pair.a.settings.__dict__, "pool_idle_seconds": 0.2}
    )

    async def given_back() -> bool:
        return value("qss_pool_keys_given_back_total", **labels) > before

    await eventually_async(given_back, timeout=15, what="the idle pool given back")
    # Everything agreed for the pool but the one key served (a refill may have topped the
    # pool up meanwhile: that counts on both sides).
    pooled = value("qss_pool_keys_agreed_total", **labels) - agreed - 1
    assert pooled > 0
    assert value("qss_pool_keys_given_back_total", **labels) - before == pooled


async def test_a_relay_counts_its_keys_once_per_role_on_the_path(line: Line) -> None:
    await warm(line)
    before = {r: value("qss_relayed_keys_total", role=r) for r in metrics.RELAYED_ROLES}
    aborts = sum(
        s.value
        for m in metrics.REGISTRY.collect()
        if m.name == "qss_relay_aborts"
        for s in m.samples
        if s.name == "qss_relay_aborts_total"
    )
    keys = await relay_enc(line, number=5)
    await fetched(line, keys)
    # Three nodes in one process: each role is one of them, and each counts the five keys.
    for role in metrics.RELAYED_ROLES:
        assert value("qss_relayed_keys_total", role=role) - before[role] == 5, role
    assert aborts == sum(
        s.value
        for m in metrics.REGISTRY.collect()
        if m.name == "qss_relay_aborts"
        for s in m.samples
        if s.name == "qss_relay_aborts_total"
    )


async def test_keys_held_for_a_slave_that_expire_unfetched_are_counted(pair: Pair) -> None:
    # Short leases on the blocks node-a agrees from now on: node-b drops its copies soon.
    pair.a.pools._settings = replace(
        pair.a.settings, serve_seconds=0.5, hold_seconds=0.5, fetch_window_seconds=0.5
    )
    # node-a's upkeep would release its blocks through node-b once they pass their serve
    # deadline (0.5 s), and node-b would then drop its copies as released, not expired: under
    # load that came before the close below. Without it, node-b's copies can only expire.
    await pair.a.upkeep.aclose()
    agreed = {"peer": "node-b", "master_sae": "alice", "slave_sae": "bob"}
    before_agreed = value("qss_pool_keys_agreed_total", **agreed)
    before_expired = value("qss_slave_keys_expired_total", stream=STREAM)
    await enc(pair)

    async def settled() -> bool:
        keys = value("qss_pool_keys_agreed_total", **agreed) - before_agreed
        return (await pair.b.store.counts(stream=STREAM)).mirrored == keys

    await eventually_async(settled, timeout=10, what="node-b holds what node-a agreed")
    agreed_keys = value("qss_pool_keys_agreed_total", **agreed) - before_agreed
    # No further blocks: node-b's server is gone.
    await pair.b.server.close()

    async def expired() -> bool:
        return (await pair.b.store.counts(stream=STREAM)).mirrored == 0

    await eventually_async(expired, timeout=15, what="node-b's held keys expired")
    # Every key node-b held for bob, the one alice got included (bob never fetched it).
    assert value("qss_slave_keys_expired_total", stream=STREAM) - before_expired == agreed_keys


@dataclass
class RecordedEvents:
    """Test double of the Event recorder: keeps what it was asked to post."""

    posted: list[tuple[Regarding, str, str, str]] = field(default_factory=list)

    def record(
        self,
        regarding: Regarding,
        *,
        type: EventType,
        reason: str,
        note: str,
        action: str = "Reconcile",
    ) -> None:
        self.posted.append((regarding, type, reason, note))


async def test_blocks_refused_at_the_held_bound_are_counted_and_a_SlaveBacklog_event(
    redis_url: str, settings: DeliverySettings
) -> None:
    # node-b may hold 40 chunks for slave SAEs (1% of its 4,000): a request for 50 keys needs
    # a block the bound refuses.
    events = RecordedEvents()
    a = await start_node("node-a", db(redis_url, 4), settings, capacity=CAPACITY)
    b = await start_node(
        "node-b",
        db(redis_url, 5),
        replace(settings, held_factor=0.01),
        capacity=CAPACITY,
        events=events,
    )
    try:
        await join(a, b)
        register(a, "alice", [b])
        register(b, "bob", [a])
        await feed([a, b], 0, 2000)
        before = value("qss_slave_backlog_refusals_total", stream=STREAM)
        with pytest.raises(SlaveBacklog):
            await a.delivery.get_keys(
                request_id="r",
                master_sae_id="alice",
                slave_sae_id="bob",
                number=50,
                size_bits=256,
                timeout=5.0,
            )
        refusals = value("qss_slave_backlog_refusals_total", stream=STREAM) - before
        assert refusals >= 1
        backlog = [e for e in events.posted if e[2] == "SlaveBacklog"]
        assert len(backlog) == refusals  # the recorder aggregates them into one Event
        regarding, kind, _, note = backlog[0]
        assert (regarding.kind, regarding.name, kind) == ("KeyStream", STREAM, "Warning")
        assert "node-a" in note
        assert (await b.store.counts(stream=STREAM)).mirrored == 0  # nothing held
    finally:
        for node in (a, b):
            await node.stop()
