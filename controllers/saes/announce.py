"""Telling the neighbour nodes which SAEs are registered here, and hearing theirs.

Both halves travel over the inter-node channel (``controllers.channel``):

- ``register_routes(app, directory)`` adds ``POST /qss/v1/saes`` to the channel app; the body is
  ``{"node": <node ID>, "generation": <int>, "saes": [<SAE ID>, ...]}``, the sender's full list.
  The channel has already authenticated the calling node; it may only announce its own SAEs
  (403 otherwise). The list goes into the ``SaeDirectory``, which ignores stale generations.
  The answer is ``{"node": <this node>, "accepted": <bool>, "generation": <newest recorded>}``.
- ``Announcer`` pushes this node's full list to every peer of the ``PeerRegistry``: at start,
  whenever the local SAEs or the peers change, and every ``interval`` seconds (so a peer that
  was down, or restarted and forgot, learns it again). Generations are nanosecond timestamps,
  kept strictly increasing. An unreachable peer is logged once and retried next round.

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
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from controllers import pki
from controllers.channel import PeerError, PeerRegistry, error_response, peer_node, register
from controllers.channel.peers import Peer
from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import LocalSaes

log = logging.getLogger(__name__)

SAES_PATH: Final = "/qss/v1/saes"
DIRECTORY: Final = web.AppKey("qss_sae_directory", SaeDirectory)

# Re-announce this often even without changes: bounds how long a neighbour that missed a push
# (it was down, or restarted) goes without our list.
ANNOUNCE_INTERVAL: Final = 30.0
# How soon a round is repeated while some neighbour could not be reached or refused us.
FAILED_RETRY_INTERVAL: Final = 2.0


class AnnouncementError(ValueError):
    """An announcement body that is not what the route accepts; the message says what."""


@dataclass(frozen=True)
class Announcement:
    node: str
    generation: int
    saes: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        return {"node": self.node, "generation": self.generation, "saes": list(self.saes)}


def parse_announcement(body: Any) -> Announcement:
    """Check and decode an announcement body; ``AnnouncementError`` says what is wrong."""
    if not isinstance(body, dict):
        raise AnnouncementError("the announcement must be a JSON object")
    node, generation, saes = body.get("node"), body.get("generation"), body.get("saes")
    if not isinstance(node, str) or not node:
        raise AnnouncementError("'node' must be the announcing node's ID (a string)")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise AnnouncementError("'generation' must be a non-negative integer")
    if not isinstance(saes, list) or not all(isinstance(s, str) for s in saes):
        raise AnnouncementError("'saes' must be a list of SAE IDs (strings)")
    for sae_id in saes:
        try:
            pki.check_sae_id(sae_id)
        except pki.CertificateError as exc:
            raise AnnouncementError(str(exc)) from None
    return Announcement(node=node, generation=generation, saes=tuple(dict.fromkeys(saes)))


async def _receive(request: web.Request) -> web.Response:
    peer = peer_node(request)
    try:
        announcement = parse_announcement(await request.json())
    except ValueError as exc:  # AnnouncementError, or a body that is not JSON
        message = str(exc) if isinstance(exc, AnnouncementError) else "the body is not JSON"
        return error_response(400, f"invalid SAE announcement: {message}")
    if announcement.node != peer:
        return error_response(
            403,
            f"node {peer} may only announce its own SAEs, not those of node {announcement.node}",
        )
    directory = request.app[DIRECTORY]
    accepted = directory.record(peer, announcement.saes, announcement.generation)
    if accepted:
        log.debug("node %s announces %d SAEs", peer, len(announcement.saes))
    return web.json_response(
        {
            "node": directory.local_node_id,
            "accepted": accepted,
            "generation": directory.generation(peer),
        }
    )


def register_routes(app: web.Application, directory: SaeDirectory) -> None:
    """Serve SAE announcements on the channel ``app`` (before it starts) into ``directory``."""
    app[DIRECTORY] = directory
    register(app, "POST", SAES_PATH, _receive)


class PostJson(Protocol):
    """What the announcer needs of ``controllers.channel.PeerClients``."""

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any: ...


class Announcer:
    """Pushes this node's SAE list to every peer: on changes, and every ``interval`` seconds."""

    def __init__(
        self,
        *,
        node_id: str,
        local: LocalSaes,
        registry: PeerRegistry,
        clients: PostJson,
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
        self._wake.set()  # new neighbours hear from us at once

    def next_announcement(self) -> Announcement:
        """This node's full SAE list under a generation newer than any sent before."""
        self._generation = max(self._clock(), self._generation + 1)
        return Announcement(
            node=self.node_id, generation=self._generation, saes=tuple(self._local.sae_ids())
        )

    async def announce_now(self) -> dict[str, bool]:
        """One round: send the list to every current peer; peer -> whether it took it."""
        announcement = self.next_announcement()
        peers = sorted(self._registry.peers())
        results = await asyncio.gather(*(self._send(p, announcement) for p in peers))
        return dict(zip(peers, results, strict=True))

    async def _send(self, node_id: str, announcement: Announcement) -> bool:
        try:
            answer = await self._clients.post_json(node_id, SAES_PATH, announcement.payload())
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
        accepted = isinstance(answer, dict) and answer.get("accepted") is True
        theirs = answer.get("generation") if isinstance(answer, dict) else None
        if not accepted and isinstance(theirs, int) and theirs >= self._generation:
            # The peer holds a newer generation of ours (our clock went back across a
            # restart); continue above it so the next round is taken.
            self._generation = theirs
        return accepted

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
