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
import ssl
from collections.abc import Iterable

from aiohttp import web

from controllers.etsi014.settings import Etsi014Settings
from controllers.https import ConnectionLimits, HttpsServer
from controllers.identity import NodeIdentity


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


class Etsi014Server(HttpsServer):
    """Serves a 014 app on ``settings.host:settings.port`` (port 0: any free port)."""

    what = "ETSI 014 key API"

    def __init__(
        self,
        app: web.Application,
        *,
        identity: NodeIdentity,
        settings: Etsi014Settings | None = None,
        extra_client_ca_pems: Iterable[bytes] = (),
        limits: ConnectionLimits | None = None,
    ) -> None:
        settings = settings if settings is not None else Etsi014Settings()
        # handler_cancellation stays off: an SAE hanging up must not cut a key delivery off
        # half way; the delivery runs to its end (or its own timeout) either way.
        super().__init__(
            app,
            ssl_context=server_ssl_context(identity, extra_client_ca_pems=extra_client_ca_pems),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout,
            handler_cancellation=False,
            limits=limits,
        )

    def trust_client_ca(self, ca_pem: bytes) -> None:
        """Also accept client certificates issued by ``ca_pem`` from the next handshake on."""
        self.ssl_context.load_verify_locations(cadata=ca_pem.decode("ascii"))


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
