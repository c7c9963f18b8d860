"""The QKDM's work loop for one key stream: device -> key store, with back-pressure.

``Pump.run`` (called by the kopf daemon in ``controllers.qkdm.main``) prepares the stream (reads
the KeyStream and its QKDLink, configures the store), joins its device key stream and pulls
chunks in index order from the stream's cursor, a run of consecutive chunks per GET_KEY, storing
them together with the new cursor so that a restarted QKDM resumes exactly where the store
says. A few GET_KEYs are kept in flight ahead of the store, and one store call takes every run
that has arrived (consecutive, from the cursor), so the device, this process and Redis work at
once and Redis fsyncs once per batch of runs. While the buffer is full it stops pulling.

A device key stream that can no longer continue (the device restarted and forgot it, or aborted
it for QBER) is replaced by the next KSID of the stream's sequence (``ids.epoch_ksid``), opened
only when the device allows it again: the two QKDMs reach the same KSID without talking, and a
QKDM that was down meanwhile catches up (the rules are in ``docs/key-streams.md``). A KSID this
end has opened is never opened again, so no index, chunk ID or key material is ever reused.

Faults (device unreachable, link down, QBER too high, Redis down, link missing) become a
``Fault`` the reporter shows, and the loop retries by itself with backoff; nothing is dropped
silently: chunks the device no longer holds when the QKDM comes back are counted as ``skipped``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from controllers.keystore import MAX_BATCH, KeyStore, StreamCounts
from controllers.kube import Kube, NotFoundError
from controllers.qkdm.ids import (
    MAX_EPOCH,
    default_ksid,
    epoch_ksid,
    epoch_of,
    joined_chunk_ids,
)
from controllers.qkdm.ratemeter import RateMeter
from controllers.qkdm.status import Fault, Observation
from qss_api import KEYSTREAMS, QKDLINKS
from qss_api.qkd004 import MAX_RUN_BYTES, Keys, QoS, Reason, Status
from qss_api.qkd004_client import (
    DeviceClient,
    DeviceError,
    DeviceProtocolError,
    DeviceRefusal,
)
from qss_api.wire import BadMessage

log = logging.getLogger("controllers.qkdm")

DEFAULT_CHUNK_BITS = 256
DEFAULT_CAPACITY = 100_000
# Key material fetched ahead of the store (in flight or waiting), and the most one store call
# takes: each call is one fsync of Redis's append-only file, whose fixed cost (about 10 ms on a
# virtual disk) then spreads over up to four device runs.
AHEAD_BYTES = 4 * MAX_RUN_BYTES


class Stopped(Protocol):
    """kopf's DaemonStopped, as far as the pump uses it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class StreamEnded(Exception):
    """The device key stream cannot continue; the pump moves on to ``next_epoch``."""

    def __init__(self, message: str, *, next_epoch: int) -> None:
        super().__init__(message)
        self.next_epoch = next_epoch


class StreamNotReady(Exception):
    """The stream cannot be opened yet; carries the fault to show."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


@dataclass(frozen=True, kw_only=True)
class StreamPlan:
    """What the KeyStream and its link say about the stream, resolved once per opening."""

    name: str
    ksid: str
    peer_node: str
    chunk_bytes: int
    capacity: int
    qos: QoS
    min_bps: int | None
    generation: int


def plan_stream(
    *, node_id: str, stream: Mapping[str, Any], link: Mapping[str, Any] | None
) -> StreamPlan:
    """Resolve a KeyStream and its QKDLink into a plan, or raise ``StreamNotReady``."""
    meta = stream.get("metadata") or {}
    spec = stream.get("spec") or {}
    name = str(meta.get("name"))
    if link is None:
        raise StreamNotReady(
            Fault(
                reason="LinkNotFound",
                message=f"QKDLink {spec.get('link')!r} does not exist; the stream waits for it",
            )
        )
    link_spec = link.get("spec") or {}
    peer = str(link_spec["peerNodeID"])
    qos = spec.get("qos") or {}
    chunk_bits = int(qos.get("keyChunkSize", DEFAULT_CHUNK_BITS))
    device_qos: dict[str, int] = {"key_chunk_size": chunk_bits // 8}
    for ours, theirs in (
        ("maxBps", "max_bps"),
        ("minBps", "min_bps"),
        ("jitter", "jitter"),
        ("priority", "priority"),
        ("timeout", "timeout"),
        ("ttl", "ttl"),
    ):
        if ours in qos:
            device_qos[theirs] = int(qos[ours])
    # GET_KEY never waits: the pump stores what the device holds now and polls again after
    # idle_seconds, so every batch is written promptly and the measured rate is smooth.
    device_qos["timeout"] = 0
    return StreamPlan(
        name=name,
        ksid=str(spec.get("ksid") or default_ksid(node_a=node_id, node_b=peer, stream=name)),
        peer_node=peer,
        chunk_bytes=chunk_bits // 8,
        capacity=int(link_spec.get("keyBufferCapacity", DEFAULT_CAPACITY)),
        qos=QoS(**device_qos),
        min_bps=int(qos["minBps"]) if "minBps" in qos else None,
        generation=int(meta.get("generation", 0)),
    )


PEER_NOT_CONNECTED = Fault(
    reason="PeerNotConnected",
    message="the peer node's QKD module has not opened its end of the stream yet",
)

# Device refusals that mean "the stream is down", with the reason shown for each.
_DOWN_REASONS = {
    Reason.LINK_DOWN: "LinkDown",
    Reason.QBER_TOO_HIGH: "QberTooHigh",
    Reason.ABORTED: "StreamAborted",
    Reason.UNKNOWN_KSID: "StreamNotOpen",
}


def fault_for(exc: Exception) -> Fault:
    """The fault to show for an exception the pump could not handle in place."""
    if isinstance(exc, StreamNotReady):
        return exc.fault
    if isinstance(exc, DeviceRefusal):
        if exc.status == Status.QOS_NOT_MET:
            return Fault(reason="QoSNotMet", message=f"the device cannot meet the QoS: {exc}")
        reason = _DOWN_REASONS.get(exc.reason, "DeviceRefused")
        return Fault(reason=reason, message=str(exc))
    if isinstance(exc, DeviceProtocolError):
        return Fault(reason="DeviceGarbage", message=str(exc))
    if isinstance(exc, DeviceError):
        return Fault(reason="DeviceUnreachable", message=str(exc))
    if isinstance(exc, RedisError | OSError):
        return Fault(reason="StoreUnavailable", message=f"the key store failed: {exc!r}")
    return Fault(reason="InternalError", message=f"unexpected {type(exc).__name__}")


@dataclass
class Pump:
    node_id: str
    stream_name: str
    kube: Kube
    store: KeyStore
    device: DeviceClient
    idle_seconds: float = 0.1  # wait while the buffer is full or the peer is not there yet
    retry_seconds: float = 1.0  # first wait after a fault; doubles up to max_retry_seconds
    max_retry_seconds: float = 10.0
    meter: RateMeter = field(default_factory=RateMeter)
    plan: StreamPlan | None = None
    counts: StreamCounts | None = None
    fault: Fault | None = None
    skipped: int = 0  # chunks the device dropped before the QKDM could store them
    replaced: int = 0  # device key streams replaced (KSID changes) since this QKDM started
    aborted: int = 0  # of those, streams the device aborted (QBER too high)
    chunks_stored: int = 0  # chunks taken into the store since this QKDM started
    bits_stored: int = 0
    ksid: str | None = None  # the device key stream this end is on, once joined
    opened: bool = False  # the device has the stream open at this end
    flowing: bool = False  # keys have arrived since the stream was (re)opened
    # The epoch to open next, when the current one could not continue (kept across faults).
    _next_epoch: int | None = None

    def observation(self) -> Observation:
        plan = self.plan
        return Observation(
            ksid=self.ksid or (plan.ksid if plan else ""),
            counts=self.counts,
            capacity=plan.capacity if plan else DEFAULT_CAPACITY,
            rate_bps=self.meter.bps(),
            min_bps=plan.min_bps if plan else None,
            fault=self.fault,
            warming_up=self.meter.warming_up(),
            generation=plan.generation if plan else 0,
            opened=self.opened,
            flowing=self.flowing,
        )

    async def run(self, stopped: Stopped) -> None:
        delay = self.retry_seconds
        while not stopped:
            try:
                await self._prepare()
                await self._join()
                delay = self.retry_seconds
                await self._pull(stopped)
            except StreamEnded as ended:
                log.warning("stream %s: %s", self.stream_name, ended)
                await self._leave(next_epoch=ended.next_epoch)
            except (StreamNotReady, DeviceError, RedisError, OSError, NotFoundError) as exc:
                fault = fault_for(exc) if not isinstance(exc, NotFoundError) else None
                if fault is None:
                    return  # our KeyStream is gone; kopf stops the daemon
                if fault != self.fault:
                    log.warning("stream %s: %s", self.stream_name, fault.message)
                self.fault = fault
                self.opened = False
                await self.device.aclose()
                await stopped.wait(delay)
                delay = min(delay * 2, self.max_retry_seconds)

    async def _prepare(self) -> None:
        stream = await self.kube.get(KEYSTREAMS, self.stream_name)
        link_name = str((stream.get("spec") or {}).get("link", ""))
        try:
            link: dict[str, Any] | None = await self.kube.get(QKDLINKS, link_name)
        except NotFoundError:
            link = None
        self.plan = plan_stream(node_id=self.node_id, stream=stream, link=link)
        await self.store.configure_stream(
            stream=self.plan.name, capacity=self.plan.capacity, chunk_bytes=self.plan.chunk_bytes
        )
        self.counts = await self.store.counts(stream=self.plan.name)

    # -- which device key stream -----------------------------------------------------------------

    async def _stored_epoch(self, plan: StreamPlan) -> int | None:
        """The epoch the store's cursor counts in; None when this end never opened one of the
        stream's KSIDs (a new stream, or one whose spec.ksid changed)."""
        stored = await self.store.ingest_key_stream(stream=plan.name)
        if stored is None:
            # A store from before KSIDs were recorded: its cursor counts in the base KSID.
            if await self.store.ingest_cursor(stream=plan.name) > 0:
                return 0
            return None
        return epoch_of(plan.ksid, stored)

    async def _join(self) -> None:
        """Be on a device key stream: resume the one the store names (the pull finds out
        whether the device still has it), or open the next one."""
        plan = self.plan
        assert plan is not None
        stored = await self._stored_epoch(plan)
        if stored is not None and (self._next_epoch is None or self._next_epoch <= stored):
            # Never OPEN_CONNECT a KSID this end has opened before: GET_KEY tells whether the
            # device still has it at this end (a restarted QKDM takes the stream over).
            self._next_epoch = None
            self._on(epoch_ksid(plan.ksid, stored))
            return
        epoch = self._next_epoch if self._next_epoch is not None else 0
        while True:
            ksid = epoch_ksid(plan.ksid, epoch)
            try:
                opened = await self.device.open_connect(
                    ksid=ksid, source=self.node_id, destination=plan.peer_node, qos=plan.qos
                )
            except DeviceRefusal as refusal:
                later = self._later_epoch(plan, refusal.refusal.peer_key_stream_IDs, epoch)
                if later is not None:
                    # Refused (no rate left for a new stream, say), but the peer already waits
                    # on a later KSID of ours: join that one instead.
                    epoch = later
                    continue
                if refusal.status != Status.KSID_IN_USE:
                    raise
                if refusal.reason != Reason.KSID_IN_USE:
                    # Retired (closed at both ends before) or aborted at the peer's end: not a
                    # stream to join. Its successor is.
                    epoch = self._successor(epoch)
                    continue
                # Open at this end already: this QKDM opened it and stopped before recording
                # it. It has delivered nothing here yet, so take it over.
            else:
                later = self._later_epoch(plan, opened.peer_key_stream_IDs, epoch)
                if later is not None:
                    # The peer already waits on a later KSID of ours: join that one instead.
                    await self._close_quietly(ksid)
                    epoch = later
                    continue
            break
        # Recorded only once the device has it open, so that a KSID the store names has been
        # opened at this end (and is never opened again).
        await self.store.start_key_stream(stream=plan.name, ksid=ksid, epoch=epoch)
        self._next_epoch = None
        self._on(ksid)
        if epoch > 0:
            log.info("stream %s: now on key stream %s (epoch %d)", plan.name, ksid, epoch)

    def _on(self, ksid: str) -> None:
        self.ksid = ksid
        self.opened = True
        self.flowing = False
        self.fault = None

    @staticmethod
    def _successor(epoch: int) -> int:
        if epoch >= MAX_EPOCH:
            raise StreamNotReady(
                Fault(reason="EpochsExhausted", message="no key stream ID of this stream is left")
            )
        return epoch + 1

    @staticmethod
    def _later_epoch(plan: StreamPlan, waiting: list[str] | None, epoch: int) -> int | None:
        """The latest epoch of our stream among the peer's waiting KSIDs, if after ``epoch``."""
        epochs = [e for e in (epoch_of(plan.ksid, k) for k in waiting or ()) if e is not None]
        latest = max(epochs, default=-1)
        return latest if latest > epoch else None

    async def _close_quietly(self, ksid: str) -> None:
        """CLOSE ``ksid`` at this end if the device still has it; nothing else matters now."""
        try:
            await self.device.close_stream(ksid=ksid)
        except DeviceRefusal:
            pass  # not open here any more (the device restarted): nothing to close

    async def _leave(self, *, next_epoch: int) -> None:
        """Give up the current device key stream; the next ``_join`` opens ``next_epoch``."""
        if self.ksid is not None:
            try:
                await self._close_quietly(self.ksid)
            except DeviceError as exc:
                log.info("stream %s: could not close %s: %s", self.stream_name, self.ksid, exc)
        self._next_epoch = next_epoch
        self.replaced += 1
        self.opened = False

    # -- keys --------------------------------------------------------------------------------

    async def _pull(self, stopped: Stopped) -> None:
        plan = self.plan
        ksid = self.ksid
        assert plan is not None
        assert ksid is not None
        epoch = epoch_of(plan.ksid, ksid) or 0
        cursor = await self.store.ingest_cursor(stream=plan.name)
        run = max(1, MAX_RUN_BYTES // plan.chunk_bytes)
        depth = max(2, AHEAD_BYTES // (run * plan.chunk_bytes))
        self.counts = await self.store.counts(stream=plan.name)
        # Room in the buffer, as the last store write left it (each write says), so that a
        # batch costs one Redis call, not two; only a full buffer is polled.
        free = self.counts.free
        # Runs are fetched from the device, decoded and named ``depth`` GET_KEYs ahead of the
        # store, so the device, this process and Redis work at the same time, and each store
        # write takes every run that arrived meanwhile (one fsync for several runs).
        ahead: deque[_Fetch] = deque()
        fetch_from = cursor  # the index the next GET_KEY asks for
        try:
            while not stopped:
                if free <= 0:
                    await stopped.wait(self.idle_seconds)
                    self.counts = await self.store.counts(stream=plan.name)
                    free = self.counts.free
                    continue
                if not ahead:
                    fetch_from = cursor  # nothing in flight (a run came back short, say)
                fetch_from = self._fill(ahead, plan, ksid, fetch_from, cursor + free, run, depth)
                try:
                    runs = await _ready_runs(ahead, cursor, max_chunks=max(MAX_BATCH, run))
                except _Refused as refusal:
                    await _settle(ahead)
                    fetch_from = cursor
                    if refusal.index == cursor:
                        cursor = await self._refused(
                            refusal.error, plan=plan, epoch=epoch, cursor=cursor
                        )
                        fetch_from = cursor
                        await stopped.wait(self.idle_seconds)
                    continue  # else asked ahead of a run the device returned short; again
                if not runs:
                    # The first run is not at the cursor (a run before it came back short).
                    await _settle(ahead)
                    fetch_from = cursor
                    continue
                self.fault = None  # keys flow, so the peer's end is open too
                if not self.flowing:
                    # Measure from the first key: time waiting for the peer is not the rate.
                    self.meter.start()
                    self.flowing = True
                count = sum(r.count for r in runs)
                if (ahead[0].index if ahead else fetch_from) != cursor + count:
                    # The last run came back short: what was asked after it is stale.
                    await _settle(ahead)
                    fetch_from = cursor + count
                fetch_from = self._fill(ahead, plan, ksid, fetch_from, cursor + free, run, depth)
                # The store moves the cursor past what it kept, in the same atomic step.
                result = await self.store.add_run(
                    stream=plan.name,
                    chunk_ids=b"".join(r.chunk_ids for r in runs),
                    material=b"".join(r.material for r in runs),
                    first_index=cursor,
                )
                cursor += result.stored
                free = result.free
                if result.stored != count:
                    # Refused at the buffer's end: what was fetched past it is stale.
                    await _settle(ahead)
                    fetch_from = cursor
                self.meter.record(result.accepted * plan.chunk_bytes * 8)
                self.chunks_stored += result.accepted
                self.bits_stored += result.accepted * plan.chunk_bytes * 8
        finally:
            for fetch in ahead:
                fetch.task.cancel()
            await _settle(ahead)

    def _fill(
        self,
        ahead: deque[_Fetch],
        plan: StreamPlan,
        ksid: str,
        fetch_from: int,
        room_end: int,
        run: int,
        depth: int,
    ) -> int:
        """Start GET_KEYs until ``depth`` are ahead or the buffer's room (up to index
        ``room_end``) is asked for; the index the next one would ask for."""
        while len(ahead) < depth and fetch_from < room_end:
            count = min(run, room_end - fetch_from)
            task = asyncio.create_task(self._get_run(plan, ksid, fetch_from, count))
            ahead.append(_Fetch(index=fetch_from, task=task))
            fetch_from += count
        return fetch_from

    async def _get_run(self, plan: StreamPlan, ksid: str, index: int, count: int) -> _Run:
        try:
            keys = await self.device.get_keys(ksid=ksid, index=index, count=count)
        except DeviceRefusal as refusal:
            raise _Refused(refusal, index=index) from None
        return _decoded(plan, ksid, keys)

    async def _refused(
        self, refusal: DeviceRefusal, *, plan: StreamPlan, epoch: int, cursor: int
    ) -> int:
        """Act on a GET_KEY refusal; the cursor to go on from. Raises what ends the pull."""
        reason = refusal.reason
        if refusal.status in (Status.INSUFFICIENT_KEY, Status.TIMEOUT) and reason != Reason.EXPIRED:
            # Not generated yet: the stream runs, so the peer has it open too.
            if self.fault == PEER_NOT_CONNECTED:
                self.fault = None
            return cursor
        if reason == Reason.EXPIRED:
            # The device dropped chunks we had not fetched (the buffer was full, or we fell
            # behind). Skip into the middle of what it still holds, so the next request is not
            # overtaken again before it arrives; count what was lost.
            oldest = refusal.refusal.oldest_index
            oldest = cursor + 1 if oldest is None else oldest
            newest = refusal.refusal.next_index
            newest = oldest if newest is None else newest
            skip_to = max(oldest + (newest - oldest) // 2, cursor + 1)
            self.skipped += skip_to - cursor
            await self.store.set_ingest_cursor(stream=plan.name, cursor=skip_to)
            return skip_to
        if refusal.status == Status.GET_KEY_PEER_NOT_CONNECTED:
            self.fault = PEER_NOT_CONNECTED
            later = self._later_epoch(plan, refusal.refusal.peer_key_stream_IDs, epoch)
            if later is not None:
                raise StreamEnded(
                    f"the peer waits on key stream {epoch_ksid(plan.ksid, later)} (epoch "
                    f"{later}); following it",
                    next_epoch=later,
                )
            return cursor
        if reason == Reason.UNKNOWN_KSID:
            raise StreamEnded(
                f"the device no longer has key stream {self.ksid} (it restarted); opening the "
                f"next one (epoch {epoch + 1})",
                next_epoch=self._successor(epoch),
            )
        if reason == Reason.ABORTED:
            self.aborted += 1
            raise StreamEnded(
                f"the device aborted key stream {self.ksid} ({refusal.refusal.message}); "
                f"opening the next one (epoch {epoch + 1}) once the device allows it",
                next_epoch=self._successor(epoch),
            )
        raise refusal


class _Refused(Exception):
    """A GET_KEY of ``_Fetch`` refused, with the index it asked for."""

    def __init__(self, error: DeviceRefusal, *, index: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.index = index


@dataclass(frozen=True, slots=True)
class _Run:
    """A GET_KEY reply ready to store: consecutive chunks from ``index``, their IDs and their
    material, each as one buffer (``KeyStore.add_run``)."""

    index: int
    count: int
    chunk_ids: bytes
    material: bytes = field(repr=False)


def _decoded(plan: StreamPlan, ksid: str, keys: Keys) -> _Run:
    """A reply's material, checked against the stream's chunk size, and its chunks' IDs."""
    try:
        material = keys.material()
    except BadMessage as exc:
        raise DeviceProtocolError(f"the device sent {exc.message}") from None
    size = plan.chunk_bytes
    if len(material) != keys.count * size:
        raise StreamNotReady(
            Fault(
                reason="DeviceGarbage",
                message=f"the device returned {len(material)} bytes for {keys.count} chunks; "
                f"the stream takes chunks of {size} bytes",
            )
        )
    return _Run(
        index=keys.index,
        count=keys.count,
        chunk_ids=joined_chunk_ids(ksid, keys.index, keys.count),
        material=material,
    )


@dataclass(frozen=True, slots=True)
class _Fetch:
    """A GET_KEY in flight for the run from ``index``."""

    index: int
    task: asyncio.Task[_Run]


async def _ready_runs(ahead: deque[_Fetch], cursor: int, *, max_chunks: int) -> list[_Run]:
    """The first fetch's run, and the consecutive runs after it that have arrived already, as
    much as one store call takes (``AHEAD_BYTES``, ``max_chunks``); [] if the first run does
    not start at ``cursor``. Raises what the first fetch raised."""
    first = await ahead.popleft().task
    if first.index != cursor:
        return []
    runs = [first]
    end, chunks, size = first.index + first.count, first.count, len(first.material)
    while ahead and ahead[0].task.done():
        task = ahead[0].task
        if task.cancelled() or task.exception() is not None:
            break  # the next round meets it first
        run = task.result()
        if (
            run.index != end
            or chunks + run.count > max_chunks
            or size + len(run.material) > AHEAD_BYTES
        ):
            break
        ahead.popleft()
        runs.append(run)
        end, chunks, size = end + run.count, chunks + run.count, size + len(run.material)
    return runs


async def _settle(ahead: deque[_Fetch]) -> None:
    """Wait for the fetches still in flight and forget them: they asked for indices past a run
    that was refused or short, so the next ones start again from the cursor."""
    tasks = [fetch.task for fetch in ahead]
    ahead.clear()
    await asyncio.gather(*tasks, return_exceptions=True)
