"""The inter-node channel's HTTPS server: mutual TLS, and a peer node ID on every request.

``controllers.main`` builds the app with ``init_channel_app`` (passing the route tables of the
modules that speak over the channel: KRP, the slave-side hand-over, LSAs, relay) and serves it
with ``ChannelServer``. Handlers read the authenticated peer with ``peer_node(request)``.

How a client is authenticated, and why in two steps:

1. TLS: the server context requires a client certificate chaining to one of the peer CAs
   (``CERT_REQUIRED``). Python's ssl module has one trust store per context and no verify
   callback, so this step cannot tell which link's CA signed the certificate.
2. The middleware reads the peer's certificate from the connection and runs
   ``authenticate_peer`` against the registry's current peers: the certificate must chain to a
   CA of a link whose peerNodeID is the node ID the certificate names. Refusals are 403 with an
   ETSI-style ``{message, details}`` body and are recorded in ``PeerRefusals``. An accepted
   certificate is remembered until the registry changes or it expires (``AuthenticatedPeers``),
   so a kept-alive peer's messages skip the path validation.

When links change, the registry tells the app, which adds any new CA to the live TLS context
(``load_verify_locations`` on a running context takes effect for the next handshake), so a new
peer gets in without a restart. A CA can not be taken out of a live context, but that does not
matter: step 2 checks against the registry, so a removed link's CA stops vouching at once; it
only costs a 403 instead of a failed handshake until the next restart. (Rebuilding the context
and restarting the site was the alternative; it drops every open connection on each change.)
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web

from controllers import pki
from controllers.channel.paths import PING_PATH
from controllers.channel.peers import Peer, PeerRegistry
from controllers.channel.refusals import PeerRefusals, Refusal
from controllers.channel.trust import AuthenticatedPeers, PeerRejected
from controllers.https import HttpsServer
from controllers.identity import NodeIdentity
from qss_api.http_errors import error_response as error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDENTITY: Final = web.AppKey("qss_channel_identity", NodeIdentity)
REGISTRY: Final = web.AppKey("qss_channel_registry", PeerRegistry)
REFUSALS: Final = web.AppKey("qss_channel_refusals", PeerRefusals)
SSL_CONTEXT: Final = web.AppKey("qss_channel_ssl_context", ssl.SSLContext)
AUTHENTICATED: Final = web.AppKey("qss_channel_authenticated", AuthenticatedPeers)
PEER_NODE: Final = web.RequestKey("qss_channel_peer_node", str)


def peer_node(request: web.Request) -> str:
    """The node ID of the authenticated peer that sent ``request``."""
    return request[PEER_NODE]


def register(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Add a route to the channel app before it starts (the router freezes at start)."""
    app.router.add_route(method, path, handler)


def _refuse(request: web.Request, rejected: PeerRejected) -> web.Response:
    request.app[REFUSALS].record(
        Refusal(
            reason=rejected.reason,
            message=rejected.message,
            links=rejected.links,
            claimed_node_id=rejected.claimed_node_id,
            fingerprint=rejected.fingerprint,
            remote=request.remote,
        )
    )
    detail: dict[str, Any] = {"reason": rejected.reason}
    if rejected.claimed_node_id is not None:
        detail["claimed_node_id"] = rejected.claimed_node_id
    if rejected.fingerprint is not None:
        detail["certificate_sha256"] = rejected.fingerprint
    return error_response(403, f"refused: {rejected.message}", [detail])


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return _refuse(
            request, PeerRejected("NotTLS", "the inter-node channel only speaks HTTPS with mTLS")
        )
    try:
        registry = request.app[REGISTRY]
        node_id = request.app[AUTHENTICATED].authenticate(
            ssl_object.getpeercert(binary_form=True),
            registry.peers(),
            generation=registry.generation,
        )
    except PeerRejected as rejected:
        return _refuse(request, rejected)
    request.app[REFUSALS].accepted(node_id)
    request[PEER_NODE] = node_id
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return error_response(exc.status, exc.text or exc.reason)
    except Exception:
        # The peer gets a generic message; the cause stays in our log (handlers must not put
        # key material in exceptions, as the house rules say).
        log.exception(
            "channel handler for %s %s from %s failed", request.method, request.path, node_id
        )
        return error_response(500, "internal error while handling the request on this node")


async def _ping(request: web.Request) -> web.Response:
    return web.json_response(
        {"node_id": request.app[IDENTITY].node_id, "peer_node_id": peer_node(request)}
    )


def _trust_new_cas(context: ssl.SSLContext, loaded: set[str], peers: Mapping[str, Peer]) -> None:
    """Add the peers' CAs that ``context`` does not trust yet (``loaded``: their fingerprints)."""
    for peer in peers.values():
        for anchor in peer.trust_anchors:
            fp = pki.fingerprint(anchor)
            if fp not in loaded:
                context.load_verify_locations(cadata=pki.cert_pem(anchor).decode("ascii"))
                loaded.add(fp)


def init_channel_app(
    *,
    identity: NodeIdentity,
    registry: PeerRegistry,
    refusals: PeerRefusals | None = None,
    routes: Iterable[Iterable[web.AbstractRouteDef]] = (),
) -> web.Application:
    """The channel's aiohttp app: authentication middleware, the ping route, ``routes`` (e.g.
    ``web.RouteTableDef``s of the KRP and LSA modules), and a TLS context for ``ChannelServer``
    that trusts the registry's peer CAs and follows the registry's changes."""
    app = web.Application(middlewares=[_authenticate])
    app[IDENTITY] = identity
    app[REGISTRY] = registry
    app[REFUSALS] = refusals if refusals is not None else PeerRefusals()
    app[AUTHENTICATED] = AuthenticatedPeers()
    context = identity.server_ssl_context()
    loaded: set[str] = set()
    _trust_new_cas(context, loaded, registry.peers())
    app[SSL_CONTEXT] = context

    async def follow_registry(app: web.Application) -> AsyncIterator[None]:
        _trust_new_cas(context, loaded, registry.peers())  # changes made before start-up
        unsubscribe = registry.subscribe(lambda peers: _trust_new_cas(context, loaded, peers))
        yield
        unsubscribe()

    app.cleanup_ctx.append(follow_registry)
    app.router.add_get(PING_PATH, _ping)
    for table in routes:
        app.router.add_routes(table)
    return app


class ChannelServer(HttpsServer):
    """Serves a channel app (from ``init_channel_app``) on ``host:port``."""

    what = "inter-node channel"

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "0.0.0.0",
        port: int = 8443,
        shutdown_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            app,
            ssl_context=app[SSL_CONTEXT],
            host=host,
            port=port,
            shutdown_timeout=shutdown_timeout,
        )
