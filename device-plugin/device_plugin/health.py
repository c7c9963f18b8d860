"""Health probes: is one device usable right now?

:class:`~device_plugin.inventory.Inventory` probes every device on each health round. Probes never
raise: any failure to reach or understand the device means unhealthy, and the next round may find
it healthy again (health recovers without a restart).

- A simulated QKD device (``device_plugin.simdevice``) listens on a Unix socket and speaks
  newline-delimited JSON. The probe connects, sends ``{"op": "HEALTH"}`` and a newline, reads one
  line and calls the device healthy iff that line is a JSON object with ``"healthy": true``.
- A hardware device is healthy when its device node exists and opens. A node that is busy (the
  QKDM holds it exclusively) is in use, not broken, so it counts as healthy.
"""

import asyncio
import contextlib
import errno
import json
import os
import stat
from pathlib import Path

from device_plugin.config import DeviceKind
from device_plugin.discovery import Device, local_path

HEALTH_REQUEST = b'{"op": "HEALTH"}\n'
# Longest health answer we read; the device's answer is a short JSON object.
MAX_ANSWER = 64 * 1024


async def probe(device: Device, *, host_root: Path, within: float) -> bool:
    """Whether ``device`` is healthy; a simulated device must answer ``within`` seconds."""
    path = local_path(device.path, host_root=host_root)
    if device.kind is DeviceKind.SIMULATED:
        return await probe_simulated(path, within=within)
    return probe_hardware(path)


async def probe_simulated(socket_path: Path, *, within: float) -> bool:
    """Ask the simulated device on ``socket_path`` whether it is healthy."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(socket_path, limit=MAX_ANSWER)
            try:
                writer.write(HEALTH_REQUEST)
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError):
        # ValueError: the answer was longer than MAX_ANSWER without a newline.
        return False
    try:
        answer = json.loads(line)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("healthy") is True


def probe_hardware(node: Path) -> bool:
    """Whether the device node exists and opens (non-blocking, without becoming our tty)."""
    try:
        fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno == errno.EBUSY
    try:
        # A directory opens too, but is no device.
        return not stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
