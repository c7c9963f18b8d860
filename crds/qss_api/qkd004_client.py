"""The one client of the QKD device interface (``qss_api.qkd004``) over a device's Unix socket.

Used by the QKDM (``controllers.qkdm``: OPEN_CONNECT, GET_KEY runs, CLOSE), the device plugin's
health probe (HEALTH), and the tests, benchmarks and demo (FAULT too). Every reply is read with
``qkd004.decode_reply`` before anyone looks at it. Failures are one of:

- ``DeviceUnavailable``: the socket cannot be reached, closed, or did not answer in time;
- ``DeviceProtocolError``: the device answered something that is not a reply of the protocol;
- ``DeviceRefusal``: a valid reply with a non-zero status (``refusal`` holds it; key material
  never appears in a refusal or in any message here).

One connection; requests are serialised (one exchange at a time); an exchange cancelled
before its reply was read closes the connection (the next one reconnects). ``request_sync`` serves
synchronous callers (the test harness) with the same messages and checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qss_api.qkd004 import (
    MAX_REPLY_LINE,
    Close,
    Closed,
    DeviceState,
    Fault,
    GetKey,
    Health,
    Keys,
    OpenConnect,
    Opened,
    QoS,
    Refusal,
    Reply,
    Request,
    Status,
    decode_reply,
    encode,
)
from qss_api.wire import BadMessage

R = TypeVar("R", Opened, Keys, Closed, DeviceState)


class DeviceError(Exception):
    """Base of everything the device client raises; messages never carry key material."""


class DeviceUnavailable(DeviceError):
    """The device's socket cannot be reached, closed the connection, or did not answer."""


class DeviceProtocolError(DeviceError):
    """The device answered something that is not a valid reply."""


class DeviceRefusal(DeviceError):
    """The device answered with a non-zero status."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"device status {refusal.status} ({refusal.reason}): {refusal.message}")
        self.refusal = refusal

    @property
    def status(self) -> int:
        return self.refusal.status

    @property
    def reason(self) -> str:
        return self.refusal.reason


def _typed(reply: Reply, expected: type[R], path: str) -> R:
    if isinstance(reply, Refusal):
        raise DeviceRefusal(reply)
    if not isinstance(reply, expected):  # decode_reply already chose by op; a bug otherwise
        raise DeviceProtocolError(f"QKD device at {path} sent a {type(reply).__name__} reply")
    return reply


@dataclass
class DeviceClient:
    """One connection to one device end."""

    path: str | Path
    timeout: float = 10.0  # for connecting and for each reply
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=MAX_REPLY_LINE),
                self.timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise DeviceUnavailable(f"cannot reach the QKD device at {self.path}: {exc}") from None

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def __aenter__(self) -> DeviceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def exchange(self, request: Request) -> Reply:
        """Send one request, read its reply (a ``Refusal`` is returned, not raised)."""
        line = await self.exchange_raw(encode(request))
        try:
            return decode_reply(request.op, line)
        except BadMessage as exc:
            raise DeviceProtocolError(f"QKD device at {self.path} sent {exc.message}") from None

    async def exchange_raw(self, data: bytes, *, replies: int = 1) -> bytes:
        """Send ``data`` as it is and read ``replies`` reply lines, unread (tests use it to
        send what no well-behaved client would)."""
        async with self._lock:
            if self._writer is None or self._reader is None:
                await self.connect()
            assert self._writer is not None
            assert self._reader is not None
            lines = b""
            try:
                self._writer.write(data)
                await self._writer.drain()
                for _ in range(replies):
                    line = await asyncio.wait_for(self._reader.readline(), self.timeout)
                    if not line:
                        raise ConnectionResetError("the device closed the connection")
                    lines += line
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                await self.aclose()
                raise DeviceUnavailable(f"QKD device at {self.path} failed: {exc!r}") from None
            except asyncio.CancelledError:
                # Cancelled with its reply unread (the QKDM drops GET_KEYs it fetched ahead):
                # the next exchange would read that reply as its own, so the connection goes.
                self._writer.close()
                self._writer = self._reader = None
                raise
        return lines

    async def open_connect(
        self, *, ksid: str | None, source: str, destination: str, qos: QoS | None = None
    ) -> Opened:
        """OPEN_CONNECT: an ``Opened`` with status 0 or 1 (peer not connected), else raises."""
        request = OpenConnect(source=source, destination=destination, qos=qos, key_stream_ID=ksid)
        return _typed(await self.exchange(request), Opened, str(self.path))

    async def get_keys(self, *, ksid: str, index: int | None = None, count: int = 1) -> Keys:
        """GET_KEY of up to ``count`` consecutive chunks from ``index``; raises on refusal."""
        request = GetKey(key_stream_ID=ksid, index=index, count=count if count != 1 else None)
        return _typed(await self.exchange(request), Keys, str(self.path))

    async def close_stream(self, *, ksid: str) -> None:
        _typed(await self.exchange(Close(key_stream_ID=ksid)), Closed, str(self.path))

    async def health(self) -> DeviceState:
        return _typed(await self.exchange(Health()), DeviceState, str(self.path))

    async def fault(self, **faults: Any) -> DeviceState:
        """The simulated device's FAULT: ``link_down``, ``rate_bps``, ``qber``."""
        return _typed(await self.exchange(Fault(**faults)), DeviceState, str(self.path))


def request_sync(path: str | Path, request: Request, *, timeout: float = 10.0) -> Reply:
    """One request on a fresh connection, for synchronous callers; a ``Refusal`` is returned.
    Raises ``DeviceUnavailable`` or ``DeviceProtocolError`` as the client does."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(encode(request))
            line = b""
            while not line.endswith(b"\n") and len(line) <= MAX_REPLY_LINE:
                part = sock.recv(65536)
                if not part:
                    break
                line += part
    except OSError as exc:
        raise DeviceUnavailable(f"QKD device at {path} failed: {exc!r}") from None
    try:
        return decode_reply(request.op, line)
    except BadMessage as exc:
        raise DeviceProtocolError(f"QKD device at {path} sent {exc.message}") from None


__all__ = [
    "DeviceClient",
    "DeviceError",
    "DeviceProtocolError",
    "DeviceRefusal",
    "DeviceUnavailable",
    "Status",
    "request_sync",
]
