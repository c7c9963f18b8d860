"""Metrics and Events end to end, on the local QSS network of real processes.

Two nodes (``qss_network``: node-a and node-b, each a kube-apiserver, a redis-server and a
qss-controller), a QKD link of this module's own (``obs``) with a QKDM per end, and two SAEs
registered through Sae objects: ``obs-a`` on node-a (the master) and ``obs-b`` on node-b. The
tests scrape the real ``/metrics`` of the controllers and the QKDMs and read Events from the
real API servers. What is checked:

- the served-keys counters of the pair rise by exactly the keys delivered, through 014
  (enc_keys on node-a, dec_keys on node-b) and through KeyRequests (master on node-a, the
  automatic slave request on node-b), each with a latency observation;
- a refused request increments the error counter with its reason (UnknownKeys, BadRequest,
  Unauthorized; InsufficientKeys for a KeyRequest or a 014 enc_keys, each also an Event, on
  the KeyRequest or on the calling SAE's Sae);
- per link and stream end: cost, state and trust; ingest moves; routing counters move;
- the pool's keys agreed on node-a are the keys node-b holds for its slave SAE;
- no exposition carries a key ID, key material or any UUID-like label value (request IDs), and
  no Event a key ID or key material;
- a flapping device link makes one Event per (object, reason), repeats counted in its series;
- a Sae deleted is a CredentialRevoked Event, a reachable SAE a RouteAdded Event;
- a stream aborted for QBER is counted and an Event, and so is its move to a new KSID;
- a link whose peer's CA is missing is a PeerUntrusted Event and untrusted in the metrics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from controllers.keystore import KeyStore, UnknownStreamError
from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork, apply
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map
from tests.integration.helpers import keyrequest as apply_keyrequest
from tests.integration.helpers import kubectl_json, take_on_both
from tests.metrics import Page, scrape
from tests.waiting import eventually_async

A, B = "node-a", "node-b"
NS_A, NS_B = "obs-a", "obs-b"
SAE_A, SAE_B = "obs-a", "obs-b"
LINK = "obs"
CHUNK_BITS = 256
RATE_BPS = 64_000
CAPACITY = 4_000
TIMEOUT = 60.0
UUID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Obs:
    network: QssNetwork
    creds_a: dict[str, bytes]
    creds_b: dict[str, bytes]
    # Every key this module was given (ID -> bytes), for the scan of the expositions.
    delivered: dict[str, bytes] = field(default_factory=dict)

    def controller(self, node: str) -> Page:
        return scrape(self.network.nodes[node].metrics_url)

    def qkdm(self, node: str) -> Page:
        return scrape(self.network.nodes[node].qkdm_metrics_url(LINK))

    def cluster(self, node: str) -> Cluster:
        return self.network.nodes[node].cluster

    def client(self, node: str) -> Etsi014Client:
        creds = self.creds_a if node == A else self.creds_b
        return Etsi014Client(
            self.network.nodes[node].key_api_url,
            ca_pem=creds["ca.crt"],
            cert_pem=creds["tls.crt"],
            key_pem=creds["tls.key"],
            timeout=TIMEOUT,
        )


@pytest.fixture(scope="module")
def obs(qss_network: QssNetwork) -> Iterator[Obs]:
    qss_network.add_link(
        A, B, name=LINK, rate_bps=RATE_BPS, capacity=CAPACITY, chunk_bits=CHUNK_BITS
    )
    qss_network.register_sae(A, NS_A, SAE_A, SAE_A)
    qss_network.register_sae(B, NS_B, SAE_B, SAE_B)
    yield Obs(
        network=qss_network,
        creds_a=qss_network.sae_credentials(A, NS_A, SAE_A),
        creds_b=qss_network.sae_credentials(B, NS_B, SAE_B),
    )
    qss_network.stop_link(LINK)


async def eventually(check: Callable[[], Any], *, timeout: float = TIMEOUT, what: str = "") -> Any:
    """``check()`` (run in a thread: scrapes and kubectl block) until truthy, bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what or 'condition'} not met within {timeout}s; last {last!r}")


async def enc_keys(obs: Obs, number: int) -> dict[str, bytes]:
    """enc_keys on node-a until it answers (node-a may not know obs-b yet, keys may be short)."""
    async with obs.client(A) as alice:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                keys = key_map(await alice.enc_keys(SAE_B, number=number, size=CHUNK_BITS))
                break
            except Etsi014Error as exc:
                if exc.status not in (400, 503) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)
    obs.delivered.update(keys)
    return keys


def served(page: Page, interface: str, operation: str) -> float:
    return page.value(
        "qss_keys_served_total",
        interface=interface,
        operation=operation,
        master_sae=SAE_A,
        slave_sae=SAE_B,
    )


def latency_count(page: Page, interface: str, operation: str) -> float:
    return page.value(
        "qss_key_request_duration_seconds_count",
        interface=interface,
        operation=operation,
        master_sae=SAE_A,
        slave_sae=SAE_B,
    )


def errors(page: Page, interface: str, operation: str, reason: str) -> float:
    return page.value(
        "qss_key_request_errors_total", interface=interface, operation=operation, reason=reason
    )


async def test_014_served_keys_counters_rise_by_exactly_the_keys_delivered(obs: Obs) -> None:
    await enc_keys(obs, 1)  # warm: node-a knows obs-b, the stream has keys
    before_a = await asyncio.to_thread(obs.controller, A)
    before_b = await asyncio.to_thread(obs.controller, B)

    keys = await enc_keys(obs, 3)
    async with obs.client(B) as bob:
        got = key_map(await bob.dec_keys(SAE_A, list(keys)))
    assert got == keys

    after_a = await asyncio.to_thread(obs.controller, A)
    after_b = await asyncio.to_thread(obs.controller, B)
    assert served(after_a, "etsi014", "enc_keys") - served(before_a, "etsi014", "enc_keys") == 3
    assert served(after_b, "etsi014", "dec_keys") - served(before_b, "etsi014", "dec_keys") == 3
    assert latency_count(after_a, "etsi014", "enc_keys") == (
        latency_count(before_a, "etsi014", "enc_keys") + 1
    )
    assert latency_count(after_b, "etsi014", "dec_keys") == (
        latency_count(before_b, "etsi014", "dec_keys") + 1
    )


async def test_refused_014_requests_count_their_reason(obs: Obs) -> None:
    keys = await enc_keys(obs, 1)
    async with obs.client(B) as bob:
        await bob.dec_keys(SAE_A, list(keys))
        before = await asyncio.to_thread(obs.controller, B)
        with pytest.raises(Etsi014Error) as again:
            await bob.dec_keys(SAE_A, list(keys))  # delivered already
        assert again.value.status == 400
        with pytest.raises(Etsi014Error) as bad:
            await bob.dec_keys(SAE_A, ["not-a-key-id"])
        assert bad.value.status == 400
    async with Etsi014Client(
        obs.network.nodes[B].key_api_url, ca_pem=obs.creds_b["ca.crt"], timeout=TIMEOUT
    ) as anonymous:
        with pytest.raises(Etsi014Error) as unauthorized:
            await anonymous.status(SAE_A)
        assert unauthorized.value.status == 401
    after = await asyncio.to_thread(obs.controller, B)
    for operation, reason in (
        ("dec_keys", "UnknownKeys"),
        ("dec_keys", "BadRequest"),
        ("status", "Unauthorized"),
    ):
        delta = errors(after, "etsi014", operation, reason) - errors(
            before, "etsi014", operation, reason
        )
        assert delta == 1, (operation, reason)
    # What was refused served nothing.
    assert served(after, "etsi014", "dec_keys") == served(before, "etsi014", "dec_keys")


async def test_keyrequests_count_served_keys_on_both_nodes(obs: Obs) -> None:
    await enc_keys(obs, 1)  # warm
    before_a = await asyncio.to_thread(obs.controller, A)
    before_b = await asyncio.to_thread(obs.controller, B)
    name = await asyncio.to_thread(
        apply_keyrequest,
        obs.cluster(A),
        NS_A,
        sae=SAE_A,
        slaveSaeID=SAE_B,
        number=2,
        size=CHUNK_BITS,
        timeoutSeconds=60,
    )

    def ready() -> dict[str, Any] | None:
        obj = kubectl_json(obs.cluster(A), "get", "keyrequest", name, "-n", NS_A)
        return obj if obj and obj.get("status", {}).get("phase") == "Ready" else None

    done = await eventually(ready, what=f"KeyRequest {name} Ready")
    secret = await asyncio.to_thread(
        kubectl_json, obs.cluster(A), "get", "secret", done["status"]["secretName"], "-n", NS_A
    )
    assert secret is not None
    obs.delivered.update(
        {k: base64.b64decode(v) for k, v in secret["data"].items() if k != "keys.json"}
    )

    def counted() -> Page | None:
        page = obs.controller(A)
        moved = latency_count(page, "keyrequest", "get_key") > latency_count(
            before_a, "keyrequest", "get_key"
        )
        return page if moved else None

    # The service counts a request once its Ready status is written: the count may trail it.
    after_a = await eventually(counted, what="node-a's request counted")
    assert served(after_a, "keyrequest", "get_key") - served(before_a, "keyrequest", "get_key") == 2
    assert latency_count(after_a, "keyrequest", "get_key") == (
        latency_count(before_a, "keyrequest", "get_key") + 1
    )
    # The peer creates and serves the slave-side request by itself.
    await eventually(
        lambda: (
            served(obs.controller(B), "keyrequest", "get_key_with_ids")
            - served(before_b, "keyrequest", "get_key_with_ids")
            == 2
        ),
        what="node-b's slave request served",
    )


@contextlib.asynccontextmanager
async def drained(obs: Obs, node: str, towards: str) -> AsyncIterator[None]:
    """Put every available key of ``node``'s streams towards ``towards`` into a pending block
    of the test's own, so a request finds none (other test modules' links keep their stored
    keys after they stop); given back afterwards."""
    cluster = obs.cluster(node)
    links = kubectl_json(cluster, "get", "qkdlinks")
    streams = kubectl_json(cluster, "get", "keystreams")
    assert links is not None
    assert streams is not None
    to_peer = {x["metadata"]["name"] for x in links["items"] if x["spec"]["peerNodeID"] == towards}
    names = [x["metadata"]["name"] for x in streams["items"] if x["spec"]["link"] in to_peer]
    store = KeyStore.from_url(obs.network.nodes[node].redis_url)
    held: list[tuple[str, str]] = []
    try:
        for stream in names:
            try:
                counts = await store.counts(stream=stream)
            except UnknownStreamError:
                continue
            if counts.available:
                block = await store.reserve_block(
                    stream=stream,
                    block_id=str(uuid.uuid4()),
                    owner="obs-drain/nobody",
                    count=counts.available,
                    size_bits=counts.chunk_bytes * 8,
                    from_newest=False,
                    lease_ms=600_000,
                    pending_ms=600_000,
                )
                held.append((stream, block.block_id))
        yield
    finally:
        for stream, block_id in held:
            await store.refuse_block(stream=stream, block_id=block_id)
        await store.aclose()


async def test_a_keyrequest_short_of_keys_counts_InsufficientKeys_and_is_an_Event(
    obs: Obs,
) -> None:
    before = await asyncio.to_thread(obs.controller, A)
    # The device slowed to a key a second, so that the drained buffer stays nearly empty.
    obs.network.device_fault(LINK, rate_bps=CHUNK_BITS)
    async with drained(obs, A, towards=B):
        # A quarter of the link's buffer: far more than the pair's pool holds after this
        # module's few requests, and than the slowed device makes in the request's 2 s;
        # every available key of every stream towards node-b is held.
        name = await asyncio.to_thread(
            apply_keyrequest,
            obs.cluster(A),
            NS_A,
            sae=SAE_A,
            slaveSaeID=SAE_B,
            number=1000,
            size=CHUNK_BITS,
            timeoutSeconds=2,
        )

        def failed() -> dict[str, Any] | None:
            obj = kubectl_json(obs.cluster(A), "get", "keyrequest", name, "-n", NS_A)
            phase = obj.get("status", {}).get("phase") if obj else None
            return obj if phase in ("Ready", "Failed") else None

        try:
            done = await eventually(failed, what=f"KeyRequest {name} finished")
        finally:
            obs.network.device_fault(LINK, rate_bps=RATE_BPS)
    assert done["status"]["phase"] == "Failed", done["status"]
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InsufficientKeys"

    def counted() -> Page | None:
        page = obs.controller(A)
        moved = errors(page, "keyrequest", "get_key", "InsufficientKeys") > errors(
            before, "keyrequest", "get_key", "InsufficientKeys"
        )
        return page if moved else None

    # The service counts a failure once its Failed status is written: the count may trail it.
    after = await eventually(counted, what="the failure counted")
    assert errors(after, "keyrequest", "get_key", "InsufficientKeys") == (
        errors(before, "keyrequest", "get_key", "InsufficientKeys") + 1
    )
    event = await eventually(
        lambda: [
            e
            for e in events(obs.cluster(A), NS_A)
            if e["regarding"].get("name") == name and e["reason"] == "InsufficientKeys"
        ],
        what="InsufficientKeys Event",
    )
    assert event[0]["type"] == "Warning"
    assert event[0]["regarding"]["kind"] == "KeyRequest"


async def test_an_014_request_short_of_keys_counts_InsufficientKeys_and_is_an_Event_on_its_Sae(
    obs: Obs,
) -> None:
    await enc_keys(obs, 1)  # node-a knows obs-b: the refusal below is for want of keys
    before = await asyncio.to_thread(obs.controller, A)
    obs.network.device_fault(LINK, rate_bps=CHUNK_BITS)
    try:
        async with drained(obs, A, towards=B), obs.client(A) as alice:
            with pytest.raises(Etsi014Error) as short:
                # Keys of four chunks: a pool of its own, empty (the 256-bit pool may hold
                # what earlier tests' requests made it agree).
                await alice.enc_keys(SAE_B, number=500, size=4 * CHUNK_BITS)
    finally:
        obs.network.device_fault(LINK, rate_bps=RATE_BPS)
    assert short.value.status == 503
    assert short.value.details[0]["reason"] == "InsufficientKeys"
    after = await asyncio.to_thread(obs.controller, A)
    assert errors(after, "etsi014", "enc_keys", "InsufficientKeys") == (
        errors(before, "etsi014", "enc_keys", "InsufficientKeys") + 1
    )
    assert served(after, "etsi014", "enc_keys") == served(before, "etsi014", "enc_keys")
    event = await eventually(
        lambda: [
            e
            for e in regarding(obs.cluster(A), "Sae", SAE_A, NS_A)
            if e["reason"] == "InsufficientKeys"
        ],
        what="InsufficientKeys Event on the Sae",
    )
    assert event[0]["type"] == "Warning"
    assert SAE_A in event[0]["note"]


async def test_link_stream_and_routing_metrics_move(obs: Obs) -> None:
    page = await eventually(
        lambda: (p := obs.controller(A)).value("qss_link_state", link=LINK, state="Up") == 1 and p,
        what="link obs Up in node-a's metrics",
    )
    assert page.value("qss_link_cost", link=LINK, peer=B) >= 1.0  # equation (2), floored at 1
    assert page.value("qss_link_peer_trusted", link=LINK, peer=B) == 1
    assert sum(page.value("qss_link_state", link=LINK, state=s) for s in ("Down", "Unknown")) == 0
    assert page.value("qss_routing_lsas_received_total") > 0
    assert page.value("qss_routing_spf_runs_total") > 0
    assert page.value("qss_routes") >= 1

    first = await asyncio.to_thread(obs.qkdm, A)
    labels = {"stream": LINK, "node": A}
    assert first.value("qss_stream_capacity_keys", **labels) == CAPACITY
    assert first.has("qss_stream_keys", state="available", **labels)
    # Take keys out of both ends, as delivery does, so that a full buffer has room and the
    # QKDM ingests.
    async with (
        KeyStore.from_url(obs.network.nodes[A].redis_url) as master,
        KeyStore.from_url(obs.network.nodes[B].redis_url) as peer,
    ):

        async def refilled() -> bool:
            # The tests before drained the stream; the QKDMs fill it again at the device's rate.
            counts = [await store.counts(stream=LINK) for store in (master, peer)]
            return all(c.available >= 50 for c in counts)

        await eventually_async(refilled, timeout=TIMEOUT, what="the stream refilled on both ends")
        await take_on_both(
            master, peer, stream=LINK, count=50, size_bits=CHUNK_BITS, owner="obs/nobody"
        )
    await eventually(
        lambda: (
            obs.qkdm(A).value("qss_stream_ingested_bits_total", **labels)
            > first.value("qss_stream_ingested_bits_total", **labels)
        ),
        what="ingest moving",
    )
    bits = first.value("qss_stream_ingested_bits_total", **labels)
    chunks = first.value("qss_stream_ingested_chunks_total", **labels)
    assert bits == chunks * CHUNK_BITS


async def test_no_exposition_carries_key_ids_key_material_or_request_ids(obs: Obs) -> None:
    await enc_keys(obs, 4)
    assert len(obs.delivered) >= 4
    pages = [
        await asyncio.to_thread(get)
        for get in (
            lambda: obs.controller(A),
            lambda: obs.controller(B),
            lambda: obs.qkdm(A),
            lambda: obs.qkdm(B),
        )
    ]
    for page in pages:
        for key_id, material in obs.delivered.items():
            assert key_id not in page.text
            for form in (base64.b64encode(material).decode(), material.hex()):
                assert form not in page.text
        for sample in page.samples:
            for value in sample.labels.values():
                assert not UUID_LIKE.search(value), (sample.name, sample.labels)


async def test_pool_keys_agreed_on_the_master_node_are_the_keys_held_on_the_slave_node(
    obs: Obs,
) -> None:
    await enc_keys(obs, 1)  # warm: the pair's pool exists
    pool = {"peer": B, "master_sae": SAE_A, "slave_sae": SAE_B}
    held = {"peer": A, "master_sae": SAE_A, "slave_sae": SAE_B}
    before_a = await asyncio.to_thread(obs.controller, A)
    before_b = await asyncio.to_thread(obs.controller, B)
    assert before_a.has("qss_pool_keys", **pool)
    in_pool = before_a.value("qss_pool_keys", **pool)
    wanted = int(in_pool) + 8  # more than the pool has: it must agree another block

    await enc_keys(obs, wanted)

    def agreed_and_held() -> tuple[float, float] | None:
        a, b = obs.controller(A), obs.controller(B)
        agreed = a.value("qss_pool_keys_agreed_total", **pool) - before_a.value(
            "qss_pool_keys_agreed_total", **pool
        )
        kept = b.value("qss_slave_keys_held_total", **held) - before_b.value(
            "qss_slave_keys_held_total", **held
        )
        # A refill may still be under way: wait until both nodes have counted it.
        return (agreed, kept) if agreed == kept and agreed > 0 else None

    agreed, _ = await eventually(agreed_and_held, what="node-b holding what node-a agreed")
    # The keys served came from what the pool had and what was agreed since.
    assert agreed >= wanted - in_pool
    after_a = await asyncio.to_thread(obs.controller, A)
    blocks = after_a.value("qss_pool_blocks_agreed_total", **pool) - before_a.value(
        "qss_pool_blocks_agreed_total", **pool
    )
    assert 1 <= blocks <= agreed


def events(cluster: Cluster, namespace: str = "default") -> list[dict[str, Any]]:
    found = kubectl_json(cluster, "get", "events.v1.events.k8s.io", "-n", namespace)
    assert found is not None
    items: list[dict[str, Any]] = found["items"]
    return items


def regarding(cluster: Cluster, kind: str, name: str, namespace: str = "default") -> list[Any]:
    return [
        e
        for e in events(cluster, namespace)
        if e["regarding"].get("kind") == kind and e["regarding"].get("name") == name
    ]


def stream_state(cluster: Cluster, stream: str) -> str | None:
    obj = kubectl_json(cluster, "get", "keystream", stream)
    return None if obj is None else obj.get("status", {}).get("state")


async def test_a_flapping_link_makes_one_event_per_reason_with_its_repeats_counted(
    obs: Obs,
) -> None:
    # A link of its own whose buffer does not fill (a full buffer is not read, so a QKDM
    # would not notice the link going down).
    flap = obs.network.add_link(A, B, name="obs-flap", rate_bps=16_000).stream
    cluster = obs.cluster(A)
    await eventually(lambda: stream_state(cluster, flap) == "Up", what="stream Up")
    downs = 0
    try:
        for _ in range(3):
            obs.network.device_fault(flap, link_down=True)
            await eventually(lambda: stream_state(cluster, flap) == "Down", what="stream Down")
            downs += 1
            obs.network.device_fault(flap, link_down=False)
            await eventually(lambda: stream_state(cluster, flap) == "Up", what="stream Up")
        # And a burst faster than anything samples it.
        for _ in range(20):
            obs.network.device_fault(flap, link_down=True)
            obs.network.device_fault(flap, link_down=False)
    finally:
        obs.network.device_fault(flap, link_down=False)

    def aggregated() -> list[Any] | None:
        found = regarding(cluster, "KeyStream", flap)
        down = [e for e in found if e["reason"] == "StreamDown"]
        if len(down) == 1 and (down[0].get("series") or {}).get("count", 1) >= 2:
            return found
        return None

    found = await eventually(aggregated, what="one StreamDown Event with a series")
    reasons = [e["reason"] for e in found]
    assert len(reasons) == len(set(reasons)), f"more than one Event per reason: {reasons}"
    assert all(e["reportingController"] == "qss.dev/qkdm" for e in found)
    # The link follows its stream: also one Event per reason, never one per flap.
    link_events = [e["reason"] for e in regarding(cluster, "QKDLink", flap)]
    for reason in set(link_events):
        assert link_events.count(reason) == 1, link_events
    assert downs == 3


async def test_deleting_a_sae_is_a_CredentialRevoked_event_and_reachable_saes_RouteAdded(
    obs: Obs,
) -> None:
    sae = f"obs-gone-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(obs.network.register_sae, A, NS_A, sae, sae)
    await asyncio.to_thread(obs.cluster(A).kubectl, "delete", "sae", sae, "-n", NS_A)
    revoked = await eventually(
        lambda: [
            e
            for e in regarding(obs.cluster(A), "Sae", sae, NS_A)
            if e["reason"] == "CredentialRevoked"
        ],
        what="CredentialRevoked Event",
    )
    assert revoked[0]["reportingController"] == "qss.dev/controller"
    assert "BEGIN" not in revoked[0]["note"]  # no certificate, no key
    await eventually(
        lambda: any(
            e["reason"] == "RouteAdded" and SAE_B in e["note"]
            for e in events(obs.cluster(A))
            if e["regarding"].get("kind") == "Route"
        ),
        what="RouteAdded Event for obs-b on node-a",
    )


def ksid_and_state(cluster: Cluster, stream: str) -> tuple[str | None, str | None]:
    obj = kubectl_json(cluster, "get", "keystream", stream)
    status = {} if obj is None else obj.get("status", {})
    return status.get("ksid"), status.get("state")


async def test_a_qber_abort_is_counted_and_an_event_with_the_ksid_change(obs: Obs) -> None:
    stream = obs.network.add_link(A, B, name="obs-qber", rate_bps=64_000).stream
    cluster = obs.cluster(A)
    await eventually(lambda: ksid_and_state(cluster, stream)[1] == "Up", what="stream Up")
    first, _ = await asyncio.to_thread(ksid_and_state, cluster, stream)
    url = obs.network.nodes[A].qkdm_metrics_url(stream)
    labels = {"stream": stream, "node": A}
    assert (await asyncio.to_thread(scrape, url)).value("qss_stream_up", **labels) == 1

    obs.network.device_fault(stream, qber=0.2)
    await eventually(lambda: ksid_and_state(cluster, stream)[1] == "Down", what="stream Down")
    obs.network.device_fault(stream, qber=0.02, rate_bps=64_000)
    await eventually(
        lambda: (k := ksid_and_state(cluster, stream))[1] == "Up" and k[0] != first,
        what="stream Up on a new KSID",
    )

    page = await asyncio.to_thread(scrape, url)
    assert page.value("qss_stream_qber_aborts_total", **labels) >= 1
    assert page.value("qss_stream_ksid_changes_total", **labels) >= 1
    found = await eventually(
        lambda: (
            {
                e["reason"]: e
                for e in regarding(cluster, "KeyStream", stream)
                if e["reason"] in ("StreamAborted", "KsidChanged")
            }
            if {"StreamAborted", "KsidChanged"}
            <= {e["reason"] for e in regarding(cluster, "KeyStream", stream)}
            else None
        ),
        what="StreamAborted and KsidChanged Events",
    )
    assert found["StreamAborted"]["type"] == "Warning"
    assert "QBER" in found["StreamAborted"]["note"]
    assert first is not None
    assert first in found["KsidChanged"]["note"]


async def test_a_link_to_a_peer_without_a_trusted_ca_is_a_PeerUntrusted_event(obs: Obs) -> None:
    cluster = obs.cluster(A)
    link = f"obs-ghost-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        apply,
        cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "QKDLink",
            "metadata": {"name": link},
            "spec": {
                "peerNodeID": "node-ghost",
                "peerEndpoint": "https://127.0.0.1:9",
                "peerCASecretName": "node-ghost-ca-missing",
            },
        },
    )
    try:
        events_found = await eventually(
            lambda: [
                e for e in regarding(cluster, "QKDLink", link) if e["reason"] == "PeerUntrusted"
            ],
            what="PeerUntrusted Event",
        )
        assert events_found[0]["type"] == "Warning"
        assert "node-ghost-ca-missing" in events_found[0]["note"]
        page = await asyncio.to_thread(obs.controller, A)
        assert page.value("qss_link_peer_trusted", link=link, peer="node-ghost") == 0
    finally:
        await asyncio.to_thread(cluster.kubectl, "delete", "qkdlink", link, "--wait=false")


async def test_no_event_carries_key_ids_or_key_material(obs: Obs) -> None:
    await enc_keys(obs, 2)
    found = 0
    for node in (A, B):
        for namespace in ("default", NS_A, NS_B):
            text = json.dumps(await asyncio.to_thread(events, obs.cluster(node), namespace))
            found += text.count('"regarding"')
            for key_id, material in obs.delivered.items():
                assert key_id not in text
                for form in (base64.b64encode(material).decode(), material.hex()):
                    assert form not in text
    assert found > 0  # the scan read Events (this module's tests posted some)
