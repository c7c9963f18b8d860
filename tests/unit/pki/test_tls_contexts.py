"""NodeIdentity's TLS contexts over a real loopback TLS connection: the node certificate is
loaded from memory, client certificates are required, and the client checks the peer's name."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from controllers import pki
from controllers.identity import NodeIdentity
from tests.unit.identities import node_identity


@asynccontextmanager
async def _server(context: ssl.SSLContext, seen: list[bytes | None]) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        seen.append(ssl_object.getpeercert(binary_form=True))
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _talk(port: int, context: ssl.SSLContext, server_hostname: str) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_hostname
    )
    try:
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture(scope="module")
def nodes() -> Callable[[str], NodeIdentity]:
    cas: dict[str, pki.Credentials] = {}

    def make(node_id: str) -> NodeIdentity:
        ca = cas.setdefault(node_id, pki.create_ca(f"{node_id} CA"))
        return node_identity(ca, node_id)

    return make


async def test_mutual_tls_between_two_nodes_with_their_own_cas(
    nodes: Callable[[str], NodeIdentity],
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    seen: list[bytes | None] = []
    async with _server(a.server_ssl_context(client_ca_pems=[b.ca_cert_pem]), seen) as port:
        line = await _talk(port, b.client_ssl_context(server_ca_pem=a.ca_cert_pem), "node-a")
    assert line == b"hello\n"
    assert seen[0] is not None
    assert pki.node_id_of(seen[0]) == "node-b"


@pytest.mark.parametrize(
    ("trusted_ca_of", "expected_node", "refusal"),
    [
        pytest.param("node-a", "node-c", r"[Hh]ostname mismatch", id="not-the-expected-node"),
        pytest.param("node-b", "node-a", "unable to get local issuer", id="signed-by-another-ca"),
    ],
)
async def test_client_refuses_a_server_it_cannot_verify(
    nodes: Callable[[str], NodeIdentity], trusted_ca_of: str, expected_node: str, refusal: str
) -> None:
    a, b = nodes("node-a"), nodes("node-b")
    trusted = {"node-a": a, "node-b": b}[trusted_ca_of].ca_cert_pem
    seen: list[bytes | None] = []
    async with _server(a.server_ssl_context(client_ca_pems=[b.ca_cert_pem]), seen) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match=refusal):
            await _talk(port, b.client_ssl_context(server_ca_pem=trusted), expected_node)


async def test_a_server_presenting_an_sae_certificate_is_refused(
    nodes: Callable[[str], NodeIdentity],
) -> None:
    # An SAE certificate (EKU clientAuth only) of node-a's own CA, named like the node.
    a, b = nodes("node-a"), nodes("node-b")
    assert a.ca_key_pem is not None
    sae = pki.issue_sae_certificate(pki.Credentials(a.ca_cert_pem, a.ca_key_pem), "node-a")
    impostor = NodeIdentity(
        node_id="node-a", ca_cert_pem=a.ca_cert_pem, cert_pem=sae.cert_pem, key_pem=sae.key_pem
    )
    seen: list[bytes | None] = []
    context = impostor.server_ssl_context(client_ca_pems=[b.ca_cert_pem])
    async with _server(context, seen) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await _talk(port, b.client_ssl_context(server_ca_pem=a.ca_cert_pem), "node-a")


async def test_server_requires_a_client_certificate(
    nodes: Callable[[str], NodeIdentity],
) -> None:
    a = nodes("node-a")
    bare = ssl.create_default_context(cadata=a.ca_cert_pem.decode())
    seen: list[bytes | None] = []
    async with _server(a.server_ssl_context(client_ca_pems=[a.ca_cert_pem]), seen) as port:
        # TLS 1.3: the client learns of the refusal on its first read, as an alert or EOF.
        try:
            line = await _talk(port, bare, "node-a")
        except (ssl.SSLError, ConnectionError):
            line = b""
    assert line == b"", "the server must not answer a client without a certificate"
    assert seen == []


def test_node_identity_repr_has_no_keys(nodes: Callable[[str], NodeIdentity]) -> None:
    a = nodes("node-a")
    text = repr(a)
    assert "PRIVATE KEY" not in text
    assert a.key_pem.decode() not in text
