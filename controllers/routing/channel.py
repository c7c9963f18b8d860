"""The routing protocol over the inter-node channel: one ``Router`` run by the controller.

``RoutingService`` owns the node's router and feeds it what the rest of the node knows: the
channel's peers (``PeerRegistry``), the local SAEs (``LocalSaes``), and each QKDLink's cost
(``link_changed``, called by the QKDLink watch). It serves the three routing requests on the
channel app (``routes()``, a ``web.RouteTableDef`` for ``init_channel_app``), sends the
router's requests to the peers (one request at a time per peer, so LSAs arrive in the order
they were sent; consecutive floods are merged), and runs its timers.

Every request and answer is decoded with ``qss_api.wire`` before the router sees it; a
malformed request is a 400 (counted as a ``malformed`` drop against the peer), a request whose
sender is not the node the channel authenticated is a 403.

Others ask it ``route_to(sae_id)`` (``controllers.routing.table.RouteFinder``, for key
delivery and relay), ``routes()``/``route_objects()`` (the table) and ``subscribe`` to hear of
table changes (the Route writer). ``last_error`` holds, per peer, why the last hello failed:
the hello is the channel's heartbeat, and the QKDLink reconciler shows that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel

from controllers.channel import PeerError, PeerRegistry, error_response, peer_node
from controllers.routing.engine import Message, Router
from controllers.routing.messages import (
    EXCHANGE_PATH,
    FLOOD_PATH,
    HELLO_PATH,
    Exchange,
    Flood,
    Hello,
)
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import RoutingKey
from controllers.routing.stats import RoutingStats
from controllers.routing.table import SaeRoute, route_objects, sae_routes
from qss_api.wire import BadMessage, check, decode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_PATHS: Final[dict[type[BaseModel], str]] = {
    Hello: HELLO_PATH,
    Exchange: EXCHANGE_PATH,
    Flood: FLOOD_PATH,
}
# The timer loop wakes at least this often, so a clock jump cannot stall it for long.
_MAX_SLEEP: Final = 5.0


class PostJson(Protocol):
    """What the service needs of ``controllers.channel.PeerClients``."""

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any: ...


class SaeSource(Protocol):
    """What the service needs of ``controllers.saes.LocalSaes``."""

    def sae_ids(self) -> list[str]: ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]: ...


class SaeLocator(Protocol):
    """What the service needs of ``controllers.saes.SaeDirectory`` (also the router's sink)."""

    def node_of(self, sae_id: str) -> str | None: ...

    def remote(self) -> Mapping[str, frozenset[str]]: ...

    def record(self, node_id: str, sae_ids: Any, generation: int) -> bool: ...

    def forget(self, node_id: str) -> bool: ...

    def synchronised(self, node_id: str) -> None: ...

    def set_neighbours(self, node_ids: Any) -> None: ...


class RoutingService:
    def __init__(
        self,
        *,
        node_id: str,
        settings: RoutingSettings,
        registry: PeerRegistry,
        clients: PostJson,
        local: SaeSource,
        directory: SaeLocator,
        key: RoutingKey | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.settings = settings
        self.stats = RoutingStats()
        self.now = clock
        self.router = Router(
            node_id=node_id,
            settings=settings,
            now=clock(),
            key=key,
            stats=self.stats,
            saes=directory,
        )
        self.last_error: dict[str, PeerError] = {}
        self._registry, self._clients = registry, clients
        self._local, self._directory = local, directory
        self._link_costs: dict[str, tuple[str, int]] = {}  # QKDLink name -> (peer, cost)
        self._queues: dict[str, list[Message]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._version = -1
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        # The directory knows the neighbours from the moment the links are read (before the
        # servers start), so an SAE asked for meanwhile is "not known yet", not unknown.
        directory.set_neighbours(registry.peers())
        self._unsubscribe_directory = registry.subscribe(directory.set_neighbours)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers and follow peers and SAEs; on the loop the handlers run on."""
        if self._timer is not None:
            return
        self._unsubscribe = [
            self._registry.subscribe(lambda peers: self._peers_changed()),
            self._local.subscribe(self._saes_changed),
        ]
        self._peers_changed()
        self._saes_changed()
        self._timer = asyncio.create_task(self._run_timers(), name="qss-routing-timers")

    async def aclose(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        self._unsubscribe_directory()
        self._unsubscribe_directory = lambda: None
        tasks = [t for t in [self._timer, *self._senders.values()] if t is not None]
        self._timer, self._senders = None, {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- inputs ------------------------------------------------------------------------------

    def link_changed(self, name: str, link: Mapping[str, Any] | None) -> None:
        """A QKDLink was added, changed (its cost, in status) or deleted."""
        entry = _link_cost(link) if link is not None else None
        if entry is None:
            self._link_costs.pop(name, None)
        elif self._link_costs.get(name) != entry:
            self._link_costs[name] = entry
        else:
            return
        costs: dict[str, int] = {}
        for peer, cost in self._link_costs.values():
            # Parallel links to one node: delivery takes the fullest stream, so the best link.
            costs[peer] = min(cost, costs.get(peer, cost))
        self.router.set_link_costs(costs, self.now())
        self._after()

    def _peers_changed(self) -> None:
        peers = self._registry.peers()
        for gone in set(self.last_error) - set(peers):
            del self.last_error[gone]
        self.router.set_neighbours(peers, self.now())
        self._after()

    def _saes_changed(self) -> None:
        self.router.set_local_saes(self._local.sae_ids(), self.now())
        self._after()

    # -- what others ask ---------------------------------------------------------------------

    def route_to(self, sae_id: str) -> SaeRoute | None:
        return self.routes(only=(sae_id,)).get(sae_id)

    def routes(self, *, only: tuple[str, ...] | None = None) -> dict[str, SaeRoute]:
        """The routing table: a route per reachable SAE (or per SAE of ``only``)."""
        if only is None:
            ids = set(self._local.sae_ids())
            for saes in self._directory.remote().values():
                ids |= saes
            only = tuple(sorted(ids))
        return sae_routes(paths=self.router.paths, sae_ids=only, node_of=self._directory.node_of)

    def route_objects(self) -> dict[str, dict[str, Any]]:
        return route_objects(self.routes())

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever the table may have changed."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- the channel's routes ----------------------------------------------------------------

    def channel_routes(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        routes.post(HELLO_PATH)(self._handler(Hello, lambda m: m.node, self.router.on_hello))
        routes.post(EXCHANGE_PATH)(
            self._handler(Exchange, lambda m: m.hello.node, self.router.on_exchange)
        )
        routes.post(FLOOD_PATH)(self._handler(Flood, lambda m: m.forwarder, self.router.on_flood))
        return routes

    def _handler(
        self,
        model: type[M],
        sender: Callable[[M], str],
        on_message: Callable[[str, M, float], BaseModel],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The route for one routing message: read it, check that the peer speaks for itself
        (``sender`` names who the message says sent it), hand it to the router, answer."""

        async def handle(request: web.Request) -> web.StreamResponse:
            peer = peer_node(request)
            message = await self._read(request, model, peer)
            if isinstance(message, web.StreamResponse):
                return message
            if sender(message) != peer:
                return _not_the_sender(peer, sender(message))
            return self._answer(on_message(peer, message, self.now()))

        return handle

    async def _read(
        self, request: web.Request, model: type[M], peer: str
    ) -> M | web.StreamResponse:
        try:
            return decode(model, await request.read(), what=f"routing {model.__name__.lower()}")
        except BadMessage as exc:
            self.stats.drop(peer, "malformed", "", self.now())
            return error_response(400, exc.message, exc.problems)

    def _answer(self, message: BaseModel) -> web.Response:
        self._after()
        return web.Response(body=message.model_dump_json(), content_type="application/json")

    # -- sending -----------------------------------------------------------------------------

    def _after(self) -> None:
        """After any call into the router: queue what it wants sent, re-arm the timers, and
        tell the listeners if the table changed."""
        for out in self.router.take_outgoing():
            self._queues.setdefault(out.peer, []).append(out.message)
            sender = self._senders.get(out.peer)
            if sender is None or sender.done():
                self._senders[out.peer] = asyncio.create_task(
                    self._send_to(out.peer), name=f"qss-routing-to-{out.peer}"
                )
        self._wake.set()
        if self.router.version != self._version:
            self._version = self.router.version
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:
                    log.exception("listener of the routing table failed")

    async def _send_to(self, peer: str) -> None:
        queue = self._queues.setdefault(peer, [])
        while queue:
            message = queue.pop(0)
            if isinstance(message, Flood):
                # Merge the floods waiting behind this one: newest instance of each LSA.
                merged = {lsa.ident: lsa for lsa in message.lsas}
                while queue and isinstance(following := queue[0], Flood):
                    queue.pop(0)
                    for lsa in following.lsas:
                        held = merged.get(lsa.ident)
                        if held is None or lsa.seq >= held.seq:
                            merged[lsa.ident] = lsa
                message = Flood.model_construct(
                    forwarder=message.forwarder, lsas=tuple(merged.values())
                )
            answer = await self._request(peer, message)
            self.router.on_answer(peer, message, answer, self.now())
            self._after()

    async def _request(self, peer: str, message: Message) -> Message | None:
        path = _PATHS[type(message)]
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                raw = await self._clients.post_json(peer, path, message.model_dump(mode="json"))
            answer: Message = check(type(message), raw, what=f"answer to {path}")
        except PeerError as exc:
            if isinstance(message, Hello):
                if peer not in self.last_error:
                    log.warning("routing: node %s does not answer: %s", peer, exc.message)
                self.last_error[peer] = exc
            return None
        except TimeoutError:
            if isinstance(message, Hello) and peer not in self.last_error:
                log.warning("routing: node %s did not answer %s in time", peer, path)
            return None
        except BadMessage as exc:
            log.warning("routing: node %s answered %s with %s", peer, path, exc.message)
            self.stats.drop(peer, "malformed", "", self.now())
            return None
        if _speaker(answer) != peer:
            log.warning("routing: node %s answered %s in the name of another node", peer, path)
            self.stats.drop(peer, "malformed", "", self.now())
            return None
        if isinstance(message, Hello) and self.last_error.pop(peer, None) is not None:
            log.info("routing: node %s answers again", peer)
        return answer

    async def _run_timers(self) -> None:
        while True:
            delay = min(_MAX_SLEEP, max(0.0, self.router.next_wakeup() - self.now()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            try:
                self.router.tick(self.now())
                self._after()
            except Exception:
                log.exception("routing timers failed; going on")


def _speaker(message: Message) -> str:
    """The node a routing message says it comes from."""
    if isinstance(message, Hello):
        return message.node
    if isinstance(message, Exchange):
        return message.hello.node
    return message.forwarder


def _not_the_sender(peer: str, claimed: str) -> web.Response:
    return error_response(
        403, f"node {peer} may only speak for itself in routing messages, not for node {claimed}"
    )


def _link_cost(link: Mapping[str, Any]) -> tuple[str, int] | None:
    """(peer, cost in thousandths) of a QKDLink with a cost in its status, else None."""
    peer = (link.get("spec") or {}).get("peerNodeID")
    cost = (link.get("status") or {}).get("cost")
    if not isinstance(peer, str) or not isinstance(cost, int | float) or isinstance(cost, bool):
        return None
    return peer, max(1000, round(float(cost) * 1000))
