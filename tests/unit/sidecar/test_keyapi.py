"""The sidecar's loopback ETSI 014 endpoint in front of a real 014 server of the node (the
controller's app over mutual TLS, with the key delivery layer played by the 014 tests' double,
``InMemoryDelivery``): requests are checked before they leave the pod, forwarded as the pod's
SAE, and the node's answers checked before they reach the app."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from controllers import pki
from controllers.delivery.api import InsufficientKeys
from controllers.etsi014 import Etsi014Server, Etsi014Settings, init
from sidecar import keyapi
from sidecar.node014 import NodeKeyApi
from tests.unit.etsi014.conftest import NODE_ID, FingerprintAuthenticator, InMemoryDelivery
from tests.unit.identities import node_identity

ClientMaker = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
PREFIX = "/api/v1/keys"


@dataclass
class Node:
    ca: pki.Credentials
    server: Etsi014Server
    delivery: InMemoryDelivery
    authenticator: FingerprintAuthenticator

    def credentials(self, sae_id: str, directory: Path) -> Path:
        """Issue and register ``sae_id``'s certificate, written as its Secret volume holds it."""
        issued = pki.issue_sae_certificate(self.ca, sae_id)
        self.authenticator.register(sae_id, issued)
        directory.mkdir(exist_ok=True)
        for name, data in (
            ("tls.crt", issued.cert_pem),
            ("tls.key", issued.key_pem),
            ("ca.crt", self.ca.cert_pem),
        ):
            path = directory / name
            path.unlink(missing_ok=True)
            path.write_bytes(data)
        return directory


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    ca = pki.create_ca("node-a CA")
    delivery = InMemoryDelivery()
    delivery.link("alice", "bob", stock_keys=50)
    authenticator = FingerprintAuthenticator()
    settings = Etsi014Settings(host="127.0.0.1", port=0, get_keys_timeout=0.3)
    server = Etsi014Server(
        init(delivery=delivery, authenticator=authenticator, settings=settings),
        identity=node_identity(ca, NODE_ID),
        settings=settings,
    )
    await server.start()
    try:
        yield Node(ca=ca, server=server, delivery=delivery, authenticator=authenticator)
    finally:
        await server.close()


async def sidecar_for(
    aiohttp_client: ClientMaker, node: Node, sae_id: str, directory: Path
) -> tuple[TestClient[Any, Any], NodeKeyApi]:
    upstream = NodeKeyApi(node.server.url, node.credentials(sae_id, directory))
    client = await aiohttp_client(keyapi.init(node=upstream))
    return client, upstream


@pytest.fixture
async def alice(
    aiohttp_client: ClientMaker, node: Node, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    client, upstream = await sidecar_for(aiohttp_client, node, "alice", tmp_path / "alice")
    yield client
    await upstream.close()


@pytest.fixture
async def bob(
    aiohttp_client: ClientMaker, node: Node, tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    client, upstream = await sidecar_for(aiohttp_client, node, "bob", tmp_path / "bob")
    yield client
    await upstream.close()


async def test_status_is_the_nodes_for_the_pods_sae(alice: TestClient[Any, Any]) -> None:
    response = await alice.get(f"{PREFIX}/bob/status")
    assert response.status == 200
    status = await response.json()
    assert status["master_SAE_ID"] == "alice"
    assert status["slave_SAE_ID"] == "bob"
    assert response.headers["Cache-Control"] == "no-store"


async def test_keys_the_master_gets_the_slave_gets_by_id(
    alice: TestClient[Any, Any], bob: TestClient[Any, Any]
) -> None:
    response = await alice.post(f"{PREFIX}/bob/enc_keys", json={"number": 3, "size": 256})
    assert response.status == 200
    keys = {k["key_ID"]: k["key"] for k in (await response.json())["keys"]}
    assert len(keys) == 3
    assert all(len(base64.b64decode(k)) == 32 for k in keys.values())
    response = await bob.post(
        f"{PREFIX}/alice/dec_keys", json={"key_IDs": [{"key_ID": i} for i in keys]}
    )
    assert response.status == 200
    assert {k["key_ID"]: k["key"] for k in (await response.json())["keys"]} == keys
    # Each key once: the node refuses them a second time, and its 400 reaches the app.
    response = await bob.get(f"{PREFIX}/alice/dec_keys", params=[("key_ID", i) for i in keys])
    assert response.status == 400
    assert (await response.json())["message"]


async def test_get_forms_and_an_empty_body_ask_for_the_defaults(
    alice: TestClient[Any, Any], node: Node
) -> None:
    response = await alice.get(f"{PREFIX}/bob/enc_keys", params={"number": "2", "size": "128"})
    assert response.status == 200
    assert len((await response.json())["keys"]) == 2
    response = await alice.post(
        f"{PREFIX}/bob/enc_keys", data=b"", headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    assert len((await response.json())["keys"]) == 1
    assert node.delivery.calls[-1][1]["number"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "says"),
    [
        ("POST", "/bob/enc_keys", b'{"number": "2"}', "number"),
        ("POST", "/bob/enc_keys", b'{"number": true}', "number"),
        ("POST", "/bob/enc_keys", b'{"number": 0}', "number"),
        ("POST", "/bob/enc_keys", b'{"number": 1, "colour": "red"}', "colour"),
        ("POST", "/bob/enc_keys", b"[" * 10_000, "not valid JSON"),
        ("POST", "/alice/dec_keys", b'{"key_IDs": []}', "key_IDs"),
        ("POST", "/alice/dec_keys", b'{"key_IDs": [{"key_ID": "nope"}]}', "key_IDs.0.key_ID"),
        ("GET", "/bob/enc_keys?number=1&number=2", None, "once"),
        ("GET", "/bob/enc_keys?size=-8", None, "whole number"),
        ("GET", "/alice/dec_keys?key_ID=x", None, "key_ID"),
        ("GET", "/bad%20id!/status", None, "SAE ID"),
    ],
)
async def test_a_malformed_request_is_a_json_400_and_never_reaches_the_node(
    alice: TestClient[Any, Any], node: Node, method: str, path: str, body: bytes | None, says: str
) -> None:
    before = len(node.delivery.calls)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    response = await alice.request(method, f"{PREFIX}{path}", data=body, headers=headers)
    assert response.status == 400
    document = await response.json()
    assert says in document["message"] or says in str(document.get("details"))
    assert len(node.delivery.calls) == before


async def test_other_paths_and_methods_are_json_4xx(alice: TestClient[Any, Any]) -> None:
    for method, path, status in (
        ("GET", "/healthz", 404),
        ("DELETE", f"{PREFIX}/bob/enc_keys", 405),
        ("HEAD", f"{PREFIX}/bob/enc_keys", 405),
    ):
        response = await alice.request(method, path)
        assert response.status == status
        if method != "HEAD":
            assert (await response.json())["message"]


async def test_the_nodes_unavailable_answer_reaches_the_app_as_the_standards_503(
    alice: TestClient[Any, Any], node: Node
) -> None:
    node.delivery.fail_with = InsufficientKeys("not enough keys now")
    response = await alice.post(f"{PREFIX}/bob/enc_keys", json={"number": 1})
    assert response.status == 503
    assert (await response.json())["message"] == "not enough keys now"


async def test_a_node_that_fails_or_is_gone_is_a_503_saying_so(
    alice: TestClient[Any, Any], node: Node
) -> None:
    node.delivery.fail_with = RuntimeError("bug in the node")
    response = await alice.post(f"{PREFIX}/bob/enc_keys", json={"number": 1})
    assert response.status == 503
    assert (await response.json())["details"][0]["reason"] == "NodeFailed"
    await node.server.close()
    response = await alice.get(f"{PREFIX}/bob/status")
    assert response.status == 503
    document = await response.json()
    assert document["details"][0]["reason"] == "NodeUnreachable"


async def test_renewed_credentials_are_used_without_a_restart(
    aiohttp_client: ClientMaker, node: Node, tmp_path: Path
) -> None:
    directory = tmp_path / "alice"
    client, upstream = await sidecar_for(aiohttp_client, node, "alice", directory)
    try:
        assert (await client.get(f"{PREFIX}/bob/status")).status == 200
        old = pki.load_certificate((directory / "tls.crt").read_bytes())
        node.authenticator.revoke(
            pki.Credentials(cert_pem=(directory / "tls.crt").read_bytes(), key_pem=b"")
        )
        assert (await client.get(f"{PREFIX}/bob/status")).status == 401
        node.credentials("alice", directory)  # the kubelet swaps the Secret volume's files
        assert pki.load_certificate((directory / "tls.crt").read_bytes()) != old
        assert (await client.get(f"{PREFIX}/bob/status")).status == 200
    finally:
        await upstream.close()
