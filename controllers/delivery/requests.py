"""The KeyRequest service: serves one KeyRequest, master (getKey) or slave (getKeyWithId), as
one Secret create and one status write.

Master: the request's keys come from the pair's pool into a hold under the request's UID; the
Secret is written; then, in one atomic store step, the hold is committed and the hand-over to
the slave SAE's node is queued (sent at once, retried until that node acknowledges; it creates
the slave's automatic request). Slave: the keys held here for the pair are moved into a hold by
ID, written, committed. Then the status says Ready.

Every step is idempotent under the request's UID and the Secret is the proof of delivery, so a
request resumed after a crash (``resume=True``: kopf listed it at start-up, or a step failed)
first looks for its Secret: if it is there, only what follows is done again (its annotations
say which stream the keys came from), never a second delivery. Nothing is held for good: a hold
has a deadline (``hold_seconds``), so a request deleted mid-way needs no finalizer. A request
fails, with a condition that says why, when its timeout passes, or at once when waiting cannot
help; a hold it certainly did not write goes back.

Its two ends are the service's metrics boundary (``controllers.metrics``): a request served
counts its keys and its latency (from its startTime to Ready), a failed one its reason; a
request that failed for want of keys (InsufficientKeys, SlaveBacklog) is also a Warning Event
on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from controllers import metrics
from controllers.delivery.api import SCARCITY_REASONS, DeliveryError, KeyConflict, UnknownSae
from controllers.delivery.messages import HandOver
from controllers.delivery.pools import PoolKey
from controllers.delivery.service import NodeKeyDelivery, Placed, delivered
from controllers.events import EventSink, Regarding
from controllers.keyrequests import (
    ANNOTATION_PEER,
    ANNOTATION_STREAM,
    KeyRequestView,
    failed_status,
    key_ids_in_secret,
    key_secret,
    now_precise,
    ready_status,
)
from controllers.keystore import Key, Notice
from controllers.kube import Kube, NotFoundError, SecretRecord
from qss_api import KEYREQUESTS, KIND_KEYREQUEST

log = logging.getLogger("controllers.delivery.requests")

T = TypeVar("T")

# UIDs of requests this process finished, so the events of its own status write are skipped.
REMEMBERED = 20_000
# A failure of the API server or Redis mid-way is retried this often, and for this long after
# the request's own deadline (the keys may be in its Secret already: they must be committed).
RETRY_SECONDS = 0.5
GRACE_SECONDS = 60.0
POLL_SECONDS = 0.1


class Registration(Protocol):
    """A local SAE as ``controllers.saes.LocalSaes`` lists it."""

    @property
    def sae_id(self) -> str: ...

    @property
    def ref(self) -> tuple[str, str]: ...


class RequestFailed(Exception):
    """The request cannot succeed; ``reason`` goes into its Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True, slots=True)
class Outcome:
    key_ids: tuple[str, ...]
    peer_node: str
    master_sae: str
    slave_sae: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class KeyRequestService:
    def __init__(
        self,
        *,
        delivery: NodeKeyDelivery,
        kube: Kube,
        saes: Iterable[Registration],
        fetch_window_seconds: float,
        events: EventSink | None = None,
    ) -> None:
        self._delivery = delivery
        self._events = events
        self._kube = kube
        self._saes = saes
        self._window_ms = int(fetch_window_seconds * 1000)
        self._finished: OrderedDict[str, None] = OrderedDict()

    async def serve(self, *, request: KeyRequestView, resume: bool) -> None:
        """Serve ``request`` to its end (Ready or Failed), unless it is finished already."""
        if request.finished or request.deleting or request.uid in self._finished:
            return
        started = request.start_time or now_precise()
        while True:
            try:
                outcome = await self._serve(request, resume=resume)
                break
            except (DeliveryError, RequestFailed) as exc:
                await self._fail(request, exc.reason, exc.message, started)
                return
            except NotFoundError:
                return  # the request was deleted meanwhile
            except Exception as exc:
                # The API server or Redis failed: every step is idempotent, so try again.
                if _now() > request.deadline + dt.timedelta(seconds=GRACE_SECONDS):
                    log.error("KeyRequest %s/%s given up: %r", request.namespace, request.name, exc)
                    return
                log.warning(
                    "KeyRequest %s/%s: %s; trying again",
                    request.namespace,
                    request.name,
                    type(exc).__name__,
                )
                resume = True
                await asyncio.sleep(RETRY_SECONDS)
        status = ready_status(
            role=request.role,
            key_ids=outcome.key_ids,
            secret=request.secret,
            peer_node=outcome.peer_node,
            started=started,
            generation=request.generation,
        )
        await self._write_status(request, status)
        metrics.keyrequest_served(
            role=request.role,
            master_sae=outcome.master_sae,
            slave_sae=outcome.slave_sae,
            keys=len(outcome.key_ids),
            seconds=(_now() - _parse_time(started)).total_seconds(),
        )
        log.info(
            "KeyRequest %s/%s: %d keys delivered in Secret %s",
            request.namespace,
            request.name,
            len(outcome.key_ids),
            request.secret,
        )

    # -- the two roles -------------------------------------------------------------------------

    async def _serve(self, request: KeyRequestView, *, resume: bool) -> Outcome:
        sae_id = await self._local_sae(request)
        if resume:
            secret = await self._kube.read_secret(request.secret, request.namespace)
            if secret is not None and request.uid in secret.owner_uids:
                return await self._finish(request, sae_id, secret)
        if request.role == "Master":
            return await self._master(request, sae_id)
        return await self._slave(request, sae_id)

    async def _master(self, request: KeyRequestView, sae_id: str) -> Outcome:
        pool = await self._until(
            request,
            lambda: self._delivery.pool_for(
                master_sae_id=sae_id,
                slave_sae_id=request.slave_sae_id,
                number=request.number,
                size_bits=request.size,
            ),
        )
        placed = await self._delivery.hold(
            pool=pool, number=request.number, hold_id=request.uid, timeout=self._left(request)
        )
        if pool.path:
            # Not a neighbour: every node of the path holds its part before the Secret exists.
            await self._delivery.relay_prepare(
                pool=pool, hold=placed.hold, relay_id=request.uid, timeout=self._left(request)
            )
            placed = Placed(stream=placed.stream, peer_node=pool.path[-1], hold=placed.hold)
        secret = await self._write_secret(request, placed, list(placed.hold.keys))
        return await self._finish(request, sae_id, secret)

    async def _slave(self, request: KeyRequestView, sae_id: str) -> Outcome:
        placed = await self._delivery.hold_ids(
            slave_sae_id=sae_id,
            master_sae_id=request.master_sae_id,
            key_ids=request.key_ids,
            hold_id=request.uid,
        )
        by_id = {k.key_id: k for k in placed.hold.keys}
        secret = await self._write_secret(request, placed, [by_id[k] for k in request.key_ids])
        return await self._finish(request, sae_id, secret)

    async def _finish(self, request: KeyRequestView, sae_id: str, secret: SecretRecord) -> Outcome:
        """The request's Secret is written: commit its hold (a master's with the hand-over, in
        the same step) and say what it delivered. Also what a resumed request does."""
        key_ids = tuple(key_ids_in_secret(secret.data))
        stream = secret.annotations.get(ANNOTATION_STREAM, "")
        peer = secret.annotations.get(ANNOTATION_PEER, "")
        hold = await self._delivery.store.get_hold(stream=stream, hold_id=request.uid)
        if hold is not None and set(hold.key_ids) != set(key_ids):
            # A second hold, taken when the first was committed already: never written.
            await self._delivery.cancel(stream=stream, hold_id=request.uid)
        notice = None
        neighbour = self._delivery.topology.peer_of_stream(stream)
        if request.role == "Master" and neighbour is None:
            # After a restart, before the stream's KeyStream is known: try again shortly.
            raise RuntimeError(f"key stream {stream} is not known yet")
        if request.role == "Master" and peer != neighbour:
            # Relayed (the Secret names the far node): the commit goes along the path.
            notice = self._delivery.relay_commit_notice(
                pool=PoolKey(
                    stream=stream,
                    peer=neighbour or "",
                    master_sae_id=sae_id,
                    slave_sae_id=request.slave_sae_id,
                    size_bits=request.size,
                ),
                relay_id=request.uid,
                key_ids=key_ids,
                hand_over=True,
            )
        elif request.role == "Master":
            handover = HandOver(
                request_id=request.uid,
                stream=stream,
                master_sae=sae_id,
                slave_sae=request.slave_sae_id,
                size_bits=request.size,
                key_ids=key_ids,
            )
            notice = Notice(
                message_id=f"ho:{request.uid}",
                kind="handover",
                payload=handover.model_dump(mode="json"),
                valid_ms=self._window_ms,
            )
        await self._delivery.commit(stream=stream, hold_id=request.uid, notice=notice)
        master, slave = (
            (sae_id, request.slave_sae_id)
            if request.role == "Master"
            else (request.master_sae_id, sae_id)
        )
        return Outcome(key_ids=key_ids, peer_node=peer, master_sae=master, slave_sae=slave)

    # -- steps ---------------------------------------------------------------------------------

    async def _write_secret(
        self, request: KeyRequestView, placed: Placed, keys: Sequence[Key]
    ) -> SecretRecord:
        body = key_secret(
            name=request.secret,
            namespace=request.namespace,
            keys=delivered(keys),
            owner={"name": request.name, "uid": request.uid},
            stream=placed.stream,
            peer_node=placed.peer_node,
        )
        secret = await self._kube.create_secret(body)
        if not secret.created and request.uid not in secret.owner_uids:
            # Never written: the keys go back where they came from.
            await self._delivery.cancel(stream=placed.stream, hold_id=request.uid)
            raise RequestFailed(
                "SecretExists",
                f"Secret {request.secret!r} exists and belongs to something else; name another"
                " in spec.secretName",
            )
        return secret

    async def _local_sae(self, request: KeyRequestView) -> str:
        """The SAE ID of the request's Sae, once it is registered here (after a restart that
        takes a moment)."""
        while True:
            for registration in self._saes:
                if registration.ref == (request.namespace, request.sae):
                    return registration.sae_id
            if self._left(request) <= 0:
                raise RequestFailed(
                    "UnknownSae",
                    f"Sae {request.sae!r} is not registered with this node in namespace"
                    f" {request.namespace!r} (does it exist, and is it Ready?)",
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _until(self, request: KeyRequestView, step: Callable[[], Awaitable[T]]) -> T:
        """``step()``, tried again while it fails in a way waiting may heal, until the
        request's deadline."""
        while True:
            try:
                return await step()
            except DeliveryError as exc:
                # A declarative request also waits for an SAE nobody knows yet: the network's
                # routes may still be converging, or the Sae is being created with it. Its
                # deadline bounds the wait; then it fails with UnknownSae.
                waits = exc.retryable or isinstance(exc, UnknownSae)
                if not waits or isinstance(exc, KeyConflict) or self._left(request) <= 0:
                    raise
            await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    def _left(request: KeyRequestView) -> float:
        return (request.deadline - _now()).total_seconds()

    async def _fail(self, request: KeyRequestView, reason: str, message: str, started: str) -> None:
        found = await self._delivery.find_hold(hold_id=request.uid)
        if found is not None:
            secret = await self._kube.read_secret(request.secret, request.namespace)
            if secret is None or request.uid not in secret.owner_uids:
                await self._delivery.cancel(stream=found[0], hold_id=request.uid)
        status = failed_status(
            role=request.role,
            reason=reason,
            message=message,
            started=started,
            generation=request.generation,
        )
        await self._write_status(request, status)
        metrics.keyrequest_failed(role=request.role, reason=reason)
        if reason in SCARCITY_REASONS and self._events is not None:
            self._events.record(
                Regarding(
                    kind=KIND_KEYREQUEST,
                    name=request.name,
                    namespace=request.namespace,
                    uid=request.uid,
                ),
                type="Warning",
                reason=reason,
                note=message,
            )

    async def _write_status(self, request: KeyRequestView, status: dict[str, Any]) -> None:
        try:
            await self._kube.apply_status(
                KEYREQUESTS, request.name, status, namespace=request.namespace
            )
        except NotFoundError:
            pass  # deleted meanwhile
        self._finished[request.uid] = None
        while len(self._finished) > REMEMBERED:
            self._finished.popitem(last=False)
