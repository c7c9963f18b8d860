"""What a container gets for its QKD devices, and which devices we would rather hand out.

Pure functions over the inventory's snapshot; :mod:`device_plugin.servicer` calls them and turns
the results into protobuf messages, and :class:`AllocationError` into a gRPC status.

The contract with the QKDM (the pod that asks for ``qss.dev/qkd: 1``):

- ``QSS_QKD_DEVICE_ID``: the device's ID.
- ``QSS_QKD_DEVICE_KIND``: ``simulated`` or ``hardware``.
- ``QSS_QKD_DEVICE_PATH``: where the device is inside the container. A simulated device's Unix
  socket is bind-mounted read-only at ``/var/run/qss/qkd-device.sock``; a hardware device node
  keeps its host path (e.g. ``/dev/qkd0``) with ``rw`` cgroup permissions.
- ``QSS_QKD_LINK``: the QKD link the device serves.
- ``QSS_QKD_DEVICE_IDS``: every allocated ID, comma-separated, in the kubelet's order.

A QKDM serves one key stream end and so asks for one device. A container given several gets the
variables above for the first, ``QSS_QKD_DEVICE_IDS`` for all, and the n-th simulated socket
(counting from 0) at ``/var/run/qss/qkd-device-<n>.sock`` for n > 0.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device_plugin.config import DeviceKind
from device_plugin.inventory import DeviceState

ENV_DEVICE_ID = "QSS_QKD_DEVICE_ID"
ENV_DEVICE_KIND = "QSS_QKD_DEVICE_KIND"
ENV_DEVICE_PATH = "QSS_QKD_DEVICE_PATH"
ENV_LINK = "QSS_QKD_LINK"
ENV_DEVICE_IDS = "QSS_QKD_DEVICE_IDS"

SIMULATED_CONTAINER_SOCKET = "/var/run/qss/qkd-device.sock"
HARDWARE_PERMISSIONS = "rw"


class AllocationError(Exception):
    """The kubelet asked for devices we cannot give; the message says which and why."""


class UnknownDeviceError(AllocationError):
    """A requested ID is not one of ours (or no longer exists)."""


class UnhealthyDeviceError(AllocationError):
    """A requested device exists but failed its last health probe."""


@dataclass(frozen=True, kw_only=True)
class MountSpec:
    """A host path bind-mounted into the container."""

    host_path: str
    container_path: str
    read_only: bool


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """A host device node made available in the container."""

    host_path: str
    container_path: str
    permissions: str


@dataclass(frozen=True, kw_only=True)
class ContainerAllocation:
    """Everything one container needs to reach its devices."""

    envs: Mapping[str, str]
    mounts: tuple[MountSpec, ...]
    devices: tuple[NodeSpec, ...]


def check_devices(device_ids: Sequence[str], snapshot: Mapping[str, DeviceState]) -> None:
    """Raise :class:`AllocationError` unless every ID is known and healthy."""
    if not device_ids:
        raise UnknownDeviceError("the allocation request names no devices")
    for device_id in device_ids:
        state = snapshot.get(device_id)
        if state is None:
            raise UnknownDeviceError(
                f"device {device_id!r} is not offered by this plugin; "
                f"it offers {', '.join(sorted(snapshot)) or 'no devices'}"
            )
        if not state.healthy:
            raise UnhealthyDeviceError(
                f"device {device_id!r} is unhealthy ({state.device.kind} at {state.device.path}); "
                "the pod can be scheduled again once it recovers"
            )


def allocate_container(
    device_ids: Sequence[str], snapshot: Mapping[str, DeviceState]
) -> ContainerAllocation:
    """The mounts, device nodes and environment for a container given ``device_ids``."""
    ordered = list(dict.fromkeys(device_ids))  # the kubelet never repeats an ID; be safe anyway
    check_devices(ordered, snapshot)
    mounts: list[MountSpec] = []
    nodes: list[NodeSpec] = []
    container_paths: list[str] = []
    for device_id in ordered:
        device = snapshot[device_id].device
        if device.kind is DeviceKind.SIMULATED:
            container_path = _simulated_socket_path(len(mounts))
            # Read-only is enough: connecting to a Unix socket works on a read-only mount.
            mounts.append(
                MountSpec(host_path=device.path, container_path=container_path, read_only=True)
            )
        else:
            container_path = device.path
            nodes.append(
                NodeSpec(
                    host_path=device.path,
                    container_path=container_path,
                    permissions=HARDWARE_PERMISSIONS,
                )
            )
        container_paths.append(container_path)
    first = snapshot[ordered[0]].device
    envs = {
        ENV_DEVICE_ID: first.id,
        ENV_DEVICE_KIND: first.kind.value,
        ENV_DEVICE_PATH: container_paths[0],
        ENV_LINK: first.link,
        ENV_DEVICE_IDS: ",".join(ordered),
    }
    return ContainerAllocation(envs=envs, mounts=tuple(mounts), devices=tuple(nodes))


def preferred_allocation(
    *,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    snapshot: Mapping[str, DeviceState],
) -> list[str]:
    """Pick ``size`` devices from ``available``: every must-include one first, then healthy ones.

    Must-include devices are always returned, even past ``size`` or when unhealthy: the kubelet has
    already decided on them. The rest are filled from ``available`` in ID order, healthy devices
    before unhealthy or unknown ones, so the answer is stable for the same input.
    """
    chosen = list(dict.fromkeys(must_include))
    remaining = [d for d in dict.fromkeys(available) if d not in chosen]

    def rank(device_id: str) -> tuple[bool, str]:
        state = snapshot.get(device_id)
        return (state is None or not state.healthy, device_id)

    for device_id in sorted(remaining, key=rank):
        if len(chosen) >= size:
            break
        chosen.append(device_id)
    return chosen


def _simulated_socket_path(index: int) -> str:
    if index == 0:
        return SIMULATED_CONTAINER_SOCKET
    return SIMULATED_CONTAINER_SOCKET.removesuffix(".sock") + f"-{index}.sock"
