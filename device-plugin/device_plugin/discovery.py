"""Which devices exist right now: the configured ones plus the device nodes that match a pattern.

:class:`~device_plugin.inventory.Inventory` calls :func:`discover` on every health round, so a
device node that appears or disappears is picked up without a restart. Paths in the configuration
are host paths; the plugin looks them up under an injectable ``host_root`` (``/`` in the
DaemonSet, a temporary directory in tests), while the kubelet is always given the host path.
"""

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from device_plugin.config import DEVICE_ID_PATTERN, DeviceConfig, DeviceKind

logger = logging.getLogger(__name__)

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, kw_only=True)
class Device:
    """A device the plugin offers: its kubelet ID, kind, host path and the link it serves."""

    id: str
    kind: DeviceKind
    path: str
    link: str


def local_path(host_path: str, *, host_root: Path) -> Path:
    """Where the plugin itself finds ``host_path`` (an absolute host path) under ``host_root``."""
    return host_root / host_path.lstrip("/")


def discover(config: DeviceConfig, *, host_root: Path) -> list[Device]:
    """The configured devices, then every pattern match not already configured, sorted by ID.

    A configured device is always listed (its health says whether it is there); a matched file
    whose derived ID or path is already taken is skipped, since the configured entry is the more
    specific statement about it.
    """
    devices = {
        entry.id: Device(id=entry.id, kind=entry.kind, path=entry.path, link=entry.link)
        for entry in config.devices
    }
    taken_paths = {d.path for d in devices.values()}
    for rule in config.discover:
        for host_path in _matches(rule.pattern, host_root=host_root):
            device_id = _id_from_path(host_path)
            if host_path in taken_paths or device_id is None:
                continue
            if device_id in devices:
                logger.debug("skipping %s: device ID %s is already in use", host_path, device_id)
                continue
            devices[device_id] = Device(
                id=device_id, kind=rule.kind, path=host_path, link=rule.link
            )
            taken_paths.add(host_path)
    return [devices[k] for k in sorted(devices)]


def _matches(pattern: str, *, host_root: Path) -> list[str]:
    """Host paths of the non-directory files matching ``pattern`` under ``host_root``."""
    root = str(host_root).rstrip("/")
    found = []
    # Escape the root so only the configured pattern is a pattern, whatever the root is called.
    for match in sorted(glob.glob(glob.escape(root) + "/" + pattern.lstrip("/"))):
        if Path(match).is_dir():
            continue
        found.append("/" + match[len(root) :].lstrip("/"))
    return found


def _id_from_path(host_path: str) -> str | None:
    """The device ID for a discovered file: its name, with unsafe characters replaced."""
    candidate = _UNSAFE_ID_CHARS.sub("-", Path(host_path).name)[:63]
    return candidate if DEVICE_ID_PATTERN.fullmatch(candidate) else None
