"""Health probes: is one device usable right now?

:class:`~device_plugin.inventory.Inventory` probes every device on each health round. Probes never
raise: any failure to reach or understand the device means unhealthy, and the next round may find
it healthy again (health recovers without a restart).

- A simulated QKD device (``device_plugin.simdevice``) listens on a Unix socket and speaks the
  device protocol (``qss_api.qkd004``). The probe asks HEALTH with the protocol's one client and
  calls the device healthy iff the reply is a valid HEALTH reply saying ``healthy``.
- A hardware device is healthy when its device node exists and opens. A node that is busy (the
  QKDM holds it exclusively) is in use, not broken, so it counts as healthy.
"""

import errno
import os
import stat
from pathlib import Path

from device_plugin.config import DeviceKind
from device_plugin.discovery import Device, local_path
from qss_api.qkd004_client import DeviceClient, DeviceError


async def probe(device: Device, *, host_root: Path, within: float) -> bool:
    """Whether ``device`` is healthy; a simulated device must answer ``within`` seconds."""
    path = local_path(device.path, host_root=host_root)
    if device.kind is DeviceKind.SIMULATED:
        return await probe_simulated(path, within=within)
    return probe_hardware(path)


async def probe_simulated(socket_path: Path, *, within: float) -> bool:
    """Ask the simulated device on ``socket_path`` whether it is healthy."""
    try:
        async with DeviceClient(path=socket_path, timeout=within) as client:
            return (await client.health()).healthy
    except DeviceError:
        return False


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
