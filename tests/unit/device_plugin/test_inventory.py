"""The inventory: a refresh reports change only when IDs or health changed, and wakes waiters."""

import asyncio
import contextlib
from pathlib import Path

import pytest

from device_plugin.config import DeviceConfig, DeviceKind, DiscoveryRule
from device_plugin.inventory import Inventory


def node_inventory(root: Path) -> Inventory:
    rule = DiscoveryRule(pattern="/dev/qkd*", kind=DeviceKind.HARDWARE, link="a-b")
    return Inventory(
        config=DeviceConfig(devices=(), discover=(rule,)), host_root=root, probe_timeout=0.5
    )


async def test_refresh_reports_a_change_only_when_something_changed(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "qkd0").write_bytes(b"")
    inventory = node_inventory(tmp_path)
    assert not inventory.ready

    assert await inventory.refresh() is True
    assert await inventory.refresh() is False
    assert inventory.ready
    assert inventory.version == 1
    assert inventory.snapshot["qkd0"].healthy

    (tmp_path / "dev" / "qkd1").write_bytes(b"")
    assert await inventory.refresh() is True
    assert sorted(inventory.snapshot) == ["qkd0", "qkd1"]


async def test_waiters_wake_on_a_change_with_the_new_version(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    inventory = node_inventory(tmp_path)
    await inventory.refresh()  # no devices at all is no change from the empty start
    assert inventory.version == 0
    waiter = asyncio.create_task(inventory.wait_changed(inventory.version))
    await asyncio.sleep(0)
    assert not waiter.done()

    (tmp_path / "dev" / "qkd0").write_bytes(b"")
    await inventory.refresh()

    assert await asyncio.wait_for(waiter, 1) == 1


async def test_a_failing_round_does_not_stop_the_health_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "dev").mkdir()
    inventory = node_inventory(tmp_path)
    rounds = 0
    real_refresh = inventory.refresh

    async def flaky_refresh() -> bool:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise PermissionError("unreadable")
        return await real_refresh()

    monkeypatch.setattr(inventory, "refresh", flaky_refresh)
    loop = asyncio.create_task(inventory.run(interval=0.01))
    try:
        (tmp_path / "dev" / "qkd0").write_bytes(b"")
        assert await asyncio.wait_for(inventory.wait_changed(0), 1) == 1
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert "health round failed" in caplog.text
