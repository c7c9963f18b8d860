"""Key delivery under load, scarcity and faults: nothing delivered twice, nothing half-taken,
every reservation released; and no key or private key in any log, event or status.

These tests get a pair of nodes of their own (node-c, node-d), so that killing a controller or
starving a link touches no other test's network."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controllers.keystore import KeyStore
from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork
from tests.fixtures.cluster import LocalNetwork
from tests.integration.helpers import eventually, get, keyrequest, phase_of

C, D = "node-c", "node-d"
NS_C, NS_D = "team-c", "team-d"


@dataclass
class Nodes:
    network: QssNetwork
    stream: str

    def cluster(self, node: str) -> Cluster:
        return self.network.nodes[node].cluster


@pytest.fixture(scope="module")
def nodes(qss_network: QssNetwork, local_network: LocalNetwork) -> Iterator[Nodes]:
    for name in (C, D):
        if name not in qss_network.nodes:
            qss_network.add_node(name, local_network.cluster(name))
    link = qss_network.add_link(C, D, rate_bps=32_000, capacity=2_000)
    qss_network.register_sae(C, NS_C, "carol", "carol")
    qss_network.register_sae(D, NS_D, "dave", "dave")
    n = Nodes(network=qss_network, stream=link.stream)
    # Announcements travel; the first request proves both nodes know both SAEs.
    eventually(lambda: _stream_available(n, C) >= 64, timeout=60, what="keys on the link")
    first = keyrequest(n.cluster(C), NS_C, sae="carol", slaveSaeID="dave", number=1, size=256)
    assert eventually(lambda: phase_of(n.cluster(C), first, NS_C), timeout=60)["phase"] == "Ready"
    yield n
    qss_network.stop_link(link.stream)


def _stream_available(nodes: Nodes, node: str) -> int:
    obj = get(nodes.cluster(node), "keystream", nodes.stream, "default") or {}
    return int(obj.get("status", {}).get("availableKeys", 0))


@pytest.fixture
async def stores(nodes: Nodes) -> AsyncIterator[dict[str, KeyStore]]:
    opened = {n: KeyStore.from_url(nodes.network.nodes[n].redis_url) for n in (C, D)}
    yield opened
    for store in opened.values():
        await store.aclose()


def _all_done(cluster: Cluster, namespace: str, names: list[str]) -> dict[str, dict[str, Any]]:
    done = {}
    for name in names:
        status = phase_of(cluster, name, namespace)
        if status is None:
            return {}
        done[name] = status
    return done


def _secret_keys(cluster: Cluster, name: str, namespace: str) -> dict[str, bytes] | None:
    secret = get(cluster, "secret", name, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v) for k, v in secret["data"].items() if k != "keys.json"}


async def _no_reservations_left(stores: dict[str, KeyStore], stream: str) -> None:
    async def settled() -> bool:
        for store in stores.values():
            counts = await store.counts(stream=stream)
            assert counts.available + counts.reserved + counts.consumed == counts.added
            if counts.reserved:
                return False
        return True

    for _ in range(100):
        if await settled():
            return
        await asyncio.sleep(0.3)
    raise AssertionError("reservations were left behind")


async def test_requests_outrunning_the_device_wait_then_fail_whole_and_release_everything(
    nodes: Nodes, stores: dict[str, KeyStore]
) -> None:
    c = nodes.cluster(C)
    # 12 requests of 400 keys at once: a full buffer (2,000 keys) serves about five; the device
    # (32 kbit/s, 125 keys/s) refills far less than the rest within the 3 s they may wait.
    eventually(lambda: _stream_available(nodes, C) >= 1900, timeout=120, what="full buffer")
    eventually(lambda: _stream_available(nodes, D) >= 1900, timeout=120, what="full buffer")
    before = await stores[C].counts(stream=nodes.stream)
    names = [
        keyrequest(c, NS_C, sae="carol", slaveSaeID="dave", number=400, size=256, timeoutSeconds=3)
        for _ in range(12)
    ]
    done = eventually(lambda: _all_done(c, NS_C, names), timeout=90, what="all requests done")
    ready = [n for n, s in done.items() if s["phase"] == "Ready"]
    failed = [n for n, s in done.items() if s["phase"] == "Failed"]
    assert ready, "no request was served at all"
    assert failed, f"all {len(ready)} requests were served; scarcity not reached ({before})"
    for name in ready:
        keys = _secret_keys(c, f"{name}-keys", NS_C)
        assert keys is not None
        assert len(keys) == 400, "a request got part of a set"
    for name in failed:
        reason = next(x for x in done[name]["conditions"] if x["type"] == "Ready")["reason"]
        assert reason == "InsufficientKeys"
        assert get(c, "secret", f"{name}-keys", NS_C) is None
    await _no_reservations_left(stores, nodes.stream)


async def test_fifty_concurrent_requests_both_ways_never_share_a_key(
    nodes: Nodes, stores: dict[str, KeyStore]
) -> None:
    c, d = nodes.cluster(C), nodes.cluster(D)
    eventually(lambda: _stream_available(nodes, C) >= 400, timeout=120, what="buffer refill")
    eventually(lambda: _stream_available(nodes, D) >= 400, timeout=120, what="buffer refill")
    from_c = [
        keyrequest(c, NS_C, sae="carol", slaveSaeID="dave", number=4, size=256, timeoutSeconds=60)
        for _ in range(25)
    ]
    from_d = [
        keyrequest(d, NS_D, sae="dave", slaveSaeID="carol", number=4, size=512, timeoutSeconds=60)
        for _ in range(25)
    ]
    done_c = eventually(lambda: _all_done(c, NS_C, from_c), timeout=120)
    done_d = eventually(lambda: _all_done(d, NS_D, from_d), timeout=120)
    seen: dict[str, bytes] = {}
    for cluster, namespace, done in ((c, NS_C, done_c), (d, NS_D, done_d)):
        for name, status in done.items():
            assert status["phase"] == "Ready", (name, status)
            keys = _secret_keys(cluster, f"{name}-keys", namespace)
            assert keys is not None
            for key_id, material in keys.items():
                assert key_id not in seen, "a key was delivered twice"
                seen[key_id] = material
    assert len(seen) == 50 * 4
    assert len(set(seen.values())) == len(seen), "two keys share their bytes"
    await _no_reservations_left(stores, nodes.stream)


async def test_peer_down_mid_request_fails_cleanly_and_holds_nothing(
    nodes: Nodes, stores: dict[str, KeyStore]
) -> None:
    c = nodes.cluster(C)
    nodes.network.kill_controller(D)
    try:
        name = keyrequest(
            c, NS_C, sae="carol", slaveSaeID="dave", number=2, size=256, timeoutSeconds=4
        )
        status = eventually(lambda: phase_of(c, name, NS_C), timeout=60)
        assert status["phase"] == "Failed"
        reason = next(x for x in status["conditions"] if x["type"] == "Ready")["reason"]
        assert reason == "PeerUnreachable"
        counts = await stores[C].counts(stream=nodes.stream)
        assert counts.reserved == 0
    finally:
        nodes.network.start_controller(nodes.network.nodes[D])
    again = keyrequest(
        c, NS_C, sae="carol", slaveSaeID="dave", number=2, size=256, timeoutSeconds=60
    )
    assert eventually(lambda: phase_of(c, again, NS_C), timeout=90)["phase"] == "Ready"


async def test_controller_killed_mid_request_delivers_each_key_once_after_restart(
    nodes: Nodes, stores: dict[str, KeyStore]
) -> None:
    c, d = nodes.cluster(C), nodes.cluster(D)
    eventually(lambda: _stream_available(nodes, C) >= 200, timeout=120, what="buffer refill")
    before = await stores[C].counts(stream=nodes.stream)
    names = [
        keyrequest(c, NS_C, sae="carol", slaveSaeID="dave", number=5, size=256, timeoutSeconds=120)
        for _ in range(10)
    ]
    await asyncio.sleep(0.3)  # some are under way, some not started
    nodes.network.kill_controller(C)
    await asyncio.sleep(1)
    nodes.network.start_controller(nodes.network.nodes[C])
    done = eventually(lambda: _all_done(c, NS_C, names), timeout=120)
    delivered: dict[str, bytes] = {}
    for name, status in done.items():
        assert status["phase"] == "Ready", (name, status)
        keys = _secret_keys(c, f"{name}-keys", NS_C)
        assert keys is not None
        assert len(keys) == 5
        assert sorted(keys) == sorted(status["keyIDs"])
        assert not set(keys) & set(delivered), "a key was delivered twice"
        delivered.update(keys)
        uid = get(c, "keyrequest", name, NS_C)["metadata"]["uid"]  # type: ignore[index]
        slave = eventually(partial(phase_of, d, f"dave-{uid}", NS_D), timeout=60)
        assert slave["phase"] == "Ready"
        assert _secret_keys(d, f"dave-{uid}-keys", NS_D) == keys
    after = await stores[C].counts(stream=nodes.stream)
    assert after.consumed - before.consumed == 50, "keys were lost or consumed twice"
    await _no_reservations_left(stores, nodes.stream)


def test_no_key_or_private_key_in_logs_events_or_status(nodes: Nodes) -> None:
    secrets_seen: list[str] = []
    for node, namespace in ((C, NS_C), (D, NS_D)):
        cluster = nodes.cluster(node)
        listing = json.loads(
            cluster.kubectl("get", "secrets", "-n", namespace, "-o", "json").stdout
        )
        for secret in listing["items"]:
            for key, value in (secret.get("data") or {}).items():
                raw = base64.b64decode(value)
                if key == "keys.json":
                    continue
                if key == "tls.key":
                    secrets_seen.append(raw.decode().split("-----")[2].strip()[:40])
                elif len(raw) >= 16:
                    secrets_seen += [value, raw.hex()]
    assert len(secrets_seen) > 100, "too few secrets to make the scan meaningful"
    texts: list[tuple[str, str]] = []
    for path in Path(nodes.network.state_dir).rglob("*.log"):
        texts.append((str(path), path.read_text(errors="replace")))
    for node in (C, D):
        cluster = nodes.cluster(node)
        for what in ("events", "qss"):
            out = cluster.kubectl("get", what, "-A", "-o", "json").stdout
            texts.append((f"{node} {what}", out))
    for where, text in texts:
        assert "PRIVATE KEY" not in text, f"a private key in {where}"
        for secret in secrets_seen:
            assert secret not in text, f"key material in {where}"
