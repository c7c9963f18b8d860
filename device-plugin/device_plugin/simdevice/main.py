"""``qss-qkd-sim``: run a simulated QKD device pair as its own process.

``qss-qkd-sim pair --socket-a A.sock --socket-b B.sock --rate-bps N [--secret-file F]`` hosts
both ends in one asyncio loop, one Unix socket each (so each end knows whether its peer opened a
stream without a separate control channel). Stops cleanly on SIGTERM or SIGINT, removing its
sockets. A malformed invocation prints one error line and exits 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence

from device_plugin.simdevice.keymaterial import KeyMaterial
from device_plugin.simdevice.link import Link
from device_plugin.simdevice.protocol import Device
from device_plugin.simdevice.server import EndServer, SocketInUseError
from device_plugin.simdevice.settings import PROG, SimSettings, UsageError, parse_args
from qss_api.process import configure_logging, stop_on_signals

log = logging.getLogger("device_plugin.simdevice")


def build_servers(
    settings: SimSettings, *, clock: Callable[[], float] | None = None
) -> tuple[EndServer, EndServer]:
    """The two ends of one pair, sharing one link; not started yet. Tests pass ``clock``."""
    if settings.secret is None:
        log.warning("no pair secret given: using a random one, no other process will match it")
    keys = KeyMaterial(secret=settings.secret or secrets.token_bytes(32))
    link = Link(
        rate_bps=settings.rate_bps,
        qber=settings.qber,
        qber_threshold=settings.qber_threshold,
        buffer_bits=settings.buffer_bits,
        clock=clock or time.monotonic,
    )
    return (
        EndServer(path=settings.socket_a, device=Device(end="A", link=link, keys=keys)),
        EndServer(path=settings.socket_b, device=Device(end="B", link=link, keys=keys)),
    )


async def run(settings: SimSettings) -> None:
    servers = build_servers(settings)
    stop = stop_on_signals()
    try:
        for server in servers:
            await server.start()
        log.info(
            "device pair ready: end A on %s, end B on %s, %d bits/s",
            settings.socket_a,
            settings.socket_b,
            settings.rate_bps,
        )
        await stop.wait()
    finally:
        for server in servers:
            await server.aclose()
    log.info("device pair stopped")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv, environ=os.environ)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(run(settings))
    except SocketInUseError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0
