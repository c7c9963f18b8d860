"""Who may call the 014 API: the client certificate names the SAE; a missing, unknown, revoked
or foreign certificate gets nothing (401 JSON, or a failed handshake for an untrusted CA)."""

from __future__ import annotations

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from controllers import pki
from controllers.etsi014 import Etsi014Server, Etsi014Settings, init
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map
from tests.unit.etsi014.conftest import FingerprintAuthenticator, InMemoryDelivery, Kme

KEY_ID = "550e8400-e29b-41d4-a716-446655440000"


async def _refused(client: Etsi014Client) -> Etsi014Error:
    with pytest.raises(Etsi014Error) as caught:
        await client.enc_keys("sae-b", number=1)
    assert caught.value.status == 401
    assert set(caught.value.body) == {"message"}
    return caught.value


async def test_a_client_without_a_certificate_gets_401_saying_so(kme: Kme) -> None:
    refusal = await _refused(kme.client(None))
    assert "no client certificate" in (refusal.message or "")
    assert kme.delivery.calls == []


async def test_every_route_requires_the_certificate_before_reading_the_request(
    kme: Kme,
) -> None:
    anonymous = kme.client(None)
    base = f"{kme.server.url}/api/v1/keys"
    for method, path, data in (
        ("GET", "/sae-b/status", None),
        ("POST", "/sae-b/enc_keys", b"{not json"),
        ("GET", "/sae-b/enc_keys?number=0", None),
        ("POST", "/sae-a/dec_keys", b"{}"),
        ("GET", "/sae-a/dec_keys?key_ID=" + KEY_ID, None),
        ("GET", "/nowhere", None),
    ):
        answer = await anonymous.raw(method, base + path, data=data)
        assert answer.status == 401, (method, path)
        assert answer.content_type == "application/json"
    assert kme.delivery.calls == []


async def test_a_certificate_of_an_unregistered_sae_gets_401(kme: Kme) -> None:
    stranger = pki.issue_sae_certificate(kme.ca, "sae-x")
    refusal = await _refused(kme.client(stranger))
    assert "not the current credential of an SAE registered on this node" in (refusal.message or "")


async def test_a_revoked_certificate_gets_401_even_on_an_open_connection(kme: Kme) -> None:
    sae_a = kme.sae("sae-a")
    assert key_map(await sae_a.enc_keys("sae-b", number=1))
    kme.authenticator.revoke(kme.credentials["sae-a"])
    await _refused(sae_a)
    with pytest.raises(Etsi014Error) as status:
        await sae_a.status("sae-b")
    assert status.value.status == 401


async def test_a_node_certificate_is_not_an_sae_credential(kme: Kme) -> None:
    await _refused(kme.client(kme.identity.credentials))


async def test_a_certificate_from_a_foreign_ca_fails_the_handshake(kme: Kme) -> None:
    foreign = pki.issue_sae_certificate(pki.create_ca("someone else's CA"), "sae-a")
    # Same SAE ID, even registered by fingerprint: TLS refuses the CA before HTTP starts.
    kme.authenticator.register("sae-a", foreign)
    with pytest.raises(aiohttp.ClientError):
        await kme.client(foreign).enc_keys("sae-b", number=1)
    assert kme.delivery.calls == []


async def test_saes_from_extra_cas_are_trusted_given_at_start_or_added_later(
    kme: Kme,
) -> None:
    early_ca, late_ca = pki.create_ca("manual SAE CA 1"), pki.create_ca("manual SAE CA 2")
    early = pki.issue_sae_certificate(early_ca, "sae-early")
    late = pki.issue_sae_certificate(late_ca, "sae-late")
    delivery, authenticator = InMemoryDelivery(), FingerprintAuthenticator()
    for sae_id, credentials in (("sae-early", early), ("sae-late", late)):
        authenticator.register(sae_id, credentials)
        delivery.link(sae_id, "sae-b")
    settings = Etsi014Settings(host="127.0.0.1", port=0)
    app = init(delivery=delivery, authenticator=authenticator, settings=settings)
    async with Etsi014Server(
        app, identity=kme.identity, settings=settings, extra_client_ca_pems=[early_ca.cert_pem]
    ) as server:
        clients = [
            Etsi014Client(
                server.url, ca_pem=kme.ca.cert_pem, cert_pem=c.cert_pem, key_pem=c.key_pem
            )
            for c in (early, late)
        ]
        try:
            assert (await clients[0].status("sae-b"))["master_SAE_ID"] == "sae-early"
            with pytest.raises(aiohttp.ClientError):
                await clients[1].status("sae-b")
            server.trust_client_ca(late_ca.cert_pem)
            await clients[1].close()  # a new connection, so a new handshake
            assert (await clients[1].status("sae-b"))["master_SAE_ID"] == "sae-late"
        finally:
            for client in clients:
                await client.close()


async def test_over_plain_http_every_request_is_refused(aiohttp_client: AiohttpClient) -> None:
    delivery, authenticator = InMemoryDelivery(), FingerprintAuthenticator()
    delivery.link("sae-a", "sae-b")
    client = await aiohttp_client(init(delivery=delivery, authenticator=authenticator))
    response = await client.get("/api/v1/keys/sae-b/status")
    assert response.status == 401
    assert "only answers HTTPS" in (await response.json())["message"]
