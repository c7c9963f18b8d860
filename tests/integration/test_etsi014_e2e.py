"""The ETSI GS QKD 014 key API end to end, on the local QSS network of real processes.

Two nodes (``qss_network``: node-a and node-b, each a kube-apiserver, a redis-server and a
qss-controller serving the 014 API over mTLS), a QKD link of this module's own (``etsi014``)
and two SAEs registered through Sae objects: ``etsi-a`` on node-a (the master) and ``etsi-b`` on
node-b (the slave). The SAEs talk to the KMEs with the client written from the standard's text
(``tests.etsi014_client``) and the credentials their Sae's Secret holds, as an unmodified 014
client would. What is checked:

- enc_keys on node-a and dec_keys on node-b give the same bytes under the same key IDs (POST and
  GET forms), and a key is delivered once: dec_keys of the same IDs twice is a 400;
- the Status document's fields;
- no certificate, a certificate of an SAE of another node, a certificate no Sae holds and the
  certificate of a deleted (revoked) Sae: 401 (or, for a CA the KME does not trust, a refused
  TLS handshake), and never a key;
- malformed requests: 400 with a message;
- keys taken through 014 and through KeyRequests never overlap, by ID or by bytes, and a key
  handed over through a KeyRequest cannot be fetched again through 014;
- the key supply behind the API: a buffer that was full for a while refills once keys are taken
  (a regression test of a QKDM bug, fixed).

Other test modules add links between the same two nodes; they are stopped at their module's
end, their QKDMs report them Down, and the KME draws keys from the Up stream: this module's.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest

from controllers import pki
from controllers.keystore import KeyStore, UnknownStreamError
from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map
from tests.integration.helpers import keyrequest as apply_keyrequest
from tests.integration.helpers import kubectl_json, take_on_both

A, B = "node-a", "node-b"
NS_A, NS_B = "etsi014-a", "etsi014-b"
# Each Sae is named after its SAE ID.
SAE_A, SAE_B = "etsi-a", "etsi-b"
SAE_REVOKED = "etsi-revoked"
LINK = "etsi014"
CHUNK_BITS = 512
CAPACITY = 60_000
# Well within what the QKDM ingests, so it never falls behind the device.
RATE_BPS = 256_000
CHUNK_BYTES = CHUNK_BITS // 8

# Generous: the machine is shared with other test runs.
CLIENT_TIMEOUT = 60.0
ANNOUNCE_TIMEOUT = 60.0
READY_TIMEOUT = 60.0

T = TypeVar("T")


@dataclass
class Etsi:
    network: QssNetwork
    creds_a: dict[str, bytes]
    creds_b: dict[str, bytes]
    # The first enc_keys succeeded: node-a knows etsi-b (the SAE announcements arrived).
    warm: bool = False

    @property
    def url_a(self) -> str:
        return self.network.nodes[A].key_api_url

    @property
    def url_b(self) -> str:
        return self.network.nodes[B].key_api_url

    @property
    def cluster_a(self) -> Cluster:
        return self.network.nodes[A].cluster

    @property
    def cluster_b(self) -> Cluster:
        return self.network.nodes[B].cluster


@pytest.fixture(scope="module")
def etsi(qss_network: QssNetwork) -> Iterator[Etsi]:
    qss_network.add_link(
        A, B, name=LINK, rate_bps=RATE_BPS, capacity=CAPACITY, chunk_bits=CHUNK_BITS
    )
    qss_network.register_sae(A, NS_A, SAE_A, SAE_A)
    qss_network.register_sae(B, NS_B, SAE_B, SAE_B)
    yield Etsi(
        network=qss_network,
        creds_a=qss_network.sae_credentials(A, NS_A, SAE_A),
        creds_b=qss_network.sae_credentials(B, NS_B, SAE_B),
    )
    # Its processes go at module end; its objects and stored keys stay.
    qss_network.stop_link(LINK)


def sae_client(url: str, creds: dict[str, bytes], *, ca_pem: bytes | None = None) -> Etsi014Client:
    """A 014 client presenting the SAE's certificate, trusting its KME's CA (``ca.crt``)."""
    return Etsi014Client(
        url,
        ca_pem=ca_pem or creds["ca.crt"],
        cert_pem=creds["tls.crt"],
        key_pem=creds["tls.key"],
        timeout=CLIENT_TIMEOUT,
    )


async def retry_until(
    call: Callable[[], Awaitable[T]], *, timeout: float, retry_on: tuple[int, ...]
) -> T:
    """``call()`` until it answers 200, retrying the given 014 error statuses (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except Etsi014Error as exc:
            if exc.status not in retry_on or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def warm_up(etsi: Etsi, alice: Etsi014Client) -> None:
    """Retry the first enc_keys until node-a knows etsi-b and the stream has keys."""
    if etsi.warm:
        return
    container = await retry_until(
        lambda: alice.enc_keys(SAE_B, number=1, size=CHUNK_BITS),
        timeout=ANNOUNCE_TIMEOUT,
        retry_on=(400, 503),  # UnknownSae (not announced yet), InsufficientKeys
    )
    assert len(container["keys"]) == 1
    etsi.warm = True


@pytest.fixture
async def alice(etsi: Etsi) -> AsyncIterator[Etsi014Client]:
    """SAE etsi-a (master) at node-a's KME, after the first enc_keys succeeded."""
    async with sae_client(etsi.url_a, etsi.creds_a) as client:
        await warm_up(etsi, client)
        yield client


@pytest.fixture
async def bob(etsi: Etsi) -> AsyncIterator[Etsi014Client]:
    """SAE etsi-b (slave) at node-b's KME."""
    async with sae_client(etsi.url_b, etsi.creds_b) as client:
        yield client


async def expect_error(status: int, call: Awaitable[Any]) -> Etsi014Error:
    """``call`` fails with ``status`` and a JSON Error document with a message."""
    with pytest.raises(Etsi014Error) as caught:
        await call
    error = caught.value
    assert error.status == status, f"expected {status}, got {error.status}: {error.body!r}"
    assert error.content_type == "application/json", error.content_type
    assert isinstance(error.message, str), error.body
    assert error.message.strip(), error.body
    return error


# --- kubectl helpers (run in a thread: kubectl blocks) -----------------------------------------


async def finished(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    """The KeyRequest once its phase is Ready or Failed (polled, bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = await asyncio.to_thread(
            kubectl_json, cluster, "get", "keyrequest", name, "-n", namespace
        )
        if obj is not None and obj.get("status", {}).get("phase") in ("Ready", "Failed"):
            return obj
        await asyncio.sleep(0.3)
    raise AssertionError(f"KeyRequest {namespace}/{name} not finished in {READY_TIMEOUT}s: {obj}")


async def secret_keys(cluster: Cluster, name: str, namespace: str) -> dict[str, bytes]:
    secret = await asyncio.to_thread(kubectl_json, cluster, "get", "secret", name, "-n", namespace)
    assert secret is not None, f"Secret {namespace}/{name} missing"
    return {k: base64.b64decode(v) for k, v in secret["data"].items() if k != "keys.json"}


def streams_towards(cluster: Cluster, peer: str) -> set[tuple[int, int]]:
    """(chunk bits, capacity) of every KeyStream on ``cluster`` whose QKDLink leads to ``peer``."""
    links = kubectl_json(cluster, "get", "qkdlinks")
    streams = kubectl_json(cluster, "get", "keystreams")
    assert links is not None
    assert streams is not None
    capacity = {
        link["metadata"]["name"]: int(link["spec"].get("keyBufferCapacity", 100_000))
        for link in links["items"]
        if link["spec"].get("peerNodeID") == peer
    }
    return {
        (int((s["spec"].get("qos") or {}).get("keyChunkSize", 256)), capacity[s["spec"]["link"]])
        for s in streams["items"]
        if s["spec"].get("link") in capacity
    }


# --- delivery --------------------------------------------------------------------------------


async def test_enc_keys_on_a_and_dec_keys_on_b_give_the_same_bytes(
    alice: Etsi014Client, bob: Etsi014Client
) -> None:
    container = await alice.enc_keys(SAE_B, number=5, size=CHUNK_BITS)
    master = key_map(container)
    assert len(master) == 5, container.keys()
    assert all(len(key) == CHUNK_BYTES for key in master.values())
    assert len(set(master.values())) == 5, "five keys, five different byte strings"
    ids = list(master)
    # The slave asks in another order; the KME answers in the order asked.
    asked = list(reversed(ids))
    slave = await bob.dec_keys(SAE_A, asked)
    assert [k["key_ID"] for k in slave["keys"]] == asked
    assert key_map(slave) == master


async def test_get_forms_and_the_default_size(alice: Etsi014Client, bob: Etsi014Client) -> None:
    status = await alice.status(SAE_B)
    # GET enc_keys without size: keys of the pair's default key_size.
    master = key_map(await alice.enc_keys(SAE_B, number=2, method="GET"))
    assert len(master) == 2
    assert {len(k) * 8 for k in master.values()} == {status["key_size"]}
    # A size other than the chunk size: keys made of several chunks.
    larger = key_map(await alice.enc_keys(SAE_B, number=2, size=3 * CHUNK_BITS))
    assert {len(k) for k in larger.values()} == {3 * CHUNK_BYTES}
    assert not set(master) & set(larger)
    assert key_map(await bob.dec_keys(SAE_A, list(master), method="GET")) == master
    assert key_map(await bob.dec_keys(SAE_A, list(larger))) == larger


async def test_dec_keys_of_the_same_ids_twice_is_refused(
    alice: Etsi014Client, bob: Etsi014Client
) -> None:
    master = key_map(await alice.enc_keys(SAE_B, number=3, size=CHUNK_BITS))
    assert key_map(await bob.dec_keys(SAE_A, list(master))) == master
    await expect_error(400, bob.dec_keys(SAE_A, list(master)))
    # One of them alone, too.
    await expect_error(400, bob.dec_keys(SAE_A, list(master)[:1]))


async def test_dec_keys_of_keys_for_another_pair_is_refused(
    etsi: Etsi, alice: Etsi014Client, bob: Etsi014Client
) -> None:
    master = key_map(await alice.enc_keys(SAE_B, number=1, size=CHUNK_BITS))
    # Named as if another master reserved them: not found for that pair.
    await expect_error(400, bob.dec_keys("etsi-nobody", list(master)))
    # The master itself cannot take them again at its own KME.
    await expect_error(400, alice.dec_keys(SAE_B, list(master)))
    # They are still there for the right pair, once.
    assert key_map(await bob.dec_keys(SAE_A, list(master))) == master


# --- status ----------------------------------------------------------------------------------


async def test_status_fields(etsi: Etsi, alice: Etsi014Client, bob: Etsi014Client) -> None:
    # The first keys may arrive before the QKDM's next status says Up; until it does, the KME
    # may still prefer a stopped stream with more keys left in it.
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        stream = await asyncio.to_thread(kubectl_json, etsi.cluster_a, "get", "keystream", LINK)
        if (stream or {}).get("status", {}).get("state") == "Up":
            break
        assert time.monotonic() < deadline, f"KeyStream {LINK} on {A} not Up: {stream}"
        await asyncio.sleep(0.2)
    status = await alice.status(SAE_B)
    assert status["source_KME_ID"] == A
    assert status["target_KME_ID"] == B
    assert status["master_SAE_ID"] == SAE_A
    assert status["slave_SAE_ID"] == SAE_B
    assert status["stored_key_count"] > 0
    assert status["max_key_per_request"] >= 1
    assert status["min_key_size"] >= 8
    assert status["min_key_size"] % 8 == 0
    assert status["max_key_size"] >= status["min_key_size"]
    assert status["max_key_size"] % 8 == 0
    assert status["max_SAE_ID_count"] == 0
    # The KME reports the stream it draws the pair's keys from: the Up one. Links other test
    # modules added between the same nodes were stopped at their module's end, and their
    # QKDMs said so (Down, QkdmStopped), so that is this module's stream, in a full run too.
    towards_b = await asyncio.to_thread(streams_towards, etsi.cluster_a, B)
    assert (CHUNK_BITS, CAPACITY) in towards_b
    states = await asyncio.to_thread(
        etsi.cluster_a.kubectl,
        "get",
        "keystreams",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.state} {.status.availableKeys};{end}",
    )
    assert status["key_size"] == CHUNK_BITS, (status, states.stdout)
    assert status["max_key_count"] == CAPACITY, (status, states.stdout)
    assert status["stored_key_count"] <= status["max_key_count"]
    for name in (
        "key_size",
        "stored_key_count",
        "max_key_count",
        "max_key_per_request",
        "max_key_size",
        "min_key_size",
        "max_SAE_ID_count",
    ):
        assert type(status[name]) is int, (name, status[name])
    # The other way round: etsi-b as the master at node-b.
    reverse = await retry_until(
        lambda: bob.status(SAE_A), timeout=ANNOUNCE_TIMEOUT, retry_on=(400,)
    )
    assert (reverse["source_KME_ID"], reverse["target_KME_ID"]) == (B, A)
    assert (reverse["master_SAE_ID"], reverse["slave_SAE_ID"]) == (SAE_B, SAE_A)


async def test_status_of_an_unknown_slave_sae_is_400(alice: Etsi014Client) -> None:
    await expect_error(400, alice.status("etsi-unknown-slave"))


# --- authentication --------------------------------------------------------------------------


async def expect_unauthorized(client: Etsi014Client, *, tls_refusal_allowed: bool = False) -> None:
    """Every method answers 401 (or the TLS handshake is refused, where allowed)."""
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.status(SAE_B),
        lambda: client.enc_keys(SAE_B, number=1, size=CHUNK_BITS),
        lambda: client.enc_keys(SAE_B, number=1, size=CHUNK_BITS, method="GET"),
        lambda: client.dec_keys(SAE_A, [str(uuid.uuid4())]),
    ]
    for call in calls:
        with pytest.raises((Etsi014Error, aiohttp.ClientConnectionError)) as caught:
            await call()
        refusal = caught.value
        if isinstance(refusal, Etsi014Error):
            assert refusal.status == 401, f"expected 401, got {refusal.status}: {refusal.body!r}"
            assert refusal.message, refusal.body
        else:
            # A client certificate from a CA the KME does not trust fails the handshake.
            assert tls_refusal_allowed, f"connection failed instead of a 401: {refusal!r}"


async def test_no_client_certificate_is_401(etsi: Etsi, alice: Etsi014Client) -> None:
    async with Etsi014Client(
        etsi.url_a, ca_pem=etsi.creds_a["ca.crt"], timeout=CLIENT_TIMEOUT
    ) as anonymous:
        await expect_unauthorized(anonymous)
        error = await expect_error(401, anonymous.status(SAE_B))
        assert "certificate" in (error.message or "")


async def test_certificate_of_an_sae_of_another_node_is_refused(
    etsi: Etsi, alice: Etsi014Client
) -> None:
    # etsi-b's own certificate (issued by node-b's CA) presented to node-a's KME.
    async with sae_client(etsi.url_a, etsi.creds_b, ca_pem=etsi.creds_a["ca.crt"]) as stranger:
        await expect_unauthorized(stranger, tls_refusal_allowed=True)


async def test_certificate_of_no_registered_sae_is_401(etsi: Etsi, alice: Etsi014Client) -> None:
    node_ca = etsi.network.nodes[A].ca
    # Signed by node-a's own CA, so TLS accepts it, but no Sae holds it: one for an SAE ID
    # nobody registered, and a second certificate for etsi-a that is not its credential.
    for sae_id in ("etsi-ghost", SAE_A):
        forged = pki.issue_sae_certificate(node_ca, sae_id)
        creds = {"tls.crt": forged.cert_pem, "tls.key": forged.key_pem, "ca.crt": node_ca.cert_pem}
        async with sae_client(etsi.url_a, creds) as impostor:
            await expect_unauthorized(impostor)


async def test_certificate_of_a_deleted_sae_is_401(etsi: Etsi, alice: Etsi014Client) -> None:
    network = etsi.network
    await asyncio.to_thread(network.register_sae, A, NS_A, SAE_REVOKED, SAE_REVOKED)
    creds = await asyncio.to_thread(network.sae_credentials, A, NS_A, SAE_REVOKED)
    async with (
        sae_client(etsi.url_a, creds) as revoked,
        sae_client(etsi.url_a, creds) as fresh_later,
    ):
        # Registered: authenticated (etsi-b is known to node-a since the warm-up).
        status = await retry_until(
            lambda: revoked.status(SAE_B), timeout=ANNOUNCE_TIMEOUT, retry_on=(401,)
        )
        assert status["master_SAE_ID"] == SAE_REVOKED
        result = await asyncio.to_thread(
            etsi.cluster_a.kubectl,
            "delete",
            "sae",
            SAE_REVOKED,
            "-n",
            NS_A,
            "--wait=true",
            "--timeout=90s",
        )
        assert result.returncode == 0, result.stderr
        # Deleting a Sae revokes its certificate at once (its finalizer ran); allow a little
        # slack all the same. The kept-alive connection is refused too.
        deadline = time.monotonic() + 15
        while True:
            try:
                await revoked.status(SAE_B)
            except Etsi014Error as exc:
                if exc.status == 401:
                    break
                raise
            assert time.monotonic() < deadline, "the deleted Sae's certificate still works"
            await asyncio.sleep(0.3)
        await expect_unauthorized(revoked)
        await expect_unauthorized(fresh_later)


# --- malformed requests ----------------------------------------------------------------------


async def test_malformed_enc_keys_requests_are_400(alice: Etsi014Client) -> None:
    status = await alice.status(SAE_B)
    too_many = status["max_key_per_request"] + 1
    too_large = status["max_key_size"] + 8
    post: list[tuple[str, dict[str, Any] | bytes, str | None]] = [
        ("not JSON", b"{number: 1", "JSON"),
        ("not UTF-8", b'{"number": 1, "size": "\xff"}', None),
        ("an array", b"[1, 2]", "object"),
        ("number as a string", {"number": "2", "size": CHUNK_BITS}, "number"),
        ("size as a float", {"number": 1, "size": 256.5}, "size"),
        ("number a bool", {"number": True, "size": CHUNK_BITS}, "number"),
        ("number 0", {"number": 0, "size": CHUNK_BITS}, "number"),
        ("number negative", {"number": -1, "size": CHUNK_BITS}, "number"),
        ("number too large", {"number": too_many, "size": CHUNK_BITS}, "number"),
        ("size not a multiple of 8", {"number": 1, "size": 260}, "multiple of 8"),
        ("size 0", {"number": 1, "size": 0}, "size"),
        ("size too large", {"number": 1, "size": too_large}, "size"),
        (
            "unsupported mandatory extension",
            {"number": 1, "size": CHUNK_BITS, "extension_mandatory": [{"abc_route_type": "x"}]},
            "extension",
        ),
        (
            "additional slave SAEs",
            {"number": 1, "size": CHUNK_BITS, "additional_slave_SAE_IDs": ["etsi-c"]},
            "additional_slave_SAE_IDs",
        ),
    ]
    for what, body, mentioned in post:
        if isinstance(body, bytes):
            call = alice.request("POST", SAE_B, "enc_keys", data=body)
        else:
            call = alice.request("POST", SAE_B, "enc_keys", json_body=body)
        try:
            error = await expect_error(400, call)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        if mentioned:
            assert mentioned.lower() in (error.message or "").lower(), (what, error.body)
    get: list[tuple[str, list[tuple[str, str | int]]]] = [
        ("number not an integer", [("number", "abc")]),
        ("number 0", [("number", 0)]),
        ("number too large", [("number", too_many)]),
        ("size not a multiple of 8", [("number", 1), ("size", 260)]),
        ("number twice", [("number", 1), ("number", 2)]),
    ]
    for what, params in get:
        try:
            await expect_error(400, alice.request("GET", SAE_B, "enc_keys", params=params))
        except AssertionError as exc:
            raise AssertionError(f"GET {what}: {exc}") from None
    # An SAE ID that cannot be one, and an unknown slave SAE.
    await expect_error(400, alice.enc_keys("-bad-", number=1, size=CHUNK_BITS))
    await expect_error(400, alice.enc_keys("etsi-nobody", number=1, size=CHUNK_BITS))


async def test_malformed_dec_keys_requests_are_400(bob: Etsi014Client) -> None:
    cases: list[tuple[str, dict[str, Any] | bytes]] = [
        ("not JSON", b"key_IDs"),
        ("empty body", b""),
        ("no key_IDs", {}),
        ("key_IDs not an array", {"key_IDs": "x"}),
        ("key_IDs empty", {"key_IDs": []}),
        ("entry not an object", {"key_IDs": ["6e8d5f2a-3d2b-4bb4-9d1f-9f2f5e1f1a11"]}),
        ("entry without key_ID", {"key_IDs": [{"id": "x"}]}),
        ("key_ID not a UUID", {"key_IDs": [{"key_ID": "not-a-uuid"}]}),
        ("the same key_ID twice", {"key_IDs": [{"key_ID": str(uuid.UUID(int=7))}] * 2}),
        ("an unknown key_ID", {"key_IDs": [{"key_ID": str(uuid.uuid4())}]}),
    ]
    for what, body in cases:
        if isinstance(body, bytes):
            call = bob.request("POST", SAE_A, "dec_keys", data=body)
        else:
            call = bob.request("POST", SAE_A, "dec_keys", json_body=body)
        try:
            await expect_error(400, call)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
    await expect_error(400, bob.request("GET", SAE_A, "dec_keys", params=[]))
    await expect_error(400, bob.request("GET", SAE_A, "dec_keys", params=[("key_ID", "x")]))


# --- 014 and KeyRequests share one store ------------------------------------------------------


async def test_keys_through_014_and_keyrequests_never_overlap(
    etsi: Etsi, alice: Etsi014Client, bob: Etsi014Client
) -> None:
    requests, per_request, calls, per_call = 4, 5, 8, 5

    async def keyrequest() -> str:
        return await asyncio.to_thread(
            apply_keyrequest,
            etsi.cluster_a,
            NS_A,
            sae=SAE_A,
            slaveSaeID=SAE_B,
            number=per_request,
            size=CHUNK_BITS,
            timeoutSeconds=60,
        )

    async def enc_keys() -> dict[str, bytes]:
        return key_map(await alice.enc_keys(SAE_B, number=per_call, size=CHUNK_BITS))

    # Both kinds at once, from the same stream(s).
    started = await asyncio.gather(
        *(keyrequest() for _ in range(requests)), *(enc_keys() for _ in range(calls))
    )
    names = [n for n in started if isinstance(n, str)]
    through_014 = [m for m in started if isinstance(m, dict)]
    kr_keys: dict[str, bytes] = {}
    slave_names: list[str] = []
    for name in names:
        obj = await finished(etsi.cluster_a, name, NS_A)
        status = obj["status"]
        assert status["phase"] == "Ready", status
        keys = await secret_keys(etsi.cluster_a, status["secretName"], NS_A)
        assert sorted(keys) == sorted(status["keyIDs"])
        assert not set(keys) & set(kr_keys), "two KeyRequests got the same key ID"
        kr_keys.update(keys)
        slave_names.append(f"{SAE_B}-{obj['metadata']['uid']}")
    api_keys: dict[str, bytes] = {}
    for got in through_014:
        assert not set(got) & set(api_keys), "two enc_keys calls got the same key ID"
        api_keys.update(got)
    assert len(kr_keys) == requests * per_request
    assert len(api_keys) == calls * per_call
    assert not set(kr_keys) & set(api_keys), "a key went out through both 014 and a KeyRequest"
    materials = list(kr_keys.values()) + list(api_keys.values())
    assert len(set(materials)) == len(materials), "the same key bytes went out twice"
    # The slave side: the 014 keys are fetched once through dec_keys with the same bytes; the
    # KeyRequests' keys went to etsi-b's automatic slave KeyRequests and are not served again.
    assert key_map(await bob.dec_keys(SAE_A, list(api_keys))) == api_keys
    for slave in slave_names:
        obj = await finished(etsi.cluster_b, slave, NS_B)
        assert obj["status"]["phase"] == "Ready", obj["status"]
    await expect_error(400, bob.dec_keys(SAE_A, list(kr_keys)[:per_request]))


# --- the key supply behind the API -----------------------------------------------------------

REFILL_LINK = "etsi014-refill"
REFILL_RATE_BPS = 128_000  # 500 chunks of 256 bits a second
REFILL_CAPACITY = 200  # full in under a second
REFILL_DEVICE_BITS = 256_000  # the device keeps 1,000 chunks: a window of 2 s


async def test_keys_flow_again_after_the_buffer_was_full_for_a_while(etsi: Etsi) -> None:
    network = etsi.network
    await asyncio.to_thread(
        network.add_link,
        A,
        B,
        name=REFILL_LINK,
        rate_bps=REFILL_RATE_BPS,
        capacity=REFILL_CAPACITY,
        chunk_bits=256,
        buffer_bits=REFILL_DEVICE_BITS,
    )
    window = REFILL_DEVICE_BITS / REFILL_RATE_BPS
    async with KeyStore.from_url(network.nodes[A].redis_url) as store:

        async def added() -> tuple[int, int]:
            try:
                counts = await store.counts(stream=REFILL_LINK)
            except UnknownStreamError:
                return 0, 0
            return counts.added, counts.held

        deadline = time.monotonic() + READY_TIMEOUT
        while (await added())[1] < REFILL_CAPACITY:
            assert time.monotonic() < deadline, f"the buffer did not fill: {await added()}"
            await asyncio.sleep(0.2)
        # Full for well over the device's window: what it generated meanwhile is gone.
        await asyncio.sleep(2.5 * window)
        before, _ = await added()
        async with KeyStore.from_url(network.nodes[B].redis_url) as peer:
            await take_on_both(
                store,
                peer,
                stream=REFILL_LINK,
                count=REFILL_CAPACITY // 2,
                size_bits=256,
                owner="etsi014-test/refill",
            )
        # At 500 chunks/s the free half refills in a fraction of a second; allow plenty.
        deadline = time.monotonic() + 20
        while (await added())[0] == before:
            assert time.monotonic() < deadline, (
                f"no key stored in 20 s after consuming {REFILL_CAPACITY // 2} of a full buffer "
                f"(added {before}, held {(await added())[1]} of {REFILL_CAPACITY})"
            )
            await asyncio.sleep(0.2)
