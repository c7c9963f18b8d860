"""Serving the ETSI GS QKD 014 app over HTTPS with client certificates.

``controllers.main`` starts an ``Etsi014Server`` for the app from ``controllers.etsi014.init``
(or runs ``serve`` as a task); the Sae reconciler calls ``trust_client_ca`` when a manually
registered SAE brings a certificate from a CA the server does not trust yet.

TLS: the server presents the node certificate (``NodeIdentity``) and trusts client certificates
issued by the node CA and by any extra CA given. The client certificate is optional at the TLS
level (``CERT_OPTIONAL``) so that a client without one still gets an HTTP 401 with a JSON
message saying what is missing, instead of a bare handshake failure; a certificate that *is*
presented must chain to a trusted CA or the handshake fails. Which SAE a certificate belongs to,
and whether it is still valid, the app decides per request (``SaeAuthenticator``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from types import TracebackType

from aiohttp import web

from controllers.etsi014.settings import Etsi014Settings
from controllers.identity import NodeIdentity

log = logging.getLogger(__name__)


def server_ssl_context(
    identity: NodeIdentity, *, extra_client_ca_pems: Iterable[bytes] = ()
) -> ssl.SSLContext:
    """A context presenting the node certificate, verifying client certificates against the
    node CA and ``extra_client_ca_pems``, and accepting connections without one (for the 401)."""
    context = identity.server_ssl_context(
        client_ca_pems=[identity.ca_cert_pem, *extra_client_ca_pems]
    )
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class Etsi014Server:
    """Serves a 014 app on ``settings.host:settings.port`` (port 0: any free port)."""

    def __init__(
        self,
        app: web.Application,
        *,
        identity: NodeIdentity,
        settings: Etsi014Settings | None = None,
        extra_client_ca_pems: Iterable[bytes] = (),
    ) -> None:
        settings = settings if settings is not None else Etsi014Settings()
        self.app, self.host, self._port = app, settings.host, settings.port
        self.ssl_context = server_ssl_context(identity, extra_client_ca_pems=extra_client_ca_pems)
        # handler_cancellation stays off: an SAE hanging up must not cut a key delivery off
        # half way; the delivery runs to its end (or its own timeout) either way.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=settings.shutdown_timeout,
            handler_cancellation=False,
        )

    @property
    def port(self) -> int:
        """The port actually bound (known after ``start``)."""
        return self._port

    @property
    def url(self) -> str:
        """The API's base URL on a loopback-friendly host (for tests and local clients)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self._port}"

    def trust_client_ca(self, ca_pem: bytes) -> None:
        """Also accept client certificates issued by ``ca_pem`` from the next handshake on."""
        self.ssl_context.load_verify_locations(cadata=ca_pem.decode("ascii"))

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self._port = int(self._runner.addresses[0][1])
        log.info("ETSI 014 key API listening on %s:%d", self.host, self._port)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Etsi014Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve(
    app: web.Application,
    *,
    identity: NodeIdentity,
    settings: Etsi014Settings | None = None,
    extra_client_ca_pems: Iterable[bytes] = (),
) -> None:
    """Serve ``app`` until cancelled (for running the API as a task beside the operator)."""
    async with Etsi014Server(
        app, identity=identity, settings=settings, extra_client_ca_pems=extra_client_ca_pems
    ):
        await asyncio.Event().wait()
