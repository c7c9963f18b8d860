"""The metrics key delivery records at its boundaries, on real nodes (real stores, real KRP and
relay over mTLS): blocks agreed on the master's node match the keys the peer holds for its
slave SAE, the pool gauge reads the store, an idle pool's give-back is counted, and a relay
counts its keys once per role on the path. The registry is the process's own (both nodes of a
test share it), so each test compares values before and after, by the labels it owns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controllers import metrics
from tests.unit.delivery.conftest import Line, Pair
from tests.unit.delivery.harness import STREAM
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
