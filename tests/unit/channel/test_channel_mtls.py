"""Two and three QSS nodes talking over the real inter-node channel (mutual TLS on loopback):
who gets in, who is turned away, and that the refusals are recorded for the QKDLinks."""

from __future__ import annotations

import asyncio
import logging
import ssl

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from controllers import pki
from controllers.channel import (
    PING_PATH,
    Peer,
    PeerClient,
    PeerRefused,
    PeerRegistry,
    PeerUnreachable,
    init_channel_app,
)
from controllers.identity import NodeIdentity
from tests.unit.channel.conftest import TIMEOUT, Node, StartNode
from tests.unit.identities import node_identity


def _impostor_client(identity: NodeIdentity, target: Node) -> PeerClient:
    """A client that dials ``target`` with ``identity``, trusting ``target``'s CA."""
    peer = Peer(
        node_id=target.node_id,
        endpoint=target.server.url,
        ca_pems=(target.ca.cert_pem,),
        links=("impostor",),
    )
    return PeerClient(identity=identity, peer=peer, timeout=TIMEOUT)


async def test_two_nodes_with_their_own_cas_talk_both_ways(start_node: StartNode) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    assert await a.link(b) == []
    assert await b.link(a) == []

    assert await a.clients.post_json("node-b", "/test/echo", {"n": 1}) == {
        "peer": "node-a",
        "payload": {"n": 1},
    }
    assert await b.clients.post_json("node-a", "/test/echo", {"n": 2}) == {
        "peer": "node-b",
        "payload": {"n": 2},
    }
    assert await a.clients.ping("node-b") == {"node_id": "node-b", "peer_node_id": "node-a"}
    assert a.refusals.recent() == b.refusals.recent() == []
    assert b.refusals.accepted_at("node-a") is not None


async def test_many_concurrent_calls_share_one_session(start_node: StartNode) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    await b.link(a)
    answers = await asyncio.gather(
        *(a.clients.post_json("node-b", "/test/echo", {"i": i}) for i in range(50))
    )
    assert sorted(x["payload"]["i"] for x in answers) == list(range(50))
    assert await a.clients.client("node-b") is await a.clients.client("node-b")


async def test_client_with_a_certificate_from_an_unknown_ca_is_refused(
    start_node: StartNode,
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    # Same node ID as the real neighbour, but a CA no QKDLink of node-a names.
    forged = node_identity(pki.create_ca("someone's CA"), "node-b")
    async with _impostor_client(forged, a) as impostor:
        # TLS refuses it (the server does not know the CA), so the client sees a failed
        # connection, not an HTTP answer.
        with pytest.raises(PeerUnreachable, match="check that the peer's QKDLink trusts"):
            await impostor.ping()


async def test_ca_of_node_b_cannot_vouch_for_node_c(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b, c = await start_node("node-a"), await start_node("node-b"), await start_node("node-c")
    await a.link(b)
    await a.link(c)
    # node-b's CA (trusted by node-a for node-b) signs a certificate claiming to be node-c.
    forged = node_identity(b.ca, "node-c")
    async with _impostor_client(forged, a) as impostor:
        with pytest.raises(PeerRefused) as excinfo:
            await impostor.post_json("/test/echo", {"n": 1})
    refused = excinfo.value
    assert refused.status == 403
    assert "claims node 'node-c'" in refused.message
    assert "signed by the CA of QKDLink node-a-to-node-b (peer node-b)" in refused.message
    assert "may only vouch for node-b" in refused.message
    assert refused.details[0]["reason"] == "PeerNodeIDMismatch"
    assert refused.details[0]["certificate_sha256"] == pki.fingerprint(forged.cert_pem)

    # Recorded, and attributed to both links concerned, for their conditions.
    for link in ("node-a-to-node-b", "node-a-to-node-c"):
        refusal = a.refusals.latest_for_link(link)
        assert refusal is not None
        assert refusal.reason == "PeerNodeIDMismatch"
        assert refusal.claimed_node_id == "node-c"
        assert refusal.remote == "127.0.0.1"

    # The genuine node-c still gets in, and its earlier refusal is resolved.
    await c.link(a)
    assert (await c.clients.ping("node-a"))["peer_node_id"] == "node-c"
    assert a.refusals.latest_for_link("node-a-to-node-c") is None

    # No key material in any log line.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for identity in (a.identity, b.identity, c.identity, forged):
        assert identity.key_pem.decode().splitlines()[1] not in logged
    assert "PRIVATE KEY" not in logged


async def test_sae_certificate_cannot_act_as_a_node_on_the_channel(
    start_node: StartNode,
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    sae = pki.issue_sae_certificate(b.ca, "node-b")
    as_node = NodeIdentity(
        node_id="node-b", ca_cert_pem=b.ca.cert_pem, cert_pem=sae.cert_pem, key_pem=sae.key_pem
    )
    async with _impostor_client(as_node, a) as impostor:
        with pytest.raises(PeerRefused, match="not a QSS node certificate") as excinfo:
            await impostor.ping()
    assert excinfo.value.status == 403
    refusal = a.refusals.latest_for_link("node-a-to-node-b")
    assert refusal is not None
    assert refusal.reason == "NotANodeCertificate"


async def test_client_without_a_certificate_is_refused(start_node: StartNode) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    context = ssl.create_default_context(cadata=a.ca.cert_pem.decode())
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(a.server.url + PING_PATH, server_hostname="node-a") as resp:
                await resp.read()


async def test_link_added_at_run_time_lets_a_new_peer_in_without_restart(
    start_node: StartNode,
) -> None:
    a, c = await start_node("node-a"), await start_node("node-c")
    port = a.server.port
    await c.link(a)
    with pytest.raises(PeerUnreachable):
        await c.clients.ping("node-a")  # node-a knows no CA of node-c yet: TLS refuses

    await a.link(c)
    assert (await c.clients.ping("node-a"))["peer_node_id"] == "node-c"
    assert a.server.port == port


async def test_link_removed_at_run_time_stops_the_peer_at_once(start_node: StartNode) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    await b.link(a)
    assert (await b.clients.ping("node-a"))["peer_node_id"] == "node-b"

    await a.unlink("node-a-to-node-b")
    with pytest.raises(PeerRefused, match="no QKDLink of this node names peer node 'node-b'"):
        await b.clients.ping("node-a")
    refusal = a.refusals.recent()[-1]
    assert refusal.reason == "UnknownPeer"
    assert refusal.claimed_node_id == "node-b"


async def test_rotated_peer_ca_replaces_the_old_one(start_node: StartNode) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await b.link(a)
    old_ca = pki.create_ca("node-b old CA")
    await a.link_to("node-b", endpoint=b.server.url, ca_pem=old_ca.cert_pem)
    with pytest.raises(PeerUnreachable):
        await b.clients.ping("node-a")
    await a.link(b)  # same link, the Secret now holds node-b's current CA
    assert (await b.clients.ping("node-a"))["peer_node_id"] == "node-b"
    # A certificate from the old CA is not accepted any more, although TLS still knows it.
    old = node_identity(old_ca, "node-b")
    async with _impostor_client(old, a) as stale:
        with pytest.raises(PeerRefused, match="not trusted by the CA of QKDLink"):
            await stale.ping()


async def test_plain_http_never_reaches_a_handler(aiohttp_client: AiohttpClient) -> None:
    # Without TLS there is no peer certificate: the middleware refuses before any route runs.
    a = node_identity(pki.create_ca("node-a CA"), "node-a")
    app = init_channel_app(identity=a, registry=PeerRegistry(local_node_id="node-a"))
    client = await aiohttp_client(app)
    response = await client.post("/test/echo", json={})
    assert response.status == 403
    body = await response.json()
    assert body["message"] == "refused: the inter-node channel only speaks HTTPS with mTLS"
    assert body["details"] == [{"reason": "NotTLS"}]
