"""The multi-hop key relay on real clusters over the real channel: three nodes in a line
(``examples/topologies/line3.yaml``, with this module's names: links and SAE IDs prefixed
``rl-``), node-b a trusted repeater between node-a and node-c.

A KeyRequest on node-a for an SAE on node-c gives byte-identical Secrets on node-a and node-c
and nothing on node-b; ETSI 014 enc_keys on node-a and dec_keys on node-c; each link's streams
spend exactly the keys, pads and tag keys the relay needs, and each node's metrics count the
relayed keys in its role (source, repeater, destination). node-b's controller killed with
kill -9 while it is mid-relay (it holds the relay's keys and pads and waits for node-c, which
is paused to keep it there): nothing is delivered anywhere, every hold on the path is released
once node-b is back, and a new request succeeds. No key material in any log, event or status.
The tests run in file order.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controllers.delivery.relay_pad import tag_keys_needed
from controllers.keystore import KeyStore, StreamCounts
from tests.cluster.localcluster import REPO_ROOT, Cluster
from tests.cluster.network import QssNetwork
from tests.cluster.topology import load_topology
from tests.etsi014_client import Etsi014Client, key_map
from tests.fixtures.cluster import LocalNetwork
from tests.integration.helpers import (
    eventually,
    eventually_async,
    get,
    keyrequest,
    kubectl_json,
    phase_of,
    secret_keys,
)
from tests.metrics import scrape

A, B, C = "node-a", "node-b", "node-c"
LINE = load_topology(REPO_ROOT / "examples" / "topologies" / "line3.yaml").renamed(
    link_prefix="rl-", sae_prefix="rl-"
)
ALICE, CAROL = "rl-alice", "rl-carol"
NS = LINE.sae_namespace
AB, BC = "rl-node-a-node-b", "rl-node-b-node-c"
STREAMS = {A: [AB], B: [AB, BC], C: [BC]}
# Every module's material this one saw delivered, for the scan of logs and events.
SEEN: list[bytes] = []


def _clear_other_links(network: QssNetwork) -> None:
    """Only this module's links join the three nodes, so the relay's path and streams are
    known (other modules' QKDLinks between them are deleted, as the routing tests do)."""
    mine = {link.stream for link in LINE.links}
    for node in (A, B, C):
        cluster = network.nodes[node].cluster
        for item in (kubectl_json(cluster, "get", "qkdlinks") or {}).get("items", []):
            if item["metadata"]["name"] not in mine:
                cluster.kubectl("delete", "qkdlink", item["metadata"]["name"], "--wait=false")


def uid_of(cluster: Cluster, name: str) -> str:
    obj = get(cluster, "keyrequest", name, NS)
    assert obj is not None
    return str(obj["metadata"]["uid"])


@dataclass
class Relayed:
    name: str
    status: dict[str, Any]
    keys_a: dict[str, bytes] = field(default_factory=dict)  # the Secret on node-a
    keys_c: dict[str, bytes] = field(default_factory=dict)  # the slave's Secret on node-c


def relayed_request(network: QssNetwork, *, number: int, timeout: int = 60) -> Relayed:
    """A KeyRequest on node-a for carol, to its end; with its Secrets on both ends once
    Ready."""
    a, c = network.nodes[A].cluster, network.nodes[C].cluster
    name = keyrequest(
        a, NS, sae="rl-alice", slaveSaeID=CAROL, number=number, size=256, timeoutSeconds=timeout
    )
    status = eventually(lambda: phase_of(a, name, NS), timeout=timeout + 30, what="the request")
    out = Relayed(name=name, status=status)
    if status["phase"] == "Ready":
        out.keys_a = secret_keys(a, f"{name}-keys", NS)
        slave = f"rl-carol-{uid_of(a, name)}"
        eventually(lambda: phase_of(c, slave, NS), what="the slave request")
        out.keys_c = secret_keys(c, f"{slave}-keys", NS)
        SEEN.extend(out.keys_a.values())
    return out


@pytest.fixture(scope="module")
def line(qss_network: QssNetwork, local_network: LocalNetwork) -> Iterator[QssNetwork]:
    if C not in qss_network.nodes:
        qss_network.add_node(C, local_network.cluster(C))
    _clear_other_links(qss_network)
    LINE.build(qss_network)
    try:
        # The first request also waits for the routes and the pools of both links.
        first = relayed_request(qss_network, number=1, timeout=90)
        assert first.status["phase"] == "Ready", first.status["conditions"]
        yield qss_network
    finally:  # also when the set-up failed: the next modules use the same nodes
        for link in LINE.links:
            if link.stream in qss_network.links:
                qss_network.remove_link(link.stream)


@pytest.fixture
async def stores(line: QssNetwork) -> AsyncIterator[dict[str, KeyStore]]:
    opened = {n: KeyStore.from_url(line.nodes[n].redis_url) for n in (A, B, C)}
    yield opened
    for store in opened.values():
        await store.aclose()


async def counts(stores: dict[str, KeyStore]) -> dict[tuple[str, str], StreamCounts]:
    return {(n, s): await stores[n].counts(stream=s) for n, ss in STREAMS.items() for s in ss}


async def test_keyrequest_for_an_sae_two_hops_away_gives_identical_secrets_and_none_on_b(
    line: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    before = await counts(stores)
    scraped = {n: scrape(line.nodes[n].metrics_url) for n in (A, B, C)}
    done = relayed_request(line, number=10)
    status = done.status
    assert status["phase"] == "Ready", status
    assert status["peerNodeID"] == C
    assert status["keyCount"] == 10
    keys_a = done.keys_a
    assert done.keys_c == keys_a
    assert sorted(keys_a) == sorted(status["keyIDs"])
    assert all(len(v) == 32 for v in keys_a.values())
    # node-b, the repeater, has no KeyRequest and no Secret of this pair or with these keys
    # (other modules' requests may be there: node-b is a session node).
    b = line.nodes[B].cluster
    requests = json.dumps(kubectl_json(b, "get", "keyrequests", "-A"))
    assert ALICE not in requests
    assert CAROL not in requests
    secrets = json.dumps(kubectl_json(b, "get", "secrets", "-A"))
    for key_id, material in keys_a.items():
        assert key_id not in secrets
        assert key_id not in requests
        assert base64.b64encode(material).decode() not in secrets
    # Exactly the keys used: 10 keys on a-b at both ends, 10 pads and the tag key on b-c.
    after = await counts(stores)
    tag = tag_keys_needed(256)
    consumed = {k: after[k].consumed - before[k].consumed for k in after}
    assert consumed == {(A, AB): 10, (B, AB): 10, (B, BC): 10 + tag, (C, BC): 10 + tag}
    assert all(after[k].dropped == before[k].dropped for k in after)
    assert all(after[k].holding == 0 for k in after)
    # Each node counts the ten relayed keys in its role on the path, the two ends the keys
    # each served.
    for node, role in ((A, "source"), (B, "repeater"), (C, "destination")):
        page = scrape(line.nodes[node].metrics_url)
        relayed = page.value("qss_relayed_keys_total", role=role) - scraped[node].value(
            "qss_relayed_keys_total", role=role
        )
        assert relayed == 10, (node, role)
    for node, operation in ((A, "get_key"), (C, "get_key_with_ids")):
        served = {"interface": "keyrequest", "operation": operation, "slave_sae": CAROL}

        def moved(node: str = node, served: dict[str, str] = served) -> bool:
            page = scrape(line.nodes[node].metrics_url)
            return (
                page.value("qss_keys_served_total", **served)
                - scraped[node].value("qss_keys_served_total", **served)
                == 10
            )

        eventually(moved, what=f"{node}'s served keys")  # node-c counts after its Ready


async def test_enc_keys_on_a_and_dec_keys_on_c(line: QssNetwork) -> None:
    alice = line.sae_credentials(A, NS, "rl-alice")
    carol = line.sae_credentials(C, NS, "rl-carol")
    async with (
        Etsi014Client(
            line.nodes[A].key_api_url,
            ca_pem=alice["ca.crt"],
            cert_pem=alice["tls.crt"],
            key_pem=alice["tls.key"],
            timeout=60,
        ) as master,
        Etsi014Client(
            line.nodes[C].key_api_url,
            ca_pem=carol["ca.crt"],
            cert_pem=carol["tls.crt"],
            key_pem=carol["tls.key"],
            timeout=60,
        ) as slave,
    ):
        status = await master.status(CAROL)
        assert status["target_KME_ID"] == C
        keys = key_map(await master.enc_keys(CAROL, number=3, size=256))
        SEEN.extend(keys.values())

        async def fetched() -> dict[str, bytes] | None:
            try:
                return key_map(await slave.dec_keys(ALICE, list(keys)))
            except Exception:
                return None  # the commit is on its way to node-c

        got = await eventually_async(fetched, what="dec_keys on node-c")
        assert got == keys


async def test_repeater_killed_mid_relay_delivers_nothing_releases_everything_and_retry_works(
    line: QssNetwork, stores: dict[str, KeyStore]
) -> None:
    a, c = line.nodes[A].cluster, line.nodes[C].cluster
    paused = line.nodes[C].controller
    assert paused is not None
    # node-c paused: node-b's prepare waits for its answer, holding the relay's keys and pads.
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        name = keyrequest(a, NS, sae="rl-alice", slaveSaeID=CAROL, number=4, size=256)

        async def mid_relay() -> bool:
            b = await counts(stores)
            return b[B, AB].holding > 0 and b[B, BC].holding > 0

        # Proof that the kill lands mid-relay: node-b holds both sides of it.
        await eventually_async(mid_relay, timeout=8, poll=0.02, what="node-b mid-relay")
        line.kill_controller(B)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    status = eventually(lambda: phase_of(a, name, NS), what="the request's end")
    assert status["phase"] == "Failed", status
    assert get(a, "secret", f"{name}-keys", NS) is None
    line.start_controller(line.nodes[B])

    async def released() -> bool:
        return all(x.holding == 0 for x in (await counts(stores)).values())

    # node-b back: the abort queued on node-a reaches it, and from it node-c.
    await eventually_async(released, timeout=90, what="every hold on the path released")
    assert phase_of(c, f"rl-carol-{uid_of(a, name)}", NS) is None
    assert get(c, "keyrequest", f"rl-carol-{uid_of(a, name)}", NS) is None
    # A new request goes through.
    retry = relayed_request(line, number=4)
    assert retry.status["phase"] == "Ready", retry.status
    assert retry.keys_c == retry.keys_a


def test_no_relayed_key_in_logs_events_or_status(line: QssNetwork) -> None:
    assert len(SEEN) >= 15, "too few keys to make the scan meaningful"
    needles = [s for m in SEEN for s in (m.hex(), base64.b64encode(m).decode(), repr(m)[2:-1])]
    texts: list[tuple[str, str]] = []
    for path in Path(line.state_dir).rglob("*.log"):
        texts.append((str(path), path.read_text(errors="replace")))
    for node in (A, B, C):
        cluster = line.nodes[node].cluster
        for what in ("events", "keyrequests", "keystreams", "routes"):
            texts.append(
                (f"{node} {what}", cluster.kubectl("get", what, "-A", "-o", "json").stdout)
            )
    for where, text in texts:
        for needle in needles:
            assert needle not in text, f"relayed key material in {where}"
