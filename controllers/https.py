"""Serving an aiohttp app over HTTPS on one address: what the inter-node channel and the ETSI
014 key API share (``ChannelServer``, ``Etsi014Server`` build on ``HttpsServer``).

Besides TLS, this is where a server defends itself against clients that hold connections
without using them (``ConnectionLimits``):

- the TLS handshake must finish within ``handshake_timeout`` (asyncio's default is 60 s);
- a connection must deliver a complete request head within ``idle_timeout`` of opening, and
  the next one within ``idle_timeout`` of the previous answer (aiohttp's keep-alive timer runs
  from those moments and is not restarted by partial data, so it bounds both the idle time and
  the time a client may take to send its headers);
- one client address may hold at most ``max_connections_per_client`` connections; the ones
  beyond are answered 503 with a JSON error and closed.

Errors that aiohttp's HTTP parser answers itself, before any middleware runs (a malformed
request line, an oversized header, a bad chunked body), are answered in the ETSI GS QKD 014
error shape ``{"message": ..., "details": [...]}`` too, never as aiohttp's plain text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)


class ConnectionLimitsError(ValueError):
    """A connection limit the server cannot run with; the message says which."""


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    # A TLS handshake takes a few round trips; a client still not done after this is stalling.
    handshake_timeout: float = 10.0
    # Longest wait for a complete request head, from connection or previous answer. Longer
    # than aiohttp clients keep an idle connection (15 s: the channel's peers, most 014 client
    # libraries), so that the client, not the server, closes it and never sends a request on a
    # connection the server is closing; short enough that idle connections do not pile up.
    idle_timeout: float = 30.0
    # Connections one client address may hold at once: well above what a 014 client pool or a
    # peer node opens, far below what exhausts the server's file descriptors.
    max_connections_per_client: int = 64

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConnectionLimitsError(f"{name} must be a positive number of seconds")
        if self.max_connections_per_client < 1:
            raise ConnectionLimitsError("max_connections_per_client must be at least 1")


def error_body(message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    """An error document in ETSI GS QKD 014's shape, as JSON bytes."""
    document: dict[str, Any] = {"message": message}
    if details:
        document["details"] = details
    return json.dumps(document).encode()


def _raw_response(status: int, reason: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 response that closes the connection (written before any request)."""
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _PerClientCount:
    """How many connections each client address holds (shared by one server's handlers)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._warned: set[str] = set()

    def take(self, client: str) -> bool:
        if self._held[client] >= self.limit:
            if client not in self._warned:
                self._warned.add(client)
                log.warning("client %s holds %d connections; refusing more", client, self.limit)
            return False
        self._held[client] += 1
        return True

    def give_back(self, client: str) -> None:
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]
            self._warned.discard(client)


class _Handler(RequestHandler):
    """aiohttp's connection handler, counting connections per client and answering the HTTP
    parser's own errors as JSON."""

    def __init__(self, manager: web.Server, *, counts: _PerClientCount, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._counts = counts
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._counts.take(client):
            message = (
                f"too many connections from {client} (at most "
                f"{self._counts.limit}); reuse the ones you hold"
            )
            body = error_body(message, [{"reason": "TooManyConnections", "retryable": True}])
            assert isinstance(transport, asyncio.Transport)
            transport.write(_raw_response(503, "Service Unavailable", body))
            self.force_close()
            transport.close()
            return
        self._client = client

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._client is not None:
            self._counts.give_back(self._client)
            self._client = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own answer is plain text; keep its status and logging, change the body.
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            text = "internal error in this server; the cause is logged"
        else:
            text = f"malformed HTTP request: {message or plain.reason}"
        response = web.Response(
            status=status, body=error_body(text), content_type="application/json"
        )
        response.force_close()
        return response


class HttpsServer:
    """Serves ``app`` with ``ssl_context`` on ``host:port`` (port 0: any free port)."""

    what = "HTTPS server"  # for the log line; subclasses name themselves

    def __init__(
        self,
        app: web.Application,
        *,
        ssl_context: ssl.SSLContext,
        host: str,
        port: int,
        shutdown_timeout: float,
        handler_cancellation: bool = False,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.app, self.host, self._port = app, host, port
        self.ssl_context = ssl_context
        self.limits = limits if limits is not None else ConnectionLimits()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
            handler_cancellation=handler_cancellation,
        )
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port actually bound (known after ``start``)."""
        return self._port

    @property
    def url(self) -> str:
        """The server's URL on a loopback-friendly host (for QKDLinks, tests, local clients)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self._port}"

    async def start(self) -> None:
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        counts = _PerClientCount(self.limits.max_connections_per_client)

        def handler() -> _Handler:
            return _Handler(
                manager,
                counts=counts,
                loop=loop,
                access_log=None,
                keepalive_timeout=self.limits.idle_timeout,
            )

        try:
            # aiohttp's TCPSite cannot set the handshake timeout, hence the server by hand.
            self._server = await loop.create_server(
                handler,
                self.host,
                self._port,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.limits.handshake_timeout,
                reuse_address=True,
            )
        except BaseException:
            await self._runner.cleanup()
            raise
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("%s listening on %s:%d", self.what, self.host, self._port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._runner.cleanup()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
