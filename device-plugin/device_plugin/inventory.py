"""The plugin's current view of its devices and their health, and the loop that keeps it fresh.

``main`` creates one :class:`Inventory` and runs :meth:`Inventory.run` for the life of the process
(it outlives gRPC server restarts and re-registrations). Each resource's servicer reads its
:class:`LinkView` (the devices of one link) to answer Allocate and GetPreferredAllocation and
waits on :meth:`LinkView.wait_changed` to stream ListAndWatch updates.

The snapshot is an immutable mapping replaced whole on each change, so a reader on the event loop
always sees one consistent round; no lock is needed (the kubelet's Go plugins need one because
their handlers run on threads; ours all run on one event loop).
"""

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from device_plugin.config import DeviceConfig
from device_plugin.discovery import Device, discover
from device_plugin.health import probe

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeviceState:
    """A device and whether it was healthy at the last health round."""

    device: Device
    healthy: bool


class Inventory:
    """Devices by ID with their health; :meth:`refresh` rediscovers and probes them all."""

    def __init__(self, *, config: DeviceConfig, host_root: Path, probe_timeout: float) -> None:
        self._config = config
        self._host_root = host_root
        self._probe_timeout = probe_timeout
        self._snapshot: Mapping[str, DeviceState] = MappingProxyType({})
        # Bumped on every change; waiters compare it with the version they last saw.
        self._version = 0
        self._changed = asyncio.Condition()
        self._refreshed = False

    @property
    def snapshot(self) -> Mapping[str, DeviceState]:
        """The devices by ID as of the last health round (read-only)."""
        return self._snapshot

    @property
    def version(self) -> int:
        """Counts the changes so far; 0 before the first health round."""
        return self._version

    @property
    def ready(self) -> bool:
        """Whether at least one health round has completed."""
        return self._refreshed

    async def refresh(self) -> bool:
        """Rediscover and probe every device; return whether anything changed."""
        devices = discover(self._config, host_root=self._host_root)
        results = await asyncio.gather(
            *(
                probe(device, host_root=self._host_root, within=self._probe_timeout)
                for device in devices
            )
        )
        new = {
            device.id: DeviceState(device=device, healthy=healthy)
            for device, healthy in zip(devices, results, strict=True)
        }
        self._refreshed = True
        if new == dict(self._snapshot):
            return False
        self._log_changes(new)
        self._snapshot = MappingProxyType(new)
        async with self._changed:
            self._version += 1
            self._changed.notify_all()
        return True

    async def wait_changed(self, seen_version: int) -> int:
        """Wait until the inventory has a version other than ``seen_version``; return it."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._version != seen_version)
            return self._version

    async def run(self, *, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                # Health must keep flowing: one bad round (say, an unreadable directory under a
                # discovery pattern) is logged and the next round tries again.
                logger.exception("health round failed; keeping the previous device list")

    def _log_changes(self, new: Mapping[str, DeviceState]) -> None:
        old = self._snapshot
        for device_id in sorted(old.keys() - new.keys()):
            logger.info("device %s is gone", device_id)
        for device_id, state in sorted(new.items()):
            before = old.get(device_id)
            health = "healthy" if state.healthy else "unhealthy"
            if before is None:
                logger.info(
                    "device %s (%s, %s) found, %s",
                    device_id,
                    state.device.kind,
                    state.device.path,
                    health,
                )
            elif before.healthy != state.healthy:
                logger.info("device %s turned %s", device_id, health)


class DeviceSource(Protocol):
    """What a servicer reads: devices by ID with their health, and a way to wait for changes."""

    @property
    def snapshot(self) -> Mapping[str, DeviceState]: ...

    async def wait_changed(self, seen_version: int) -> int: ...


class LinkView:
    """The devices of one link (one resource), as a :class:`DeviceSource` over the inventory.

    Changes of other links wake its waiters too; ListAndWatch sends only when its own list
    differs, so they cost a comparison and nothing on the wire."""

    def __init__(self, inventory: Inventory, link: str) -> None:
        self._inventory = inventory
        self.link = link

    @property
    def snapshot(self) -> Mapping[str, DeviceState]:
        return MappingProxyType(
            {k: v for k, v in self._inventory.snapshot.items() if v.device.link == self.link}
        )

    async def wait_changed(self, seen_version: int) -> int:
        return await self._inventory.wait_changed(seen_version)
