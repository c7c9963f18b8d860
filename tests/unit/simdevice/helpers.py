"""Helpers for the simulated-device tests: a pair served in the test's loop on real sockets."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_plugin.simdevice.main import build_servers
from device_plugin.simdevice.settings import SimSettings
from qss_api.qkd004 import decode_reply
from qss_api.qkd004_client import DeviceClient

SECRET = b"kube-qss test pair secret, 32 b!"

Response = dict[str, Any]


class RawDevice:
    """The device protocol's one client (``qss_api.qkd004_client``) seen as JSON objects, so
    that tests can send anything, well-formed or not, and look at every field of the reply.
    Each reply to a known op is also checked to be a valid reply of the protocol."""

    def __init__(self, client: DeviceClient) -> None:
        self.client = client

    @classmethod
    async def connect(cls, path: Path | str) -> RawDevice:
        client = DeviceClient(path=path)
        await client.connect()
        return cls(client)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> RawDevice:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send_raw(self, line: bytes) -> Response:
        """Send ``line`` as it is (it must end in a newline) and read one response."""
        return _parsed(await self.client.exchange_raw(line), op=None)

    async def request(self, payload: Mapping[str, Any]) -> Response:
        return (await self.pipeline([payload]))[0]

    async def pipeline(self, payloads: Sequence[Mapping[str, Any]]) -> list[Response]:
        """Send all requests, then read all responses (in the same order)."""
        data = b"".join(json.dumps(p).encode() + b"\n" for p in payloads)
        lines = (await self.client.exchange_raw(data, replies=len(payloads))).splitlines()
        return [_parsed(line, op=p.get("op")) for line, p in zip(lines, payloads, strict=True)]

    async def open_connect(
        self,
        *,
        source: str = "qkdm-a",
        destination: str = "qkdm-b",
        qos: Mapping[str, int] | None = None,
        key_stream_id: str | None = None,
    ) -> Response:
        payload: dict[str, Any] = {
            "op": "OPEN_CONNECT",
            "source": source,
            "destination": destination,
        }
        if qos is not None:
            payload["qos"] = dict(qos)
        if key_stream_id is not None:
            payload["key_stream_ID"] = key_stream_id
        return await self.request(payload)

    async def get_key(
        self,
        *,
        key_stream_id: str,
        index: int | None = None,
        count: int | None = None,
        metadata_size: int | None = None,
    ) -> Response:
        payload: dict[str, Any] = {"op": "GET_KEY", "key_stream_ID": key_stream_id}
        for name, value in (("index", index), ("count", count), ("metadata_size", metadata_size)):
            if value is not None:
                payload[name] = value
        return await self.request(payload)

    async def close_stream(self, *, key_stream_id: str) -> Response:
        return await self.request({"op": "CLOSE", "key_stream_ID": key_stream_id})

    async def health(self) -> Response:
        return await self.request({"op": "HEALTH"})

    async def fault(self, **faults: Any) -> Response:
        return await self.request({"op": "FAULT", **faults})


def _parsed(line: bytes, *, op: object) -> Response:
    response = json.loads(line)
    assert isinstance(response, dict), line
    if isinstance(op, str) and op in ("OPEN_CONNECT", "GET_KEY", "CLOSE", "HEALTH", "FAULT"):
        decode_reply(op, line)  # a reply the protocol defines, whatever the request was
    return response


class FakeClock:
    """The link's clock, moved by the test: key generation becomes exact, not timing-bound."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Pair:
    a: RawDevice
    b: RawDevice
    socket_a: Path
    socket_b: Path

    async def open_both(self, **qos: int) -> str:
        """Open one stream at both ends; returns its KSID."""
        first = await self.a.open_connect(qos=qos or None)
        assert first["status"] == 1, first
        ksid: str = first["key_stream_ID"]
        second = await self.b.open_connect(
            source="qkdm-b", destination="qkdm-a", qos=qos or None, key_stream_id=ksid
        )
        assert second["status"] == 0, second
        return ksid


def key_bytes(response: dict[str, Any]) -> bytes:
    assert response["status"] == 0, response
    return base64.b64decode(response["key_buffer"])


@asynccontextmanager
async def running_pair(
    *,
    rate_bps: int = 1_280_000,
    clock: Callable[[], float] | None = None,
    buffer_bits: int = 8 * 1024 * 1024,
    qber_threshold: float = 0.11,
) -> AsyncIterator[Pair]:
    directory = Path(tempfile.mkdtemp(dir="/tmp"))
    settings = SimSettings(
        socket_a=directory / "a.sock",
        socket_b=directory / "b.sock",
        rate_bps=rate_bps,
        secret=SECRET,
        buffer_bits=buffer_bits,
        qber_threshold=qber_threshold,
    )
    servers = build_servers(settings, clock=clock)
    try:
        for server in servers:
            await server.start()
        a = await RawDevice.connect(settings.socket_a)
        b = await RawDevice.connect(settings.socket_b)
        try:
            yield Pair(a=a, b=b, socket_a=settings.socket_a, socket_b=settings.socket_b)
        finally:
            await a.aclose()
            await b.aclose()
    finally:
        for server in servers:
            await server.aclose()
        shutil.rmtree(directory, ignore_errors=True)
