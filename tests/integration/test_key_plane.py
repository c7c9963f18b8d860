"""The key plane end to end: simulated device pairs, a QKDM per end, the Redis key stores, and
the KeyStream/QKDLink status on both clusters, all real processes on a local QSS network."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controllers.keystore import KeyStore
from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork, apply
from tests.integration.helpers import take_on_both

A, B = "node-a", "node-b"
CHUNK_BITS = 256


def _stream(cluster: Cluster, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(cluster.kubectl("get", "keystream", name, "-o", "json").stdout)
    return obj


def _status(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status", {})
    return status


def _status_if(cluster: Cluster, kind: str, name: str, state: str) -> dict[str, Any] | None:
    """The object's status once its state is ``state``, else None (for ``_eventually``)."""
    status = _status(cluster, kind, name)
    return status if status.get("state") == state else None


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == "Ready")


async def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"not met within {timeout}s; last value {last!r}")


async def _both_up(qss_network: QssNetwork, stream: str) -> None:
    for node in (A, B):
        cluster = qss_network.nodes[node].cluster
        await _eventually(partial(_status_if, cluster, "keystream", stream, "Up"))


@pytest.fixture
async def stores(qss_network: QssNetwork) -> AsyncIterator[dict[str, KeyStore]]:
    opened = {n: KeyStore.from_url(qss_network.nodes[n].redis_url) for n in (A, B)}
    yield opened
    for store in opened.values():
        await store.aclose()


async def _drain_and_compare(stores: dict[str, KeyStore], stream: str, count: int) -> None:
    """Take ``count`` keys on A, the same IDs on B, and check the bytes are identical."""
    keys_a, keys_b = await take_on_both(
        stores[A], stores[B], stream=stream, count=count, size_bits=CHUNK_BITS, owner="t/test"
    )
    assert [k.key_id for k in keys_a] == [k.key_id for k in keys_b]
    assert [k.material for k in keys_a] == [k.material for k in keys_b]
    assert len({k.material for k in keys_a}) == count, "a key repeated within the stream"


async def _quiesce(qss_network: QssNetwork, stores: dict[str, KeyStore], stream: str) -> int:
    """Stop key generation (rate 0: what was generated stays readable) and wait until both
    QKDMs have stored all of it: both cursors at the device's count of generated chunks."""
    qss_network.device_fault(stream, rate_bps=0)
    generated = qss_network.device_chunks(stream)

    async def stored_all() -> int | None:
        cursors = [await stores[n].ingest_cursor(stream=stream) for n in (A, B)]
        if cursors != [generated, generated]:
            return None
        a = await stores[A].counts(stream=stream)
        b = await stores[B].counts(stream=stream)
        return a.available if a.available == b.available else None

    result: int = await _eventually(stored_all, timeout=30)
    return result


async def _device_ahead_of_store(
    qss_network: QssNetwork, store: KeyStore, stream: str, by: int
) -> None:
    """Wait until the device holds ``by`` chunks more than the store took (the QKDM had that
    many chances to take more)."""

    async def ahead() -> bool:
        cursor = await store.ingest_cursor(stream=stream)
        return qss_network.device_chunks(stream) >= cursor + by

    await _eventually(ahead)


async def test_both_stores_hold_the_same_chunks_and_status_agrees_with_them(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    pair = qss_network.add_link(A, B, name="same-bytes", rate_bps=64_000)
    await _eventually(
        lambda: _status(qss_network.nodes[A].cluster, "keystream", pair.stream).get("state") == "Up"
    )
    available = await _quiesce(qss_network, stores, pair.stream)
    assert available > 50
    for node in (A, B):
        cluster = qss_network.nodes[node].cluster

        async def agrees(cluster: Cluster = cluster) -> bool:
            status = _status(cluster, "keystream", pair.stream)
            return status.get("availableKeys") == available

        await _eventually(agrees, timeout=10)
    await _drain_and_compare(stores, pair.stream, available)


async def test_fill_stops_at_capacity_and_resumes_when_keys_are_consumed(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    pair = qss_network.add_link(A, B, name="capacity", rate_bps=256_000, capacity=200)
    await _both_up(qss_network, pair.stream)

    async def full() -> bool:
        counts = await stores[A].counts(stream=pair.stream)
        return counts.available == 200

    await _eventually(full)
    await _device_ahead_of_store(qss_network, stores[A], pair.stream, by=100)
    assert (await stores[A].counts(stream=pair.stream)).available == 200, "grew past capacity"

    def filled() -> dict[str, Any] | None:
        status = _status(qss_network.nodes[A].cluster, "keystream", pair.stream)
        return status if status.get("fill") == "100%" else None

    status = await _eventually(filled)
    assert status["state"] == "Up"
    assert _ready(status)["reason"] == "BufferFull"
    before = await stores[A].counts(stream=pair.stream)
    await _drain_and_compare(stores, pair.stream, 120)
    await _eventually(full)
    after = await stores[A].counts(stream=pair.stream)
    assert after.added == before.added + 120
    assert after.consumed == before.consumed + 120


async def test_measured_rate_is_within_ten_percent_of_the_device_rate(
    qss_network: QssNetwork,
) -> None:
    rate = 32_000
    pair = qss_network.add_link(A, B, name="rate", rate_bps=rate)
    await _both_up(qss_network, pair.stream)
    for node in (A, B):
        cluster = qss_network.nodes[node].cluster

        def measured(cluster: Cluster = cluster) -> dict[str, Any] | None:
            # Until the 5 s rate window has filled, the QKDM reports what it has seen so far.
            status = _status(cluster, "keystream", pair.stream)
            return status if abs(status.get("rateBps", 0) - rate) <= 0.1 * rate else None

        status = await _eventually(measured)
        assert status["rate"].endswith("kbit/s")


async def test_device_link_down_takes_stream_and_link_down_and_back_up(
    qss_network: QssNetwork,
) -> None:
    pair = qss_network.add_link(A, B, name="flaky", rate_bps=16_000)
    cluster = qss_network.nodes[A].cluster
    await _both_up(qss_network, pair.stream)
    await _eventually(lambda: _status(cluster, "qkdlink", "flaky").get("state") == "Up")
    qss_network.device_fault(pair.stream, link_down=True)
    status = await _eventually(lambda: _status_if(cluster, "keystream", pair.stream, "Down"))
    assert _ready(status)["reason"] == "LinkDown"
    await _eventually(lambda: _status(cluster, "qkdlink", "flaky").get("state") == "Down")
    for node in (A, B):
        other = qss_network.nodes[node].cluster
        await _eventually(partial(_status_if, other, "keystream", pair.stream, "Down"))
    qss_network.device_fault(pair.stream, link_down=False)
    await _eventually(lambda: _status(cluster, "keystream", pair.stream).get("state") == "Up")
    await _eventually(lambda: _status(cluster, "qkdlink", "flaky").get("state") == "Up")
    reasons = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-A",
            "--field-selector",
            f"involvedObject.name={pair.stream}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert {"StreamDown", "StreamUp"} <= {e["reason"] for e in reasons}


async def test_redis_restart_mid_stream_loses_and_duplicates_nothing(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    pair = qss_network.add_link(A, B, name="redis-restart", rate_bps=64_000)
    node = qss_network.nodes[A]
    await _both_up(qss_network, pair.stream)
    qss_network.stop_redis(node)
    # The fault landed where it meant to: the QKDM saw the store go away.
    status = await _eventually(lambda: _status_if(node.cluster, "keystream", pair.stream, "Down"))
    assert _ready(status)["reason"] == "StoreUnavailable"
    qss_network.start_redis(node)
    await _eventually(
        lambda: _status(node.cluster, "keystream", pair.stream).get("state") == "Up", timeout=40
    )
    available = await _quiesce(qss_network, stores, pair.stream)
    await _drain_and_compare(stores, pair.stream, available)


async def test_qkdm_killed_and_restarted_leaves_the_stores_in_agreement(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    pair = qss_network.add_link(A, B, name="qkdm-restart", rate_bps=64_000)
    await _both_up(qss_network, pair.stream)
    qss_network.kill_qkdm(A, pair.stream)
    # The stream went on without A's QKDM: it comes back to chunks it has to catch up with.
    await _device_ahead_of_store(qss_network, stores[A], pair.stream, by=20)
    qss_network.restart_qkdm(A, pair.stream)
    available = await _quiesce(qss_network, stores, pair.stream)
    assert available > 0
    await _drain_and_compare(stores, pair.stream, available)


async def test_qos_the_device_cannot_meet_is_reported_and_nothing_flows(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    pair = qss_network.add_link(A, B, name="greedy", rate_bps=8_000, min_bps=1_000_000)
    cluster = qss_network.nodes[A].cluster
    status = await _eventually(lambda: _status_if(cluster, "keystream", pair.stream, "Down"))
    ready = _ready(status)
    assert ready["reason"] == "QoSNotMet"
    assert "QoS" in ready["message"]


async def test_device_that_answers_garbage_gets_DeviceGarbage_and_stores_nothing(
    qss_network: QssNetwork, tmp_path: Path
) -> None:
    """A device that does not speak the protocol (a stand-in socket: no real device answers
    garbage on purpose) leaves the stream Down with a reason, and the store untouched."""
    sock_dir = Path(tempfile.mkdtemp(dir="/tmp"))
    path = sock_dir / "garbage.sock"

    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(b"this is not JSON\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer_garbage, path=str(path))
    node = qss_network.nodes[A]
    try:
        for kind, spec in (
            ("QKDLink", {"peerNodeID": B, "peerEndpoint": "https://127.0.0.1:1"}),
            ("KeyStream", {"link": "garbage"}),
        ):
            apply(
                node.cluster,
                {
                    "apiVersion": "qss.dev/v1alpha1",
                    "kind": kind,
                    "metadata": {"name": "garbage"},
                    "spec": spec,
                },
            )
        qss_network.start_qkdm(node, "garbage", path)
        status = await _eventually(lambda: _status_if(node.cluster, "keystream", "garbage", "Down"))
        ready = _ready(status)
        assert ready["reason"] == "DeviceGarbage"
        assert "not valid JSON" in ready["message"]
        async with KeyStore.from_url(node.redis_url) as store:
            counts = await store.counts(stream="garbage")
            assert counts.added == 0
    finally:
        proc = node.qkdms.pop("garbage", None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        server.close()
        await server.wait_closed()


# -- device restarts and QBER aborts: a new key stream, agreed by both ends -------------------


def _ksid(qss_network: QssNetwork, node: str, stream: str) -> str:
    return str(_status(qss_network.nodes[node].cluster, "keystream", stream).get("ksid", ""))


async def _both_up_on_a_new_ksid(qss_network: QssNetwork, stream: str, old: set[str]) -> str:
    """Wait until both ends are Up on one KSID that is none of ``old``; that KSID."""

    def agreed() -> str | None:
        statuses = [_status(qss_network.nodes[n].cluster, "keystream", stream) for n in (A, B)]
        ksids = {s.get("ksid") for s in statuses}
        up = all(s.get("state") == "Up" for s in statuses)
        (ksid,) = ksids if len(ksids) == 1 else (None,)
        return ksid if up and ksid and ksid not in old else None

    ksid: str = await _eventually(agreed, timeout=60)
    return ksid


async def _all_keys_distinct_and_equal(stores: dict[str, KeyStore], stream: str, n: int) -> None:
    """Drain ``n`` keys from both stores: byte-identical by ID, and no key material twice
    (the new key stream reused nothing of the old one)."""
    await _drain_and_compare(stores, stream, n)


async def test_a_device_restart_moves_both_ends_to_a_new_key_stream(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    """Regression (issue 9): after a device restart both QKDMs asked the new device for the
    old cursor, and nothing flowed for as long as the device had been up."""
    pair = qss_network.add_link(A, B, name="dev-restart", rate_bps=64_000)
    await _both_up(qss_network, pair.stream)
    before = _ksid(qss_network, A, pair.stream)
    assert before == _ksid(qss_network, B, pair.stream)
    # Both ends hold the same chunks of the old key stream (a restart mid-run would leave one
    # end a run ahead: a store question, not this test's).
    held = await _quiesce(qss_network, stores, pair.stream)

    qss_network.restart_device(pair.stream)  # at its configured rate again

    after = await _both_up_on_a_new_ksid(qss_network, pair.stream, {before})
    for node in (A, B):
        assert await stores[node].ingest_key_stream(stream=pair.stream) == after
        status = _status(qss_network.nodes[node].cluster, "keystream", pair.stream)
        assert _ready(status)["reason"] == "KeysFlowing", status
    available = await _quiesce(qss_network, stores, pair.stream)
    assert available > held  # keys of both key streams, old and new
    await _all_keys_distinct_and_equal(stores, pair.stream, available)


async def test_a_qkdm_down_through_two_device_restarts_catches_up(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    """B's QKDM misses two replacements; when it comes back it is two KSIDs behind A, finds
    A's in the device's answer, and joins it."""
    pair = qss_network.add_link(A, B, name="dev-catch-up", rate_bps=64_000)
    await _both_up(qss_network, pair.stream)
    first = _ksid(qss_network, A, pair.stream)
    await _quiesce(qss_network, stores, pair.stream)
    qss_network.kill_qkdm(B, pair.stream)
    seen = {first}
    for _ in range(2):
        qss_network.restart_device(pair.stream)

        async def a_moved_on() -> str | None:
            ksid = await stores[A].ingest_key_stream(stream=pair.stream)
            return ksid if ksid not in seen else None

        seen.add(await _eventually(a_moved_on, timeout=60))

        def waiting_for_b() -> dict[str, Any] | None:
            status = _status(qss_network.nodes[A].cluster, "keystream", pair.stream)
            waiting = status.get("state") == "Down" and status.get("ksid") in seen
            return status if waiting and _ready(status)["reason"] == "PeerNotConnected" else None

        await _eventually(waiting_for_b, timeout=60)

    qss_network.restart_qkdm(B, pair.stream)

    latest = await _both_up_on_a_new_ksid(qss_network, pair.stream, {first})
    assert latest == await stores[A].ingest_key_stream(stream=pair.stream)
    available = await _quiesce(qss_network, stores, pair.stream)
    await _all_keys_distinct_and_equal(stores, pair.stream, available)


async def test_a_stream_aborted_for_qber_recovers_once_the_qber_is_back(
    qss_network: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    """Regression (issue 9): a stream aborted for QBER stayed Down until the KeyStream was
    recreated."""
    pair = qss_network.add_link(A, B, name="qber", rate_bps=64_000)
    await _both_up(qss_network, pair.stream)
    before = _ksid(qss_network, A, pair.stream)
    await _quiesce(qss_network, stores, pair.stream)

    qss_network.device_fault(pair.stream, qber=0.2)
    for node in (A, B):
        cluster = qss_network.nodes[node].cluster
        status = await _eventually(partial(_status_if, cluster, "keystream", pair.stream, "Down"))
        assert _ready(status)["reason"] == "QberTooHigh"
    qss_network.device_fault(pair.stream, qber=0.02, rate_bps=64_000)

    await _both_up_on_a_new_ksid(qss_network, pair.stream, {before})
    available = await _quiesce(qss_network, stores, pair.stream)
    await _all_keys_distinct_and_equal(stores, pair.stream, available)
