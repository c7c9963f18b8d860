"""One end of the simulated device: requests of ``qss_api.qkd004`` in, replies out.

``server`` hands every request line it reads on an end's Unix socket to that end's ``Device``
and writes back the one line it returns. Every line is read with ``qkd004.decode_request``
before any logic runs; whatever a client sends, the answer is a reply, never an exception: a
request that is not one gets status -1 with a message naming what is wrong. See ``qss_api.qkd004``
for the ops and their fields.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from device_plugin.simdevice.keymaterial import KeyMaterial
from device_plugin.simdevice.link import End, Link, Refused
from qss_api.qkd004 import (
    MAX_RUN_BYTES,
    Close,
    Closed,
    DeviceState,
    Fault,
    GetKey,
    Health,
    Metadata,
    OpenConnect,
    Opened,
    QoS,
    Reason,
    Refusal,
    Reply,
    Request,
    Status,
    StreamState,
    decode_request,
    encode,
    encode_keys,
    refusal,
)
from qss_api.wire import BadMessage

log = logging.getLogger(__name__)


def bad_request(message: str) -> Refusal:
    return refusal(Status.BAD_REQUEST, Reason.BAD_REQUEST, message)


def _request_id(line: bytes) -> int | str | None:
    """The ``id`` of a request that could not be read, if there is a usable one to echo."""
    try:
        value = pydantic_core.from_json(line)
    except ValueError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    if isinstance(found, bool) or not isinstance(found, int | str):
        return None
    if isinstance(found, str) and not 0 < len(found) <= 256:
        return None
    if isinstance(found, int) and not -(2**63) <= found < 2**63:
        return None
    return found


@dataclass(frozen=True)
class KeyRun:
    """A GET_KEY answer before it is encoded: the reply ``Keys`` carries ``material`` in base64,
    written by ``qkd004.encode_keys`` straight from these bytes."""

    index: int
    count: int
    material: bytes = field(repr=False)
    metadata: Metadata


class Device:
    """The request handler of one end (``"A"`` or ``"B"``) of a pair sharing ``link``."""

    def __init__(self, *, end: End, link: Link, keys: KeyMaterial) -> None:
        self.end = end
        self._link = link
        self._keys = keys

    async def handle_line(self, line: bytes) -> bytes:
        """Answer one request line with one reply line."""
        try:
            request = decode_request(line)
        except BadMessage as exc:
            reply: Reply | KeyRun = bad_request(exc.message)
            request_id = _request_id(line)
        else:
            reply = await self.handle(request)
            request_id = request.id
        if isinstance(reply, KeyRun):
            return encode_keys(
                index=reply.index,
                count=reply.count,
                material=reply.material,
                metadata=reply.metadata,
                id=request_id,
            )
        if request_id is not None:
            reply = reply.model_copy(update={"id": request_id})
        return encode(reply)

    async def handle(self, request: Request) -> Reply | KeyRun:
        try:
            if isinstance(request, OpenConnect):
                return self._open_connect(request)
            if isinstance(request, GetKey):
                return await self._get_key(request)
            if isinstance(request, Close):
                return self._close(request)
            if isinstance(request, Health):
                return self._state()
            return self._fault(request)
        except Refused as refused:
            return refused.reply
        except Exception:
            # A bug must not take the device down: answer, log, and keep serving.
            log.exception("end %s failed on a request", self.end)
            return refusal(
                Status.BAD_REQUEST,
                Reason.INTERNAL_ERROR,
                "the device failed on this request; see its log",
            )

    # -- ops -----------------------------------------------------------------------------------

    def _open_connect(self, request: OpenConnect) -> Opened:
        qos = request.qos or QoS()
        if qos.max_bps and qos.min_bps > qos.max_bps:
            raise Refused(
                Status.QOS_NOT_MET, Reason.MIN_ABOVE_MAX, "qos.min_bps must not exceed qos.max_bps"
            )
        try:
            status, stream = self._link.open(
                self.end,
                ksid=request.key_stream_ID,
                source=request.source,
                destination=request.destination,
                qos=qos,
            )
        except Refused as refused:
            # Whatever the reason (no rate left, say), the streams the peer waits on may be
            # what the caller wants to join instead.
            waiting = self._link.awaiting(self.end)
            if waiting:
                refused.reply = refused.reply.model_copy(update={"peer_key_stream_IDs": waiting})
            raise
        log.info(
            "end %s opened key stream %s (%s -> %s), status %d",
            self.end,
            stream.ksid,
            request.source,
            request.destination,
            status,
        )
        return Opened(
            status=0 if status == Status.SUCCESS else 1,
            key_stream_ID=stream.ksid,
            qos=stream.qos,
            peer_key_stream_IDs=(
                self._link.awaiting(self.end) if status == Status.PEER_NOT_CONNECTED else None
            ),
        )

    async def _get_key(self, request: GetKey) -> KeyRun:
        ksid = request.key_stream_ID
        stream = self._link.stream_at(self.end, ksid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stream.qos.timeout / 1000
        while True:
            # The stream may be closed, aborted or cut while we wait: look again each round.
            stream = self._link.stream_at(self.end, ksid)
            oldest, end = self._link.window(self.end, stream)
            wanted = stream.cursor[self.end] if request.index is None else request.index
            if wanted < oldest:
                raise Refused(
                    Status.INSUFFICIENT_KEY,
                    Reason.EXPIRED,
                    f"chunk {wanted} is no longer held; the oldest is {oldest}",
                    oldest_index=oldest,
                    next_index=end,
                )
            if wanted < end:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                timed = bool(stream.qos.timeout)
                raise Refused(
                    Status.TIMEOUT if timed else Status.INSUFFICIENT_KEY,
                    Reason.TIMEOUT if timed else Reason.NOT_YET,
                    f"chunk {wanted} has not been generated yet; {end} chunks exist",
                    oldest_index=oldest,
                    next_index=end,
                )
            eta = self._link.seconds_until(stream, wanted)
            await asyncio.sleep(min(remaining, 0.25 if eta is None else max(eta, 0.001)))

        metadata = self._metadata(stream)
        needed = len(metadata.model_dump_json())
        if request.metadata_size is not None and needed > request.metadata_size:
            raise Refused(
                Status.METADATA_SIZE_INSUFFICIENT,
                Reason.METADATA_TOO_LARGE,
                f"the metadata needs {needed} bytes, metadata_size is {request.metadata_size}",
                metadata_size=needed,
            )
        size = stream.qos.key_chunk_size
        count = min(request.count or 1, end - wanted, max(1, MAX_RUN_BYTES // size))
        material = self._keys.run(ksid=ksid, index=wanted, count=count, size=size)
        stream.cursor[self.end] = max(stream.cursor[self.end], wanted + count)
        return KeyRun(index=wanted, count=count, material=material, metadata=metadata)

    def _close(self, request: Close) -> Closed:
        ksid = request.key_stream_ID
        self._link.close(self.end, ksid)
        if not self._link.has_stream(ksid):
            self._keys.forget(ksid)
        log.info("end %s closed key stream %s", self.end, ksid)
        return Closed(status=0)

    def _fault(self, request: Fault) -> DeviceState:
        self._link.set_faults(
            link_down=request.link_down, rate_bps=request.rate_bps, qber=request.qber
        )
        log.warning(
            "fault set through end %s: link %s, rate %d bits/s, QBER %.3f",
            self.end,
            "up" if self._link.link_up else "down",
            self._link.rate_bps,
            self._link.qber,
        )
        return self._state()

    # -- helpers -------------------------------------------------------------------------------

    def _state(self) -> DeviceState:
        link = self._link
        return DeviceState(
            status=0,
            healthy=link.healthy,
            end=self.end,
            link_up=link.link_up,
            rate_bps=link.rate_bps,
            qber=link.qber,
            qber_threshold=link.qber_threshold,
            streams=[
                StreamState(
                    key_stream_ID=s.ksid,
                    rate_bps=round(link.stream_rate(s)),
                    peer_connected=len(s.ends) == 2,
                    aborted=s.aborted is not None,
                )
                # Bounded, so the answer stays one short line (the health probe reads 64 KiB).
                for s in link.streams_at(self.end)[:100]
            ],
        )

    def _metadata(self, stream: Any) -> Metadata:
        return Metadata(qber=self._link.qber, rate_bps=round(self._link.stream_rate(stream)))
