"""The QKDM's work loop for one key stream: device -> key store, with back-pressure.

``Pump.run`` (called by the kopf daemon in ``controllers.qkdm.main``) prepares the stream (reads
the KeyStream and its QKDLink, configures the store), opens it on the device and pulls chunks in
index order from the stream's cursor, storing each batch together with the new cursor so that a
restarted QKDM resumes exactly where the store says. While the buffer is full it stops pulling.
Faults (device unreachable, link down, QBER abort, Redis down, link missing) become a ``Fault``
the reporter shows, and the loop retries by itself with backoff; nothing is dropped silently:
chunks the device no longer holds when the QKDM comes back are counted as ``skipped``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from controllers.keystore import Chunk, KeyStore, StreamCounts
from controllers.kube import Kube, NotFoundError
from controllers.qkdm.device import (
    DeviceClient,
    DeviceError,
    DeviceProtocolError,
    DeviceRefusal,
    KeyChunk,
    Status,
)
from controllers.qkdm.ids import chunk_id, default_ksid
from controllers.qkdm.ratemeter import RateMeter
from controllers.qkdm.status import Fault, Observation
from qss_api import KEYSTREAMS, QKDLINKS

log = logging.getLogger("controllers.qkdm")

DEFAULT_CHUNK_BITS = 256
DEFAULT_CAPACITY = 100_000


class Stopped(Protocol):
    """kopf's DaemonStopped, as far as the pump uses it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


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
    qos: dict[str, int]
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
    device_qos = {"key_chunk_size": chunk_bits // 8}
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
        qos=device_qos,
        min_bps=int(qos["minBps"]) if "minBps" in qos else None,
        generation=int(meta.get("generation", 0)),
    )


PEER_NOT_CONNECTED = Fault(
    reason="PeerNotConnected",
    message="the peer node's QKD module has not opened its end of the stream yet",
)

# Device refusals that mean "the stream is down", with the reason shown for each.
_DOWN_REASONS = {
    "link_down": "LinkDown",
    "qber_too_high": "QberTooHigh",
    "aborted": "StreamAborted",
    "unknown_ksid": "StreamNotOpen",
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
    batch: int = 256  # chunks pulled per store write; bounds the work lost to a crash
    idle_seconds: float = 0.1  # wait while the buffer is full or the peer is not there yet
    retry_seconds: float = 1.0  # first wait after a fault; doubles up to max_retry_seconds
    max_retry_seconds: float = 10.0
    meter: RateMeter = field(default_factory=RateMeter)
    plan: StreamPlan | None = None
    counts: StreamCounts | None = None
    fault: Fault | None = None
    skipped: int = 0  # chunks the device dropped before the QKDM could store them
    opened: bool = False  # the device has opened the stream at this end
    flowing: bool = False  # keys have arrived since the stream was (re)opened

    def observation(self) -> Observation:
        plan = self.plan
        return Observation(
            ksid=plan.ksid if plan else "",
            counts=self.counts,
            capacity=plan.capacity if plan else DEFAULT_CAPACITY,
            rate_bps=self.meter.bps(),
            min_bps=plan.min_bps if plan else None,
            fault=self.fault,
            warming_up=self.meter.warming_up(),
            generation=plan.generation if plan else 0,
            opened=self.opened,
        )

    async def run(self, stopped: Stopped) -> None:
        delay = self.retry_seconds
        while not stopped:
            try:
                await self._prepare()
                await self._open()
                delay = self.retry_seconds
                await self._pull(stopped)
            except (StreamNotReady, DeviceError, RedisError, OSError, NotFoundError) as exc:
                fault = fault_for(exc) if not isinstance(exc, NotFoundError) else None
                if fault is None:
                    return  # our KeyStream is gone; kopf stops the daemon
                if fault != self.fault:
                    log.warning("stream %s: %s", self.stream_name, fault.message)
                self.fault = fault
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

    async def _open(self) -> None:
        assert self.plan is not None
        try:
            opened = await self.device.open_connect(
                ksid=self.plan.ksid,
                source=self.node_id,
                destination=self.plan.peer_node,
                qos=self.plan.qos,
            )
        except DeviceRefusal as refusal:
            # Open at this end already: a restarted QKDM takes the stream over where it was.
            if refusal.status != Status.KSID_IN_USE or refusal.reason != "ksid_in_use":
                raise
            opened = Status.SUCCESS
        self.opened = True
        self.flowing = False
        self.fault = PEER_NOT_CONNECTED if opened == Status.PEER_NOT_CONNECTED else None

    async def _pull(self, stopped: Stopped) -> None:
        plan = self.plan
        assert plan is not None
        cursor = await self.store.ingest_cursor(stream=plan.name)
        while not stopped:
            self.counts = await self.store.counts(stream=plan.name)
            free = self.counts.free
            if free <= 0:
                await stopped.wait(self.idle_seconds)
                continue
            got, refusal = await self.device.get_keys(
                ksid=plan.ksid, first=cursor, count=min(free, self.batch)
            )
            stored_all = True
            if got:
                chunks = [self._chunk(plan, key) for key in got]
                self.fault = None  # keys flow, so the peer's end is open too
                if not self.flowing:
                    # Measure from the first key: time waiting for the peer is not the rate.
                    self.meter.start()
                    self.flowing = True
                # The store moves the cursor past what it kept, in the same atomic step.
                result = await self.store.add_chunks(
                    stream=plan.name, chunks=chunks, first_index=cursor
                )
                cursor += result.stored
                stored_all = result.stored == len(chunks)
                self.meter.record(result.accepted * plan.chunk_bytes * 8)
            if refusal is None or not stored_all:
                continue  # more may be waiting right now
            if refusal.status == Status.INSUFFICIENT_KEY and refusal.reason == "expired":
                # The device dropped chunks we had not fetched (the buffer was full, or we fell
                # behind). Skip into the middle of what it still holds, so the next request is
                # not overtaken again before it arrives; count what was lost.
                oldest = int(refusal.reply.get("oldest_index", cursor + 1))
                newest = int(refusal.reply.get("next_index", oldest))
                skip_to = max(oldest + (newest - oldest) // 2, cursor + 1)
                self.skipped += skip_to - cursor
                cursor = skip_to
                await self.store.set_ingest_cursor(stream=plan.name, cursor=cursor)
                continue
            if refusal.status in (Status.PEER_NOT_CONNECTED, Status.GET_KEY_PEER_NOT_CONNECTED):
                self.fault = PEER_NOT_CONNECTED
            elif refusal.status not in (Status.INSUFFICIENT_KEY, Status.TIMEOUT):
                raise refusal
            if not got:
                await stopped.wait(self.idle_seconds)  # nothing to fetch now

    @staticmethod
    def _chunk(plan: StreamPlan, key: KeyChunk) -> Chunk:
        if len(key.material) != plan.chunk_bytes:
            raise StreamNotReady(
                Fault(
                    reason="DeviceGarbage",
                    message=f"the device returned {len(key.material)}-byte chunks, "
                    f"the stream takes {plan.chunk_bytes}",
                )
            )
        return Chunk(chunk_id=chunk_id(plan.ksid, key.index), material=key.material)
