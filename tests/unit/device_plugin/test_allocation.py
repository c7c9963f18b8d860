"""Allocation and preferred allocation as pure functions over an inventory snapshot."""

from collections.abc import Mapping

import pytest

from device_plugin.allocation import (
    MountSpec,
    NodeSpec,
    UnhealthyDeviceError,
    UnknownDeviceError,
    allocate_container,
    preferred_allocation,
)
from device_plugin.config import DeviceKind
from device_plugin.discovery import Device
from device_plugin.inventory import DeviceState


def snapshot(*states: tuple[str, DeviceKind, bool]) -> Mapping[str, DeviceState]:
    result = {}
    for device_id, kind, healthy in states:
        path = (
            f"/var/run/qss/devices/{device_id}.sock"
            if kind is DeviceKind.SIMULATED
            else (f"/dev/{device_id}")
        )
        device = Device(id=device_id, kind=kind, path=path, link=f"link-{device_id}")
        result[device_id] = DeviceState(device=device, healthy=healthy)
    return result


SIM, HW = DeviceKind.SIMULATED, DeviceKind.HARDWARE


def test_several_devices_in_one_container_get_distinct_paths_and_the_first_in_env() -> None:
    states = snapshot(("s1", SIM, True), ("s2", SIM, True), ("h1", HW, True))

    allocation = allocate_container(["s2", "h1", "s1"], states)

    assert allocation.mounts == (
        MountSpec(
            host_path="/var/run/qss/devices/s2.sock",
            container_path="/var/run/qss/qkd-device.sock",
            read_only=True,
        ),
        MountSpec(
            host_path="/var/run/qss/devices/s1.sock",
            container_path="/var/run/qss/qkd-device-1.sock",
            read_only=True,
        ),
    )
    assert allocation.devices == (
        NodeSpec(host_path="/dev/h1", container_path="/dev/h1", permissions="rw"),
    )
    assert allocation.envs["QSS_QKD_DEVICE_ID"] == "s2"
    assert allocation.envs["QSS_QKD_DEVICE_PATH"] == "/var/run/qss/qkd-device.sock"
    assert allocation.envs["QSS_QKD_LINK"] == "link-s2"
    assert allocation.envs["QSS_QKD_DEVICE_IDS"] == "s2,h1,s1"


def test_unknown_device_is_refused_naming_it_and_what_is_offered() -> None:
    with pytest.raises(UnknownDeviceError, match=r"'x' is not offered by this plugin; it offers a"):
        allocate_container(["a", "x"], snapshot(("a", SIM, True)))


def test_empty_request_is_refused() -> None:
    with pytest.raises(UnknownDeviceError, match="names no devices"):
        allocate_container([], snapshot(("a", SIM, True)))


def test_unhealthy_device_is_refused_naming_it() -> None:
    with pytest.raises(UnhealthyDeviceError, match=r"'a' is unhealthy \(hardware at /dev/a\)"):
        allocate_container(["a"], snapshot(("a", HW, False)))


@pytest.mark.parametrize(
    ("available", "must", "size", "expected"),
    [
        (["c", "b", "a"], [], 2, ["a", "b"]),  # stable: ID order
        (["c", "b", "a"], ["c"], 2, ["c", "a"]),  # must-include first, then fill
        (["a", "b"], ["b", "a"], 1, ["b", "a"]),  # must-include kept even past the size
        (["u", "a"], [], 2, ["a", "u"]),  # healthy before unhealthy
        (["zz-unknown", "u", "a"], [], 3, ["a", "u", "zz-unknown"]),
        (["u"], ["u"], 1, ["u"]),  # must-include kept even when unhealthy
        (["a", "a", "b"], ["a", "a"], 2, ["a", "b"]),  # no duplicates
    ],
)
def test_preferred_allocation(
    available: list[str], must: list[str], size: int, expected: list[str]
) -> None:
    states = snapshot(("a", SIM, True), ("b", SIM, True), ("c", HW, True), ("u", SIM, False))
    assert (
        preferred_allocation(available=available, must_include=must, size=size, snapshot=states)
        == expected
    )
