"""Fixtures for the device plugin tests: short socket directories and the real parts of harness.py,
each started on demand and stopped (with its tasks) when the test ends."""

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from device_plugin.config import DeviceConfig
from tests.unit.device_plugin.harness import (
    Connect,
    FakeSimDevice,
    PluginClient,
    RunningPlugin,
    RunPlugin,
    SimDeviceFactory,
    StubKubelet,
    fast_settings,
    start_plugin,
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory short enough for Unix socket paths (tmp_path can be too long)."""
    path = Path(tempfile.mkdtemp(prefix="dp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def socket_dir(short_tmp: Path) -> Path:
    """Stands in for /var/lib/kubelet/device-plugins."""
    path = short_tmp / "kp"
    path.mkdir()
    return path


@pytest.fixture
def host_root(short_tmp: Path) -> Path:
    """Stands in for the host's /: device paths in configs are looked up under it."""
    path = short_tmp / "root"
    path.mkdir()
    return path


@pytest.fixture
async def kubelet(socket_dir: Path) -> AsyncIterator[StubKubelet]:
    stub = StubKubelet(directory=socket_dir)
    await stub.start()
    yield stub
    await stub.stop()


@pytest.fixture
async def sim_device(host_root: Path) -> AsyncIterator[SimDeviceFactory]:
    """Start a fake simulated device at host path /run/qss/<name>.sock."""
    devices: list[FakeSimDevice] = []

    async def start(name: str) -> FakeSimDevice:
        device = FakeSimDevice(host_root / "run" / "qss" / f"{name}.sock")
        await device.start()
        devices.append(device)
        return device

    yield start
    for device in devices:
        await device.stop()


@pytest.fixture
async def run_plugin(socket_dir: Path, host_root: Path) -> AsyncIterator[RunPlugin]:
    """Start the plugin's serve() with fast settings; keyword arguments override settings."""
    running: list[RunningPlugin] = []

    async def run(config: DeviceConfig, **overrides: Any) -> RunningPlugin:
        settings = fast_settings(socket_dir=socket_dir, host_root=host_root, **overrides)
        plugin = await start_plugin(settings, config)
        running.append(plugin)
        return plugin

    yield run
    for plugin in running:
        await plugin.stop()


@pytest.fixture
async def connect(run_plugin: RunPlugin) -> AsyncIterator[Connect]:
    """Open kubelet-side clients to a plugin socket; closed before the plugin stops."""
    clients: list[PluginClient] = []

    def open_client(socket_path: Path) -> PluginClient:
        client = PluginClient(socket_path)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()
