"""Client side of the QKD device interface (ETSI GS QKD 004 style) over the device's socket.

The device speaks newline-delimited JSON (one request, one response per line; every request has
``op``). ``DeviceClient`` sends OPEN_CONNECT, GET_KEY and CLOSE and turns non-zero statuses into
``DeviceRefusal`` carrying the 004 status code and the device's reason word. Used by the pump.
A device that answers something other than a JSON object is a ``DeviceProtocolError``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

# One response line may carry a large chunk in base64; stay well above it.
_LINE_LIMIT = 1 << 20


class Status(IntEnum):
    """ETSI GS QKD 004 status codes."""

    SUCCESS = 0
    PEER_NOT_CONNECTED = 1
    INSUFFICIENT_KEY = 2
    GET_KEY_PEER_NOT_CONNECTED = 3
    NO_QKD_CONNECTION = 4
    KSID_IN_USE = 5
    TIMEOUT = 6
    QOS_NOT_MET = 7
    METADATA_TOO_SMALL = 8


class DeviceError(Exception):
    """Base of everything the device client raises; messages never carry key material."""


class DeviceUnavailable(DeviceError):
    """The device's socket cannot be reached, or it closed the connection."""


class DeviceProtocolError(DeviceError):
    """The device answered something that is not a valid response."""


class DeviceRefusal(DeviceError):
    """The device answered with a non-zero 004 status."""

    def __init__(self, status: int, reason: str, message: str, reply: dict[str, Any]) -> None:
        super().__init__(f"device status {status} ({reason}): {message}")
        self.status = status
        self.reason = reason
        self.reply = {k: v for k, v in reply.items() if k != "key_buffer"}


@dataclass(frozen=True)
class KeyChunk:
    index: int
    material: bytes = field(repr=False)


@dataclass
class DeviceClient:
    """One connection to one device end. Requests are serialised: one in flight at a time."""

    path: str
    timeout: float = 10.0
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=_LINE_LIMIT), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"cannot reach the QKD device at {self.path}: {exc}") from None

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None

    async def _exchange(self, requests: list[dict[str, Any]]) -> list[bytes]:
        """Write ``requests`` at once and read one answer line for each, in order."""
        payload = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
        async with self._lock:
            if self._writer is None or self._reader is None:
                await self.connect()
            assert self._writer is not None
            assert self._reader is not None
            lines: list[bytes] = []
            try:
                self._writer.write(payload)
                await self._writer.drain()
                for _ in requests:
                    line = await asyncio.wait_for(self._reader.readline(), self.timeout)
                    if not line:
                        raise ConnectionResetError("the device closed the connection")
                    lines.append(line)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                await self.aclose()
                raise DeviceUnavailable(f"QKD device at {self.path} failed: {exc!r}") from None
        return lines

    def _parse(self, line: bytes) -> dict[str, Any]:
        """One answer line as a reply with a status, or ``DeviceProtocolError``."""
        try:
            reply = json.loads(line)
        except ValueError:
            raise DeviceProtocolError(f"QKD device at {self.path} sent a non-JSON line") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("status"), int):
            raise DeviceProtocolError(f"QKD device at {self.path} sent a reply without a status")
        return reply

    @staticmethod
    def _refusal(reply: dict[str, Any]) -> DeviceRefusal | None:
        if reply["status"] == Status.SUCCESS:
            return None
        return DeviceRefusal(
            reply["status"], str(reply.get("reason", "")), str(reply.get("message", "")), reply
        )

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; return the response when its status is 0, else raise."""
        (line,) = await self._exchange([{"op": op, **fields}])
        reply = self._parse(line)
        refusal = self._refusal(reply)
        if refusal is not None:
            raise refusal
        return reply

    async def open_connect(
        self, *, ksid: str, source: str, destination: str, qos: dict[str, int]
    ) -> Status:
        """OPEN_CONNECT; SUCCESS or PEER_NOT_CONNECTED (the stream is open at this end)."""
        try:
            await self.request(
                "OPEN_CONNECT", key_stream_ID=ksid, source=source, destination=destination, qos=qos
            )
        except DeviceRefusal as refusal:
            if refusal.status == Status.PEER_NOT_CONNECTED:
                return Status.PEER_NOT_CONNECTED
            raise
        return Status.SUCCESS

    async def get_keys(
        self, *, ksid: str, first: int, count: int
    ) -> tuple[list[KeyChunk], DeviceRefusal | None]:
        """GET_KEY for indices ``first .. first+count-1``, pipelined: all requests are written
        at once and the answers read in order. Returns the chunks up to the first refusal, and
        that refusal (None when all ``count`` came)."""
        lines = await self._exchange(
            [
                {"op": "GET_KEY", "key_stream_ID": ksid, "index": i}
                for i in range(first, first + count)
            ]
        )
        chunks: list[KeyChunk] = []
        for index, line in enumerate(lines, first):
            reply = self._parse(line)
            refusal = self._refusal(reply)
            if refusal is not None:
                return chunks, refusal
            chunks.append(self._chunk(reply, index))
        return chunks, None

    def _chunk(self, reply: dict[str, Any], index: int) -> KeyChunk:
        try:
            material = base64.b64decode(reply["key_buffer"], validate=True)
            got = int(reply["index"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise DeviceProtocolError(
                f"QKD device at {self.path} sent a GET_KEY reply without a valid key buffer"
            ) from None
        if got != index:
            raise DeviceProtocolError(
                f"QKD device at {self.path} answered index {got} for index {index}"
            )
        return KeyChunk(index=got, material=material)

    async def close_stream(self, *, ksid: str) -> None:
        await self.request("CLOSE", key_stream_ID=ksid)
