"""The DevicePlugin gRPC service: what the kubelet calls on the plugin's socket.

:mod:`device_plugin.lifecycle` adds one :class:`DevicePluginServicer` per resource to each gRPC
server it starts. The servicer is a thin adapter: it reads the devices of its resource (a
:class:`~device_plugin.inventory.LinkView` of the inventory), calls the pure functions of
:mod:`device_plugin.allocation` and converts to and from protobuf.

- ListAndWatch sends the full list at once, then again only when the list (IDs or health) differs
  from what this stream last sent.
- Allocate rejects unknown IDs with INVALID_ARGUMENT and unhealthy ones with FAILED_PRECONDITION.
"""

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from device_plugin.allocation import (
    ENV_DEVICE_IDS,
    AllocationError,
    ContainerAllocation,
    UnknownDeviceError,
    allocate_container,
    preferred_allocation,
)
from device_plugin.api import HEALTHY, UNHEALTHY, pb
from device_plugin.inventory import DeviceSource
from device_plugin.metrics import Counters

logger = logging.getLogger(__name__)

# The options we register with and answer GetDevicePluginOptions with: no PreStartContainer
# needed (QKD devices need no reset), GetPreferredAllocation available.
PRE_START_REQUIRED = False
GET_PREFERRED_ALLOCATION_AVAILABLE = True


def plugin_options() -> Any:
    """The DevicePluginOptions message, shared by Register and GetDevicePluginOptions."""
    return pb.DevicePluginOptions(
        pre_start_required=PRE_START_REQUIRED,
        get_preferred_allocation_available=GET_PREFERRED_ALLOCATION_AVAILABLE,
    )


class DevicePluginServicer:
    """Implements v1beta1.DevicePlugin over the devices of one resource."""

    def __init__(self, *, inventory: DeviceSource, counters: Counters) -> None:
        self._inventory = inventory
        self._counters = counters

    async def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:
        return plugin_options()

    async def ListAndWatch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        last_sent: list[tuple[str, str]] | None = None
        seen = -1  # no version is -1, so the first wait returns at once
        while True:
            seen = await self._inventory.wait_changed(seen)
            devices = [
                (device_id, HEALTHY if state.healthy else UNHEALTHY)
                for device_id, state in sorted(self._inventory.snapshot.items())
            ]
            if devices == last_sent:
                continue
            last_sent = devices
            logger.debug("ListAndWatch: sending %d devices", len(devices))
            yield pb.ListAndWatchResponse(
                devices=[pb.Device(ID=device_id, health=health) for device_id, health in devices]
            )

    async def GetPreferredAllocation(self, request: Any, context: Any) -> Any:
        snapshot = self._inventory.snapshot
        return pb.PreferredAllocationResponse(
            container_responses=[
                pb.ContainerPreferredAllocationResponse(
                    deviceIDs=preferred_allocation(
                        available=list(container.available_deviceIDs),
                        must_include=list(container.must_include_deviceIDs),
                        size=container.allocation_size,
                        snapshot=snapshot,
                    )
                )
                for container in request.container_requests
            ]
        )

    async def Allocate(self, request: Any, context: Any) -> Any:
        snapshot = self._inventory.snapshot
        try:
            allocations = [
                allocate_container(list(container.devices_ids), snapshot)
                for container in request.container_requests
            ]
        except AllocationError as exc:
            self._counters.allocation_errors += 1
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if isinstance(exc, UnknownDeviceError)
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            logger.warning("Allocate refused: %s", exc)
            await context.abort(code, str(exc))
            raise  # context.abort raises; this line only tells readers the handler ends here
        self._counters.allocations += len(allocations)
        for allocation in allocations:
            logger.info("allocated %s", allocation.envs[ENV_DEVICE_IDS])
        return pb.AllocateResponse(container_responses=[_to_proto(a) for a in allocations])

    async def PreStartContainer(self, request: Any, context: Any) -> Any:
        return pb.PreStartContainerResponse()


def _to_proto(allocation: ContainerAllocation) -> Any:
    return pb.ContainerAllocateResponse(
        envs=dict(allocation.envs),
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in allocation.mounts
        ],
        devices=[
            pb.DeviceSpec(
                container_path=d.container_path, host_path=d.host_path, permissions=d.permissions
            )
            for d in allocation.devices
        ],
    )
