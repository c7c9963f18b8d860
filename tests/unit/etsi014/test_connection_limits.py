"""The 014 server's edge (``controllers.https``, shared with the inter-node channel): errors of
aiohttp's own HTTP parser are JSON ``{message, details}``, idle connections and TLS handshakes
are bounded in time, and one client cannot hold more than its share of connections.

Raw TLS sockets here, not the 014 client: these are the things a well-behaved client never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from controllers import pki
from controllers.etsi014 import Etsi014Server, Etsi014Settings, init
from controllers.https import ConnectionLimits
from tests.unit.etsi014.conftest import NODE_ID, FingerprintAuthenticator, InMemoryDelivery
from tests.unit.identities import node_identity

LIMITS = ConnectionLimits(handshake_timeout=0.5, idle_timeout=0.5, max_connections_per_client=3)
# How long a test waits for the server to act on a limit: the limit plus ample slack.
WITHIN = 10.0


@contextlib.asynccontextmanager
async def _serving(ca: pki.Credentials, limits: ConnectionLimits) -> AsyncIterator[Etsi014Server]:
    settings = Etsi014Settings(host="127.0.0.1", port=0)
    app = init(
        delivery=InMemoryDelivery(), authenticator=FingerprintAuthenticator(), settings=settings
    )
    async with Etsi014Server(
        app, identity=node_identity(ca, NODE_ID), settings=settings, limits=limits
    ) as server:
        yield server


@pytest.fixture
async def server(node_ca: pki.Credentials) -> AsyncIterator[Etsi014Server]:
    async with _serving(node_ca, LIMITS) as server:
        yield server


@pytest.fixture
async def patient_server(node_ca: pki.Credentials) -> AsyncIterator[Etsi014Server]:
    """The same limits, but connections stay open until their client closes them (within any
    test's time), so that only the count decides whether one more is served."""
    async with _serving(node_ca, replace(LIMITS, idle_timeout=6 * WITHIN)) as server:
        yield server


def _client_context(ca: pki.Credentials) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.check_hostname = False
    return context


async def _tls(
    server: Etsi014Server, ca: pki.Credentials
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port, ssl=_client_context(ca))


def _split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WITHIN):
        return await reader.read()  # until the server closes


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/keys/sae-b/enc_keys HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_errors_of_the_http_parser_are_json_errors(
    server: Etsi014Server, node_ca: pki.Credentials, request_bytes: bytes
) -> None:
    reader, writer = await _tls(server, node_ca)
    writer.write(request_bytes)
    await writer.drain()
    status, headers, body = _split(await _read_to_end(reader))
    writer.close()
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert set(document) == {"message"}
    assert document["message"].startswith("malformed HTTP request")


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    server: Etsi014Server, node_ca: pki.Credentials
) -> None:
    reader, writer = await _tls(server, node_ca)
    # No request at all: the server hangs up by itself (read() returns at EOF).
    assert await _read_to_end(reader) == b""
    writer.close()


async def test_a_request_head_sent_too_slowly_is_cut_off(
    server: Etsi014Server, node_ca: pki.Credentials
) -> None:
    reader, writer = await _tls(server, node_ca)
    writer.write(b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\n")
    await writer.drain()

    async def trickle() -> None:
        while True:  # one header byte at a time, never the blank line that ends the head
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(trickle())
    try:
        assert await _read_to_end(reader) == b""
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        writer.close()


async def test_a_stalled_tls_handshake_is_closed(server: Etsi014Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # no TLS at all
    assert await _read_to_end(reader) == b""
    writer.close()


async def test_one_client_gets_at_most_its_share_of_connections(
    patient_server: Etsi014Server, node_ca: pki.Credentials
) -> None:
    # Held connections must not go by the idle timeout meanwhile: a slow machine can take
    # longer than 0.5 s to open four, and a room made that way is not the one tested here.
    server = patient_server
    held = [await _tls(server, node_ca) for _ in range(LIMITS.max_connections_per_client)]
    reader, writer = await _tls(server, node_ca)
    status, headers, body = _split(await _read_to_end(reader))
    writer.close()
    assert status == 503
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert "too many connections" in document["message"]
    assert document["details"] == [{"reason": "TooManyConnections", "retryable": True}]

    # Giving one back makes room again.
    held[0][1].close()
    await _read_to_end(held[0][0])
    async with asyncio.timeout(WITHIN):
        while True:
            reader, writer = await _tls(server, node_ca)
            writer.write(
                b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            status, _, _ = _split(await _read_to_end(reader))
            writer.close()
            if status != 503:
                break
            await asyncio.sleep(0.05)  # the server may not have seen the close yet
    assert status == 401  # served (no client certificate), not refused for the count
    for _, w in held[1:]:
        w.close()
