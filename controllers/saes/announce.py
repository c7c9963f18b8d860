"""Telling the neighbour nodes which SAEs are registered here, and hearing theirs.

Both halves travel over the inter-node channel (``controllers.channel``):

- ``register_routes(app, directory, local)`` adds ``POST /qss/v1/saes`` to the channel app; the
  body is a ``SaeAnnouncement`` (``controllers.saes.messages``): the sender's node ID, a
  generation (a signed 64-bit integer) and its full list of SAE IDs. The channel has already
  authenticated the calling node; it may only announce its own SAEs (403 otherwise). A body that
  is not a valid announcement is a 400 naming each wrong field, and changes nothing. The list
  goes into the ``SaeDirectory``, which ignores stale generations. The answer is a
  ``SaeReceipt``. ``GET /qss/v1/saes`` answers this node's own announcement.
- ``Announcer`` pushes this node's full list to every peer of the ``PeerRegistry``: at start,
  whenever the local SAEs or the peers change, and every ``interval`` seconds (so a peer that
  was down, or restarted and forgot, learns it again). Generations are nanosecond timestamps,
  kept strictly increasing. An unreachable peer is logged once and retried next round. It also
  asks every neighbour it has not heard from (all of them after a start) for its list, so a
  restarted node knows its neighbours' SAEs within one round trip, not one ``interval``.

``controllers.main`` registers the route when it builds the channel app and runs one Announcer
on the controller's event loop (``start`` after the channel clients exist, ``aclose`` at
cleanup). The LSAs of the routing work will carry SAEs further than one hop; this is the
neighbours-only exchange that point-to-point delivery needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from aiohttp import web

from controllers.channel import PeerError, PeerRegistry, error_response, peer_node, register
from controllers.channel.peers import Peer
from controllers.saes.directory import SaeDirectory
from controllers.saes.messages import SaeAnnouncement, SaeReceipt
from controllers.saes.registry import LocalSaes
from qss_api.wire import BadMessage, check, decode, encode

log = logging.getLogger(__name__)

SAES_PATH: Final = "/qss/v1/saes"
DIRECTORY: Final = web.AppKey("qss_sae_directory", SaeDirectory)
LOCAL: Final = web.AppKey("qss_sae_local", LocalSaes)

# Re-announce this often even without changes: bounds how long a neighbour that missed a push
# (it was down, or restarted) goes without our list.
ANNOUNCE_INTERVAL: Final = 30.0
# How soon a round is repeated while some neighbour could not be reached or refused us.
FAILED_RETRY_INTERVAL: Final = 2.0


def parse_announcement(body: bytes | str) -> SaeAnnouncement:
    """Read an announcement body; ``BadMessage`` says what is wrong with it."""
    announcement = decode(SaeAnnouncement, body, what="SAE announcement")
    # The same ID twice counts once, in first-seen order.
    return announcement.model_copy(update={"saes": tuple(dict.fromkeys(announcement.saes))})


async def _receive(request: web.Request) -> web.Response:
    peer = peer_node(request)
    try:
        announcement = parse_announcement(await request.read())
    except BadMessage as exc:
        return error_response(400, exc.message, exc.problems)
    if announcement.node != peer:
        return error_response(
            403,
            f"node {peer} may only announce its own SAEs, not those of node {announcement.node}",
        )
    directory = request.app[DIRECTORY]
    accepted = directory.record(peer, announcement.saes, announcement.generation)
    if accepted:
        log.debug("node %s announces %d SAEs", peer, len(announcement.saes))
    receipt = SaeReceipt(
        node=directory.local_node_id,
        accepted=accepted,
        generation=directory.generation(peer),
    )
    return web.Response(body=encode(receipt), content_type="application/json")


async def _answer(request: web.Request) -> web.Response:
    """This node's own SAEs, for a neighbour that just started and asks."""
    directory = request.app[DIRECTORY]
    announcement = SaeAnnouncement(
        node=directory.local_node_id,
        # The moment the list was read: newer than any announcement sent before it was read.
        generation=time.time_ns(),
        saes=tuple(request.app[LOCAL].sae_ids()),
    )
    return web.Response(body=encode(announcement), content_type="application/json")


def register_routes(app: web.Application, directory: SaeDirectory, local: LocalSaes) -> None:
    """Serve SAE announcements on the channel ``app`` (before it starts) into ``directory``,
    and answer neighbours that ask for ``local``'s SAEs."""
    app[DIRECTORY] = directory
    app[LOCAL] = local
    register(app, "POST", SAES_PATH, _receive)
    register(app, "GET", SAES_PATH, _answer)


class Channel(Protocol):
    """What the announcer needs of ``controllers.channel.PeerClients``."""

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any: ...

    async def get_json(self, node_id: str, path: str) -> Any: ...


class Announcer:
    """Pushes this node's SAE list to every peer: on changes, and every ``interval`` seconds."""

    def __init__(
        self,
        *,
        node_id: str,
        local: LocalSaes,
        registry: PeerRegistry,
        clients: Channel,
        directory: SaeDirectory | None = None,
        interval: float = ANNOUNCE_INTERVAL,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.node_id = node_id
        self._local, self._registry, self._clients = local, registry, clients
        self._directory = directory
        self._interval = interval
        self._clock = clock
        self._generation = 0
        self._failing: set[str] = set()
        # The last failure of announcing to each peer (None once it works), for the links'
        # conditions: our announcements are the channel's heartbeat.
        self.last_error: dict[str, PeerError] = {}
        self._peers = set(registry.peers())
        if directory is not None:
            directory.set_neighbours(self._peers)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    def start(self) -> None:
        """Start announcing (first round at once); call on the loop the handlers run on."""
        if self._task is not None:
            return
        self._unsubscribe = [
            self._local.subscribe(self.request),
            self._registry.subscribe(self._peers_changed),
        ]
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="qss-sae-announcer")

    async def aclose(self) -> None:
        """Stop announcing (an announcement in flight is abandoned)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request(self) -> None:
        """Ask for a round soon (the local SAEs changed)."""
        self._wake.set()

    def _peers_changed(self, peers: Mapping[str, Peer]) -> None:
        current = set(peers)
        for gone in self._peers - current:
            self._failing.discard(gone)
            self.last_error.pop(gone, None)
            if self._directory is not None and self._directory.forget(gone):
                log.info("forgot the SAEs of node %s, no longer a neighbour", gone)
        self._peers = current
        if self._directory is not None:
            self._directory.set_neighbours(current)
        self._wake.set()  # new neighbours hear from us at once

    def next_announcement(self) -> SaeAnnouncement:
        """This node's full SAE list under a generation newer than any sent before."""
        self._generation = max(self._clock(), self._generation + 1)
        return SaeAnnouncement(
            node=self.node_id, generation=self._generation, saes=tuple(self._local.sae_ids())
        )

    async def announce_now(self) -> dict[str, bool]:
        """One round: send the list to every current peer, and ask each peer not heard from
        yet (all of them, after a start) for its own; peer -> whether it took ours."""
        announcement = self.next_announcement()
        peers = sorted(self._registry.peers())
        results = await asyncio.gather(*(self._exchange(p, announcement) for p in peers))
        return dict(zip(peers, results, strict=True))

    async def _exchange(self, node_id: str, announcement: SaeAnnouncement) -> bool:
        accepted = await self._send(node_id, announcement)
        if self._directory is not None and not self._directory.heard_from(node_id):
            await self._ask(node_id)
        return accepted

    async def _ask(self, node_id: str) -> None:
        """Ask ``node_id`` for its SAEs (rather than wait up to ``interval`` for its push)."""
        assert self._directory is not None
        try:
            answer = check(
                SaeAnnouncement,
                await self._clients.get_json(node_id, SAES_PATH),
                what=f"SAE list of node {node_id}",
            )
        except (PeerError, BadMessage) as exc:
            self._failing.add(node_id)  # ask again soon
            log.info("could not ask node %s for its SAEs (retrying): %s", node_id, exc)
            return
        if answer.node != node_id:
            self._failing.add(node_id)
            log.warning("node %s answered with the SAEs of node %s; ignored", node_id, answer.node)
            return
        self._directory.record(node_id, answer.saes, answer.generation)

    async def _send(self, node_id: str, announcement: SaeAnnouncement) -> bool:
        try:
            answer = await self._clients.post_json(
                node_id, SAES_PATH, announcement.model_dump(mode="json")
            )
        except PeerError as exc:
            self.last_error[node_id] = exc
            if node_id not in self._failing:
                self._failing.add(node_id)
                log.warning("cannot announce SAEs to node %s (retrying): %s", node_id, exc.message)
            return False
        self.last_error.pop(node_id, None)
        if node_id in self._failing:
            self._failing.discard(node_id)
            log.info("announcing SAEs to node %s works again", node_id)
        try:
            receipt = check(SaeReceipt, answer, what=f"receipt of node {node_id}")
        except BadMessage as exc:
            log.warning("node %s answered our SAE announcement wrongly: %s", node_id, exc)
            return False
        theirs = receipt.generation
        if not receipt.accepted and theirs is not None and theirs >= self._generation:
            # The peer holds a newer generation of ours (our clock went back across a
            # restart); continue above it so the next round is taken.
            self._generation = theirs
        return receipt.accepted

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives just as the event is set, and aclose would then wait a full interval.
            # A neighbour that refused us (it may not know our link yet) hears again soon.
            wait = min(self._interval, FAILED_RETRY_INTERVAL) if self._failing else self._interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.announce_now()
            except Exception:
                log.exception("announcing SAEs failed; retrying in %ss", self._interval)
