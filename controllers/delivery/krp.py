"""The peer side of key reservation (KRP) on the inter-node channel.

Routes a neighbour calls on this node: reserve the key IDs it reserved for one of our SAEs,
release them, and hand delivered keys over to our slave SAE. ``krp_routes`` builds them for
``controllers.channel.init_channel_app``; the calling node is the one the channel
authenticated, and it may only touch streams whose link leads to it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controllers.channel import error_response, peer_node
from controllers.delivery.service import (
    HANDOVER_PATH,
    RELEASE_PATH,
    RESERVE_PATH,
    SaeLookup,
    pair_owner,
)
from controllers.delivery.topology import Topology
from controllers.keystore import (
    KeyIdMismatchError,
    KeyStore,
    KeysUnavailableError,
    ReservationConflictError,
    ReservedKey,
    UnknownReservationError,
    UnknownStreamError,
)

log = logging.getLogger("controllers.delivery.krp")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SAE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class HandOver:
    """Keys a neighbour delivered to its master SAE, now due to our slave SAE."""

    from_node: str
    request_id: str
    master_sae_id: str
    slave_sae_id: str
    size_bits: int
    key_ids: tuple[str, ...]


HandOverSink = Callable[[HandOver], Awaitable[None]]


class BadMessage(ValueError):
    """A KRP message that is not what the protocol says."""


def _field(body: Any, name: str, kind: type) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get(name), kind):
        raise BadMessage(f"field {name!r} must be a {kind.__name__}")
    return body[name]


def _sae(body: Any, name: str) -> str:
    value = str(_field(body, name, str))
    if not _SAE.match(value):
        raise BadMessage(f"field {name!r} is not an SAE ID")
    return value


def _uuid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _UUID.match(value):
        raise BadMessage(f"{what} is not a UUID")
    return value


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise BadMessage("the body is not JSON") from None


def krp_routes(
    *, store: KeyStore, topology: Topology, local_saes: SaeLookup, handover: HandOverSink
) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    def own_stream(request: web.Request, body: Any) -> str:
        stream = str(_field(body, "stream", str))
        if topology.peer_of_stream(stream) != peer_node(request):
            raise PermissionError(
                f"key stream {stream!r} does not lead to node {peer_node(request)}"
            )
        return stream

    @routes.post(RESERVE_PATH)
    async def reserve(request: web.Request) -> web.Response:
        try:
            body = await _json(request)
            stream = own_stream(request, body)
            master, slave = _sae(body, "master_sae"), _sae(body, "slave_sae")
            reservation_id = _uuid(body.get("reservation_id"), "reservation_id")
            size_bits = int(_field(body, "size_bits", int))
            keys = [
                ReservedKey(
                    key_id=_uuid(k.get("key_id"), "key_id"),
                    chunk_ids=tuple(_uuid(c, "chunk_id") for c in k.get("chunk_ids", [])),
                )
                for k in _field(body, "keys", list)
            ]
        except BadMessage as exc:
            return error_response(400, f"malformed reservation: {exc}")
        except PermissionError as exc:
            return error_response(403, str(exc))
        if local_saes.lookup(slave) is None:
            return error_response(404, f"SAE {slave!r} is not registered with this node")
        try:
            await store.reserve_ids(
                stream=stream,
                reservation_id=reservation_id,
                owner=pair_owner(master, slave),
                size_bits=size_bits,
                keys=keys,
            )
        except (KeysUnavailableError, UnknownStreamError) as exc:
            return error_response(409, str(exc), [{"reason": "KeysUnavailable"}])
        except (ReservationConflictError, KeyIdMismatchError) as exc:
            return error_response(409, str(exc), [{"reason": "Conflict"}])
        return web.json_response({"reserved": len(keys)})

    @routes.post(RELEASE_PATH)
    async def release(request: web.Request) -> web.Response:
        try:
            body = await _json(request)
            stream = own_stream(request, body)
            reservation_id = _uuid(body.get("reservation_id"), "reservation_id")
        except BadMessage as exc:
            return error_response(400, f"malformed release: {exc}")
        except PermissionError as exc:
            return error_response(403, str(exc))
        try:
            released = await store.release(stream=stream, reservation_id=reservation_id)
        except (UnknownReservationError, UnknownStreamError):
            released = 0
        return web.json_response({"released": released})

    @routes.post(HANDOVER_PATH)
    async def hand_over(request: web.Request) -> web.Response:
        try:
            body = await _json(request)
            message = HandOver(
                from_node=peer_node(request),
                request_id=_uuid(body.get("request_id"), "request_id"),
                master_sae_id=_sae(body, "master_sae"),
                slave_sae_id=_sae(body, "slave_sae"),
                size_bits=int(_field(body, "size_bits", int)),
                key_ids=tuple(_uuid(k, "key ID") for k in _field(body, "key_ids", list)),
            )
        except BadMessage as exc:
            return error_response(400, f"malformed hand-over: {exc}")
        if local_saes.lookup(message.slave_sae_id) is None:
            return error_response(404, f"SAE {message.slave_sae_id!r} is not registered here")
        await handover(message)
        return web.json_response({"accepted": len(message.key_ids)})

    return routes
