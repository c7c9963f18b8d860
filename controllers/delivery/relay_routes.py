"""The key relay's routes on the inter-node channel (``relay_messages`` defines each message):
prepare, commit and abort, served by ``controllers.delivery.relay.Relay``. ``relay_routes``
builds them for ``controllers.channel.init_channel_app``. Every body is read with
``qss_api.wire.decode`` before anything else happens; a bad one is a 400 that names its problems
and changes nothing. The caller is the node the channel authenticated: a prepare must come over
a stream whose link leads to it, from the node before this one on the path. A prepare answered
counts the relayed keys by this node's role on the path, one refused the abort by its reason
(``controllers.metrics``).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from controllers import metrics
from controllers.channel import peer_node
from controllers.delivery.krp import HandOverUnavailable, refusal
from controllers.delivery.relay import Relay, RelayRefusal
from controllers.delivery.relay_messages import (
    ABORT_PATH,
    COMMIT_PATH,
    PREPARE_PATH,
    RelayAbort,
    RelayAborted,
    RelayCommit,
    RelayCommitted,
    RelayPrepare,
)
from controllers.keystore import UnknownStreamError
from qss_api.wire import BadMessage, decode


def _json(answer: BaseModel) -> web.Response:
    return web.json_response(answer.model_dump(mode="json"))


def _bad(exc: BadMessage) -> web.Response:
    return refusal(400, "BadMessage", exc.message, problems=tuple(exc.problems))


def relay_routes(relay: Relay) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.post(PREPARE_PATH)
    async def prepare(request: web.Request) -> web.Response:
        try:
            message = decode(RelayPrepare, await request.read())
        except BadMessage as exc:
            return _bad(exc)
        caller = peer_node(request)
        peer = relay.topology.peer_of_stream(message.stream)
        if peer != caller:
            if peer is not None:
                return refusal(
                    403,
                    "Forbidden",
                    f"key stream {message.stream!r} does not lead to node {caller}",
                )
            return refusal(404, "UnknownStream", f"key stream {message.stream!r} is not known here")
        role: metrics.RelayRole = (
            "destination" if message.hop == len(message.path) - 1 else "repeater"
        )
        try:
            answer = await relay.on_prepare(message, caller)
        except RelayRefusal as exc:
            if exc.status != 503:  # 503: nothing held, the node before tries again
                metrics.relay_aborted(role=role, reason=exc.reason)
            return refusal(exc.status, exc.reason, exc.message)
        except UnknownStreamError as exc:
            metrics.relay_aborted(role=role, reason="UnknownStream")
            return refusal(404, "UnknownStream", str(exc))
        metrics.relayed(role=role, keys=len(message.key_ids))
        return _json(answer)

    @routes.post(COMMIT_PATH)
    async def commit(request: web.Request) -> web.Response:
        try:
            message = decode(RelayCommit, await request.read())
        except BadMessage as exc:
            return _bad(exc)
        try:
            await relay.on_commit(message, peer_node(request))
        except HandOverUnavailable as exc:
            return refusal(503, "Unavailable", str(exc))
        return _json(RelayCommitted(relay_id=message.relay_id))

    @routes.post(ABORT_PATH)
    async def abort(request: web.Request) -> web.Response:
        try:
            message = decode(RelayAbort, await request.read())
        except BadMessage as exc:
            return _bad(exc)
        dropped = await relay.on_abort(message, peer_node(request))
        return _json(RelayAborted(relay_id=message.relay_id, dropped=dropped))

    return routes
