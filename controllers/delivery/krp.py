"""The peer side of the key reservation protocol (KRP) on the inter-node channel.

Routes a neighbour calls on this node (``messages`` defines each message and answer): hold the
keys of its pool block for a pair, take back keys of a block it gives back, hand delivered keys
over to our slave SAE, and drop device indices its ingest passed over. ``krp_routes`` builds
them for ``controllers.channel.init_channel_app``. Every body is read with
``qss_api.wire.decode`` before anything else happens; a bad one is a 400 that names its
problems and changes nothing. The calling node is the one the channel authenticated, and it may
only touch streams whose link leads to it.

Metrics (``controllers.metrics``): the keys of each new block held for our slave SAEs, and the
blocks refused because those keys reached their bound, which is also a ``SlaveBacklog`` Warning
Event on the stream's KeyStream (deduplicated by the ``EventRecorder``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from controllers import metrics
from controllers.channel import error_response, peer_node
from controllers.delivery.messages import (
    DROP_PATH,
    HANDOVER_PATH,
    RELEASE_PATH,
    RESERVE_PATH,
    BlockHeld,
    DropIndices,
    Dropped,
    HandedOver,
    HandOver,
    HandOverSink,
    Reason,
    Refusal,
    ReleaseBlock,
    Released,
    ReserveBlock,
)
from controllers.delivery.pools import pair_owner
from controllers.delivery.service import SaeLookup
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.events import EventSink, Regarding
from controllers.keystore import (
    BlockChunk,
    BlockConflictError,
    BlockKey,
    BlockRefusedError,
    HeldBoundError,
    KeyIdMismatchError,
    KeyStore,
    UnknownStreamError,
)
from controllers.qkdm.ids import chunk_ids, epoch_of
from qss_api import KIND_KEYSTREAM
from qss_api.wire import BadMessage, decode

log = logging.getLogger("controllers.delivery.krp")

M = TypeVar("M", bound=BaseModel)


class HandOverUnavailable(Exception):
    """The hand-over could not be recorded now (e.g. the API server is down); retry later."""


def refusal(status: int, reason: Reason, message: str, **details: Any) -> web.Response:
    """A KRP error: ``{"message", "details": [Refusal]}``."""
    body = Refusal(reason=reason, **details).model_dump(mode="json", exclude_defaults=True)
    return error_response(status, message, [body])


def _json(answer: BaseModel) -> web.Response:
    return web.json_response(answer.model_dump(mode="json"))


def krp_routes(
    *,
    store: KeyStore,
    topology: Topology,
    local_saes: SaeLookup,
    handover: HandOverSink,
    settings: DeliverySettings,
    relays_to: Callable[[str], bool] = lambda sae_id: False,
    events: EventSink | None = None,
) -> web.RouteTableDef:
    """The KRP routes. ``relays_to(sae_id)``: whether this node relays keys on towards an SAE
    of another node (a route leads there), so that a neighbour's pool for a multi-hop pair may
    hold its blocks here."""
    routes = web.RouteTableDef()

    async def read(request: web.Request, model: type[M]) -> M | web.Response:
        """The message, or the answer refusing it: malformed, or about a stream that does not
        lead to the caller."""
        try:
            message = decode(model, await request.read())
        except BadMessage as exc:
            return refusal(400, "BadMessage", exc.message, problems=tuple(exc.problems))
        stream = str(getattr(message, "stream", ""))
        peer = topology.peer_of_stream(stream)
        caller = peer_node(request)
        if peer == caller:
            return message
        if peer is not None:
            return refusal(
                403, "Forbidden", f"key stream {stream!r} does not lead to node {caller}"
            )
        if stream in await store.streams():
            # Ours, but its KeyStream is not known yet (this controller is starting).
            return refusal(503, "Unavailable", f"key stream {stream!r} is not ready here yet")
        return refusal(404, "UnknownStream", f"key stream {stream!r} does not exist here")

    @routes.post(RESERVE_PATH)
    async def reserve(request: web.Request) -> web.Response:
        message = await read(request, ReserveBlock)
        if isinstance(message, web.Response):
            return message
        if local_saes.lookup(message.slave_sae) is None and not relays_to(message.slave_sae):
            return refusal(
                404, "UnknownSae", f"SAE {message.slave_sae!r} is not registered with this node"
            )
        keys = [
            BlockKey(
                key_id=k.key_id,
                chunks=tuple(
                    BlockChunk(chunk_id=c.id, index=c.index, epoch=c.epoch) for c in k.chunks
                ),
            )
            for k in message.keys
        ]
        try:
            counts = await store.counts(stream=message.stream)
            new = await store.accept_block(
                stream=message.stream,
                block_id=message.block_id,
                owner=pair_owner(message.master_sae, message.slave_sae),
                size_bits=message.size_bits,
                keys=keys,
                lease_ms=message.lease_ms,
                held_max=int(settings.held_factor * counts.capacity),
            )
        except UnknownStreamError as exc:
            return refusal(404, "UnknownStream", str(exc))
        except BlockRefusedError as exc:
            return refusal(
                409,
                "Refused",
                str(exc),
                never=exc.never,
                not_yet=exc.not_yet,
                taken=exc.taken,
            )
        except HeldBoundError as exc:
            metrics.slave_backlog(stream=message.stream)
            if events is not None:
                events.record(
                    Regarding(kind=KIND_KEYSTREAM, name=message.stream),
                    type="Warning",
                    reason="SlaveBacklog",
                    note=f"keys held here for slave SAEs reached their bound ({exc}); node"
                    f" {peer_node(request)}'s new key blocks are refused until SAEs fetch"
                    " theirs or they expire",
                )
            return refusal(409, "HeldBound", str(exc))
        except (KeyIdMismatchError, BlockConflictError) as exc:
            return refusal(409, "Conflict", str(exc))
        if new:
            metrics.slave_keys_held(
                peer=peer_node(request),
                master_sae=message.master_sae,
                slave_sae=message.slave_sae,
                keys=len(keys),
            )
        return _json(BlockHeld(held=len(keys), again=not new))

    @routes.post(RELEASE_PATH)
    async def release(request: web.Request) -> web.Response:
        message = await read(request, ReleaseBlock)
        if isinstance(message, web.Response):
            return message
        try:
            answer = await store.give_back(
                stream=message.stream,
                owner=pair_owner(message.master_sae, message.slave_sae),
                keys=[(k.key_id, k.chunk_ids) for k in message.keys],
            )
        except UnknownStreamError as exc:
            return refusal(404, "UnknownStream", str(exc))
        return _json(Released(returned=answer.returned, gone=answer.gone))

    @routes.post(HANDOVER_PATH)
    async def hand_over(request: web.Request) -> web.Response:
        message = await read(request, HandOver)
        if isinstance(message, web.Response):
            return message
        if local_saes.lookup(message.slave_sae) is None:
            return refusal(
                404, "UnknownSae", f"SAE {message.slave_sae!r} is not registered with this node"
            )
        try:
            held = await store.holds_for(
                stream=message.stream,
                owner=pair_owner(message.master_sae, message.slave_sae),
                key_ids=message.key_ids,
            )
            recorded = await handover(message, held, peer_node(request))
        except UnknownStreamError as exc:
            return refusal(404, "UnknownStream", str(exc))
        except HandOverUnavailable as exc:
            return refusal(503, "Unavailable", str(exc))
        if not recorded:
            return refusal(
                409,
                "KeysNotHeld",
                f"the {len(message.key_ids)} keys are not held here for SAE"
                f" {message.slave_sae!r} and SAE {message.master_sae!r} (never agreed,"
                " delivered already, or past the fetch window)",
            )
        return _json(HandedOver(accepted=len(message.key_ids)))

    @routes.post(DROP_PATH)
    async def drop(request: web.Request) -> web.Response:
        message = await read(request, DropIndices)
        if isinstance(message, web.Response):
            return message
        base = topology.ksid_of(message.stream)
        if base is None:
            return refusal(503, "Unavailable", f"key stream {message.stream!r} is not ready")
        epoch = epoch_of(base, message.ksid)
        if epoch is None:
            return refusal(
                409,
                "Conflict",
                f"key stream ID {message.ksid} is not one of key stream {message.stream!r}'s here",
            )
        try:
            # Mark first, so no chunk of the ranges is stored here after the spans are known.
            spans = await store.mark_peer_dropped(
                stream=message.stream,
                epoch=epoch,
                ranges=[(r.start, r.end) for r in message.ranges],
            )
            ids = await asyncio.to_thread(_chunk_ids, message.ksid, spans)
            dropped = await store.drop_unstored(stream=message.stream, chunk_ids=ids)
        except UnknownStreamError as exc:
            return refusal(404, "UnknownStream", str(exc))
        if dropped:
            log.info(
                "stream %s: dropped %d chunks node %s never stored",
                message.stream,
                dropped,
                peer_node(request),
            )
        return _json(Dropped(dropped=dropped))

    return routes


def _chunk_ids(ksid: str, spans: list[tuple[int, int]]) -> list[str]:
    """The IDs of the chunks at these device indices, as the QKDMs derive them."""
    return [c for a, b in spans for c in chunk_ids(ksid, a, b - a)]
