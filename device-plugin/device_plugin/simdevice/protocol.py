"""One end of the simulated device: ETSI GS QKD 004 style requests in, responses out.

``server`` hands every request line it reads on an end's Unix socket to that end's ``Device``
and writes back the one line it returns. Requests and responses are JSON objects, one per line;
every request has an ``op``; an optional ``id`` is echoed back. See the package docstring for
the ops and their fields. Whatever a client sends, the answer is a response, never an
exception: malformed requests get status -1 with a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from typing import Any

from device_plugin.simdevice.keymaterial import MAX_INDEX, KeyMaterial
from device_plugin.simdevice.link import End, Link, QoS, Stream
from device_plugin.simdevice.status import Refusal, Status

log = logging.getLogger(__name__)

# Longest GET_KEY wait a client can ask for (QoS timeout, ms); keeps a connection from hanging.
MAX_TIMEOUT_MS = 60_000
MAX_CHUNK_BYTES = 65_536
MAX_ID_LENGTH = 256


class BadRequest(Refusal):
    def __init__(self, message: str) -> None:
        super().__init__(Status.BAD_REQUEST, "bad_request", message)


def encode(response: dict[str, Any]) -> bytes:
    """One response line."""
    return json.dumps(response, separators=(",", ":")).encode() + b"\n"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _integer(value: object, name: str, *, low: int = 0, high: int = 2**63 - 1) -> int:
    # bool is an int in Python, but `true` is no valid count.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise BadRequest(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    return value


def _fields(request: dict[str, Any], op: str, allowed: set[str]) -> None:
    unknown = sorted(set(request) - allowed - {"op", "id"})
    if unknown:
        raise BadRequest(f"{op} does not take the field(s) {', '.join(unknown)}")


def _qos(value: object) -> QoS:
    if value is None:
        return QoS()
    if not isinstance(value, dict):
        raise BadRequest("qos must be an object")
    known = set(QoS.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise BadRequest(f"qos does not take the field(s) {', '.join(unknown)}")
    values = {name: _integer(v, f"qos.{name}") for name, v in value.items()}
    qos = QoS(**values)
    _integer(qos.key_chunk_size, "qos.key_chunk_size", low=1, high=MAX_CHUNK_BYTES)
    _integer(qos.timeout, "qos.timeout", high=MAX_TIMEOUT_MS)
    if qos.max_bps and qos.min_bps > qos.max_bps:
        raise Refusal(
            Status.QOS_NOT_MET, "min_above_max", "qos.min_bps must not exceed qos.max_bps"
        )
    return qos


class Device:
    """The request handler of one end (``"A"`` or ``"B"``) of a pair sharing ``link``."""

    def __init__(self, *, end: End, link: Link, keys: KeyMaterial) -> None:
        self.end = end
        self._link = link
        self._keys = keys

    async def handle_line(self, line: bytes) -> bytes:
        """Answer one request line with one response line."""
        request: object = None
        try:
            request = json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            response = BadRequest(f"the request is not a JSON object ({exc})").response()
        else:
            response = await self.handle(request)
        if isinstance(request, dict) and "id" in request:
            response["id"] = request["id"]
        return encode(response)

    async def handle(self, request: object) -> dict[str, Any]:
        try:
            if not isinstance(request, dict):
                raise BadRequest("the request must be a JSON object with an 'op' field")
            op = request.get("op")
            if op == "OPEN_CONNECT":
                return self._open_connect(request)
            if op == "GET_KEY":
                return await self._get_key(request)
            if op == "CLOSE":
                return self._close(request)
            if op == "HEALTH":
                return self._health(request)
            if op == "FAULT":
                return self._fault(request)
            raise BadRequest(
                f"unknown op {op!r}; expected OPEN_CONNECT, GET_KEY, CLOSE, HEALTH or FAULT"
            )
        except Refusal as refusal:
            return refusal.response()
        except Exception:
            # A bug must not take the device down: answer, log, and keep serving.
            log.exception("end %s failed on a request", self.end)
            return {
                "status": int(Status.BAD_REQUEST),
                "reason": "internal_error",
                "message": "the device failed on this request; see its log",
            }

    # -- ops -----------------------------------------------------------------------------------

    def _open_connect(self, request: dict[str, Any]) -> dict[str, Any]:
        _fields(request, "OPEN_CONNECT", {"source", "destination", "qos", "key_stream_ID"})
        source = _text(request.get("source"), "source")
        destination = _text(request.get("destination"), "destination")
        qos = _qos(request.get("qos"))
        ksid = request.get("key_stream_ID")
        if ksid is not None:
            ksid = _text(ksid, "key_stream_ID")
        status, stream = self._link.open(
            self.end, ksid=ksid, source=source, destination=destination, qos=qos
        )
        log.info(
            "end %s opened key stream %s (%s -> %s), status %d",
            self.end,
            stream.ksid,
            source,
            destination,
            status,
        )
        return {"status": int(status), "key_stream_ID": stream.ksid, "qos": stream.qos.to_json()}

    async def _get_key(self, request: dict[str, Any]) -> dict[str, Any]:
        _fields(request, "GET_KEY", {"key_stream_ID", "index", "metadata_size"})
        ksid = _text(request.get("key_stream_ID"), "key_stream_ID")
        index: int | None = None
        if request.get("index") is not None:
            index = _integer(request["index"], "index", high=MAX_INDEX)
        metadata_size: int | None = None
        if request.get("metadata_size") is not None:
            metadata_size = _integer(request["metadata_size"], "metadata_size")

        stream = self._link.stream_at(self.end, ksid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stream.qos.timeout / 1000
        while True:
            # The stream may be closed, aborted or cut while we wait: look again each round.
            stream = self._link.stream_at(self.end, ksid)
            oldest, end = self._link.window(self.end, stream)
            wanted = stream.cursor[self.end] if index is None else index
            if wanted < oldest:
                raise Refusal(
                    Status.INSUFFICIENT_KEY,
                    "expired",
                    f"chunk {wanted} is no longer held; the oldest is {oldest}",
                    oldest_index=oldest,
                    next_index=end,
                )
            if wanted < end:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Refusal(
                    Status.TIMEOUT if stream.qos.timeout else Status.INSUFFICIENT_KEY,
                    "timeout" if stream.qos.timeout else "not_yet",
                    f"chunk {wanted} has not been generated yet; {end} chunks exist",
                    oldest_index=oldest,
                    next_index=end,
                )
            eta = self._link.seconds_until(stream, wanted)
            await asyncio.sleep(min(remaining, 0.25 if eta is None else max(eta, 0.001)))

        metadata = self._metadata(stream)
        encoded = json.dumps(metadata, separators=(",", ":"))
        if metadata_size is not None and len(encoded) > metadata_size:
            raise Refusal(
                Status.METADATA_SIZE_INSUFFICIENT,
                "metadata_too_large",
                f"the metadata needs {len(encoded)} bytes, metadata_size is {metadata_size}",
                metadata_size=len(encoded),
            )
        material = self._keys.chunk(ksid=ksid, index=wanted, size=stream.qos.key_chunk_size)
        stream.cursor[self.end] = max(stream.cursor[self.end], wanted + 1)
        return {
            "status": int(Status.SUCCESS),
            "index": wanted,
            "key_buffer": base64.b64encode(material).decode(),
            "metadata": metadata,
        }

    def _close(self, request: dict[str, Any]) -> dict[str, Any]:
        _fields(request, "CLOSE", {"key_stream_ID"})
        ksid = _text(request.get("key_stream_ID"), "key_stream_ID")
        self._link.close(self.end, ksid)
        if not self._link.has_stream(ksid):
            self._keys.forget(ksid)
        log.info("end %s closed key stream %s", self.end, ksid)
        return {"status": int(Status.SUCCESS)}

    def _health(self, request: dict[str, Any]) -> dict[str, Any]:
        _fields(request, "HEALTH", set())
        return {"status": int(Status.SUCCESS), "healthy": self._link.healthy, **self._state()}

    def _fault(self, request: dict[str, Any]) -> dict[str, Any]:
        _fields(request, "FAULT", {"link_down", "rate_bps", "qber"})
        link_down = request.get("link_down")
        if link_down is not None and not isinstance(link_down, bool):
            raise BadRequest("link_down must be true or false")
        rate = request.get("rate_bps")
        if rate is not None:
            rate = _integer(rate, "rate_bps")
        qber = request.get("qber")
        if qber is not None and (
            isinstance(qber, bool)
            or not isinstance(qber, int | float)
            or not math.isfinite(qber)
            or not 0 <= qber <= 0.5
        ):
            raise BadRequest("qber must be a number from 0 to 0.5")
        self._link.set_faults(
            link_down=link_down, rate_bps=rate, qber=None if qber is None else float(qber)
        )
        log.warning(
            "fault set through end %s: link %s, rate %d bits/s, QBER %.3f",
            self.end,
            "up" if self._link.link_up else "down",
            self._link.rate_bps,
            self._link.qber,
        )
        return {"status": int(Status.SUCCESS), **self._state()}

    # -- helpers -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        link = self._link
        return {
            "end": self.end,
            "link_up": link.link_up,
            "rate_bps": link.rate_bps,
            "qber": link.qber,
            "qber_threshold": link.qber_threshold,
            "streams": [
                {
                    "key_stream_ID": s.ksid,
                    "rate_bps": round(link.stream_rate(s)),
                    "peer_connected": len(s.ends) == 2,
                    "aborted": s.aborted is not None,
                }
                # Bounded, so the answer stays one short line (the health probe reads 64 KiB).
                for s in link.streams_at(self.end)[:100]
            ],
        }

    def _metadata(self, stream: Stream) -> dict[str, Any]:
        return {
            "qber": self._link.qber,
            "rate_bps": round(self._link.stream_rate(stream)),
        }
