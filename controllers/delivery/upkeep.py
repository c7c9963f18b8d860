"""Key delivery's background work on a node, one task: every ``sweep_seconds`` (or at once when
``kick``ed), for every stream in the store, act on the deadlines that passed (``KeyStore.sweep``)
and send the outbox's due messages to the stream's peer; then give back idle pools.

Messages (queued by the store in the same step as the change they report) are retried with
backoff until the peer answers: a release's answer is applied (``finish_release``); a hand-over,
a drop notice, or a relay's commit or abort (``controllers.delivery.relay``) is done once
acknowledged. A hand-over the peer refuses for good (its keys are not held there) or that
outlived the slave's fetch window is dropped with a warning. Each sweep's count of master blocks
given back at their deadline and of keys held for slave SAEs that expired unfetched goes to
``controllers.metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from controllers import metrics
from controllers.delivery.messages import (
    DropIndices,
    HandOver,
    IndexRange,
    ReleaseBlock,
    ReleaseKey,
)
from controllers.delivery.peer import KrpPeers, KrpRefused, KrpUnreachable
from controllers.delivery.pools import Pools
from controllers.delivery.relay_messages import RelayAbort, RelayCommit
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.keystore import KeyStore, OutboxMessage
from controllers.qkdm.ids import epoch_ksid
from qss_api.wire import BadMessage, check

log = logging.getLogger("controllers.delivery.upkeep")

# Messages sent to one peer at once.
CONCURRENT_SENDS = 16
FIRST_RETRY_SECONDS = 0.2


def handover_body(message: HandOver, *, until_ms: int) -> dict[str, Any]:
    """The outbox body of a hand-over (``KeyStore.commit_hold`` queues it)."""
    return {"kind": "handover", "until_ms": until_ms, "message": message.model_dump(mode="json")}


class Upkeep:
    def __init__(
        self,
        *,
        store: KeyStore,
        topology: Topology,
        peers: KrpPeers,
        pools: Pools,
        settings: DeliverySettings,
    ) -> None:
        self._store = store
        self._topology = topology
        self._peers = peers
        self._pools = pools
        self._settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._sends = asyncio.Semaphore(CONCURRENT_SENDS)
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery upkeep")

    def kick(self) -> None:
        """Run a round now (a message was just queued)."""
        self._wake.set()

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # The flag, not only the cancellation, ends the loop: a library that turns a
        # cancellation into an error of its own (a client timeout firing at the same moment)
        # leaves this task cancelling but running, and on Python 3.11 every later
        # asyncio.timeout below then ends in TimeoutError, so the loop would never stop.
        while not self._closing:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("key delivery upkeep failed; trying again")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the wait ends, and this task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.sweep_seconds):
                    await self._wake.wait()

    async def run_once(self) -> None:
        """One round: deadlines, messages, idle pools."""
        for stream in await self._store.streams():
            while True:
                swept = await self._store.sweep(stream=stream)
                metrics.swept(
                    stream=stream,
                    blocks_expired=swept.released,
                    slave_keys_expired=swept.expired_held,
                )
                if not swept.more:
                    break
            await self._send_due(stream)
        await self._pools.give_back_idle()

    async def _send_due(self, stream: str) -> None:
        peer = self._topology.peer_of_stream(stream)
        if peer is None:
            return  # its link is not known (yet): the messages wait
        now_ms, due = await self._store.outbox_due_at(stream=stream)
        fresh = [m for m in due if m.message_id not in self._in_flight]
        for m in fresh:
            self._in_flight.add(m.message_id)
        await asyncio.gather(*(self._deliver(stream, peer, m, now_ms) for m in fresh))

    async def _deliver(self, stream: str, peer: str, message: OutboxMessage, now_ms: int) -> None:
        try:
            async with self._sends:
                done = await self._send(stream, peer, message, now_ms)
        except (KrpRefused, KrpUnreachable) as exc:
            log.debug("message %s to node %s: %s", message.message_id, peer, exc.message)
            done = False
        except Exception:
            log.exception("sending message %s to node %s failed", message.message_id, peer)
            done = False
        finally:
            self._in_flight.discard(message.message_id)
        if done:
            self._attempts.pop(message.message_id, None)
            return
        attempt = self._attempts.get(message.message_id, 0)
        self._attempts[message.message_id] = attempt + 1
        delay = min(FIRST_RETRY_SECONDS * 2**attempt, self._settings.retry_max_seconds)
        await self._store.outbox_later(
            stream=stream, message_id=message.message_id, delay_ms=int(delay * 1000)
        )

    async def _send(self, stream: str, peer: str, message: OutboxMessage, now_ms: int) -> bool:
        """Send one message; True once it needs no more sending."""
        body = message.body
        kind = message.kind
        try:
            if kind == "release":
                master, slave = str(body["owner"]).split("/", 1)
                release = ReleaseBlock(
                    block_id=str(body["block"]),
                    stream=stream,
                    master_sae=master,
                    slave_sae=slave,
                    keys=tuple(
                        ReleaseKey(key_id=str(k[0]), chunk_ids=tuple(str(c) for c in k[1:]))
                        for k in body["keys"]
                    ),
                )
                answer = await self._peers.release(peer, release)
                await self._store.finish_release(
                    stream=stream, block_id=release.block_id, gone=answer.gone
                )
                return True
            if kind == "handover":
                handover = check(HandOver, body["message"])
                if int(body["until_ms"]) < now_ms:
                    log.warning(
                        "hand-over of request %s to node %s given up: past the slave's fetch"
                        " window",
                        handover.request_id,
                        peer,
                    )
                else:
                    try:
                        await self._peers.hand_over(peer, handover)
                    except KrpRefused as exc:
                        if exc.reason != "KeysNotHeld":
                            raise
                        log.warning(
                            "hand-over of request %s refused by node %s: %s",
                            handover.request_id,
                            peer,
                            exc.message,
                        )
                await self._store.outbox_done(stream=stream, message_id=message.message_id)
                return True
            if kind == "relay_commit" or kind == "relay_abort":
                # Retried until the next node on the relay's path answers; a refusal means it
                # has nothing (more) to do for the relay.
                try:
                    if kind == "relay_commit":
                        await self._peers.relay_commit(peer, check(RelayCommit, body["message"]))
                    else:
                        await self._peers.relay_abort(peer, check(RelayAbort, body["message"]))
                except KrpRefused as exc:
                    if exc.reason == "Unavailable":
                        raise
                    log.warning(
                        "%s %s refused by node %s: %s",
                        kind,
                        message.message_id,
                        peer,
                        exc.message,
                    )
                await self._store.outbox_done(stream=stream, message_id=message.message_id)
                return True
            if kind == "drop":
                base = self._topology.ksid_of(stream)
                if base is None:
                    return False  # the KeyStream is not known yet: try later
                # The store names the KSID it counts in ('' in a store from before KSIDs were
                # recorded there, when the cursor counted in epoch 0).
                ksid = str(body.get("ksid") or "") or epoch_ksid(base, int(body.get("epoch", 0)))
                drop = DropIndices(
                    stream=stream,
                    ksid=ksid,
                    ranges=tuple(
                        IndexRange(start=int(r[0]), end=int(r[1]) if len(r) > 1 else None)
                        for r in body["ranges"]
                    ),
                )
                try:
                    await self._peers.drop(peer, drop)
                except KrpRefused as exc:
                    if exc.reason != "Conflict":
                        raise
                    log.warning(
                        "drop notice %s refused by node %s: %s",
                        message.message_id,
                        peer,
                        exc.message,
                    )
                await self._store.outbox_done(stream=stream, message_id=message.message_id)
                return True
        except (BadMessage, ValueError, KeyError, TypeError) as exc:
            log.warning("outbox message %s cannot be sent (%s); dropped", message.message_id, exc)
            await self._store.outbox_done(stream=stream, message_id=message.message_id)
            return True
        log.warning("outbox message %s of unknown kind %r; dropped", message.message_id, kind)
        await self._store.outbox_done(stream=stream, message_id=message.message_id)
        return True
