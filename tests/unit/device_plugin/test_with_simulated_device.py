"""The plugin against the real simulated QKD device (``device_plugin.simdevice``) as a process.

The other tests use a small fake that speaks the health protocol; this one guards the agreement
with the real device: both ends of a pair answer the plugin's probe, a link fault turns both
unhealthy, and clearing it brings them back, without restarting anything.
"""

import asyncio
import sys
from pathlib import Path

from device_plugin.api import HEALTHY, UNHEALTHY
from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind
from qss_api.qkd004_client import DeviceClient, DeviceUnavailable
from tests.unit.device_plugin.harness import Connect, RunPlugin, StubKubelet


async def answering(*sockets: Path) -> None:
    """Wait until the device (a process just started) answers HEALTH on every socket."""
    for _ in range(500):
        try:
            for path in sockets:
                async with DeviceClient(path=path) as client:
                    await client.health()
        except DeviceUnavailable:
            await asyncio.sleep(0.02)
        else:
            return
    raise AssertionError(f"the simulated device never answered on {sockets}")


async def fault(path: Path, **faults: bool) -> None:
    async with DeviceClient(path=path) as client:
        await client.fault(**faults)


async def test_fault_on_the_real_simulated_link_shows_in_list_and_watch_and_recovers(
    kubelet: StubKubelet, run_plugin: RunPlugin, connect: Connect, host_root: Path
) -> None:
    sockets = host_root / "run" / "qss"
    sockets.mkdir(parents=True)
    device = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device_plugin.simdevice",
        "pair",
        f"--socket-a={sockets / 'a.sock'}",
        f"--socket-b={sockets / 'b.sock'}",
        "--rate-bps=1000",
        "--log-level=WARNING",
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await answering(sockets / "a.sock", sockets / "b.sock")
        entries = tuple(
            DeviceEntry(
                id=f"qkd-{end}",
                kind=DeviceKind.SIMULATED,
                path=f"/run/qss/{end}.sock",
                link="node-a-node-b",
            )
            for end in ("a", "b")
        )
        plugin = await run_plugin(DeviceConfig(devices=entries, discover=()))
        await kubelet.next_registration()
        client = connect(plugin.socket_path)
        client.watch()
        assert await client.next_update() == [("qkd-a", HEALTHY), ("qkd-b", HEALTHY)]

        await fault(sockets / "a.sock", link_down=True)
        assert await client.next_update() == [("qkd-a", UNHEALTHY), ("qkd-b", UNHEALTHY)]

        await fault(sockets / "b.sock", link_down=False)
        assert await client.next_update() == [("qkd-a", HEALTHY), ("qkd-b", HEALTHY)]
    finally:
        if device.returncode is None:
            device.terminate()
        await device.wait()
