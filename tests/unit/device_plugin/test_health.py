"""Health probes over a real Unix socket (simulated device) and real files (device nodes)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from device_plugin.config import DeviceKind
from device_plugin.discovery import Device
from device_plugin.health import probe, probe_hardware, probe_simulated
from tests.unit.device_plugin.harness import FakeSimDevice

QUICK = 0.5


@pytest.fixture
async def device(short_tmp: Path) -> AsyncIterator[FakeSimDevice]:
    fake = FakeSimDevice(short_tmp / "sim.sock")
    await fake.start()
    yield fake
    await fake.stop()


async def test_simulated_device_answering_healthy_true_is_healthy(device: FakeSimDevice) -> None:
    assert await probe_simulated(device.socket_path, within=QUICK) is True


async def test_simulated_device_answering_healthy_false_is_unhealthy(device: FakeSimDevice) -> None:
    device.healthy = False
    assert await probe_simulated(device.socket_path, within=QUICK) is False


@pytest.mark.parametrize(
    "answer",
    [b"not json\n", b'{"healthy": "yes"}\n', b"[true]\n", b'{"status": "ok"}\n', b"\n"],
)
async def test_simulated_device_with_an_unclear_answer_is_unhealthy(
    device: FakeSimDevice, answer: bytes
) -> None:
    device.raw_answer = answer
    assert await probe_simulated(device.socket_path, within=QUICK) is False


async def test_no_simulated_device_on_the_socket_is_unhealthy(short_tmp: Path) -> None:
    assert await probe_simulated(short_tmp / "nobody.sock", within=QUICK) is False


async def test_simulated_device_that_never_answers_is_unhealthy_after_the_timeout(
    short_tmp: Path,
) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_unix_server(silent, path=short_tmp / "mute.sock")
    try:
        assert await probe_simulated(short_tmp / "mute.sock", within=0.05) is False
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def test_hardware_node_that_exists_and_opens_is_healthy(tmp_path: Path) -> None:
    node = tmp_path / "qkd0"
    node.write_bytes(b"")
    assert probe_hardware(node) is True


def test_hardware_node_that_is_missing_is_unhealthy(tmp_path: Path) -> None:
    assert probe_hardware(tmp_path / "qkd0") is False


def test_a_directory_is_no_device_node(tmp_path: Path) -> None:
    assert probe_hardware(tmp_path) is False


def test_a_dangling_link_to_a_device_node_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "qkd0").symlink_to(tmp_path / "gone")
    assert probe_hardware(tmp_path / "qkd0") is False


def test_dev_null_as_a_real_character_device_is_healthy() -> None:
    assert probe_hardware(Path("/dev/null")) is True


async def test_probe_looks_for_the_device_under_the_host_root(short_tmp: Path) -> None:
    fake = FakeSimDevice(short_tmp / "run" / "a.sock")
    await fake.start()
    try:
        sim = Device(id="a", kind=DeviceKind.SIMULATED, path="/run/a.sock", link="l")
        assert await probe(sim, host_root=short_tmp, within=QUICK) is True
        assert await probe(sim, host_root=short_tmp / "elsewhere", within=QUICK) is False
    finally:
        await fake.stop()
