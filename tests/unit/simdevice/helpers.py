"""Helpers for the simulated-device tests: a pair served in the test's loop on real sockets."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_plugin.simdevice.client import DeviceClient
from device_plugin.simdevice.main import build_servers
from device_plugin.simdevice.settings import SimSettings

SECRET = b"kube-qss test pair secret, 32 b!"


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
    a: DeviceClient
    b: DeviceClient
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
        a = await DeviceClient.connect(settings.socket_a)
        b = await DeviceClient.connect(settings.socket_b)
        try:
            yield Pair(a=a, b=b, socket_a=settings.socket_a, socket_b=settings.socket_b)
        finally:
            await a.aclose()
            await b.aclose()
    finally:
        for server in servers:
            await server.aclose()
        shutil.rmtree(directory, ignore_errors=True)
