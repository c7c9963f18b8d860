"""/metrics and /healthz, through aiohttp's test client; the exposition read with
prometheus_client's parser."""

from pathlib import Path

from pytest_aiohttp import AiohttpClient

from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind
from device_plugin.inventory import Inventory
from device_plugin.metrics import Counters, init
from tests.metrics import parse


def inventory(host_root: Path) -> Inventory:
    entries = (
        DeviceEntry(id="ok", kind=DeviceKind.HARDWARE, path="/dev/null", link="a-b"),
        DeviceEntry(id="gone", kind=DeviceKind.HARDWARE, path="/dev/qkd-gone", link="a-c"),
    )
    return Inventory(
        config=DeviceConfig(devices=entries, discover=()), host_root=host_root, probe_timeout=0.5
    )


async def test_metrics_count_devices_by_health_and_events(aiohttp_client: AiohttpClient) -> None:
    devices = inventory(Path("/"))
    await devices.refresh()
    counters = Counters(
        registrations=2, allocations=3, allocation_errors=1, registered={"qss.dev/qkd-a-b"}
    )
    client = await aiohttp_client(init(inventory=devices, counters=counters))

    response = await client.get("/metrics")

    assert response.status == 200
    text = await response.text()
    page = parse(text)
    assert page.value("qss_device_plugin_devices", health="healthy") == 1
    assert page.value("qss_device_plugin_devices", health="unhealthy") == 1
    assert page.value("qss_device_plugin_device_healthy", device="ok", link="a-b") == 1
    assert page.value("qss_device_plugin_device_healthy", device="gone", link="a-c") == 0
    assert page.value("qss_device_plugin_registered", resource="qss.dev/qkd-a-b") == 1
    assert page.value("qss_device_plugin_registrations_total") == 2
    assert page.value("qss_device_plugin_registration_failures_total") == 0
    assert page.value("qss_device_plugin_allocations_total") == 3
    assert page.value("qss_device_plugin_allocation_errors_total") == 1
    assert "# TYPE qss_device_plugin_allocations_total counter" in text.splitlines()
    assert "/dev/" not in text  # device paths are not labels


async def test_healthz_is_503_until_the_first_health_round_then_ok(
    aiohttp_client: AiohttpClient,
) -> None:
    devices = inventory(Path("/"))
    client = await aiohttp_client(init(inventory=devices, counters=Counters()))

    assert (await client.get("/healthz")).status == 503
    await devices.refresh()
    response = await client.get("/healthz")

    assert response.status == 200
    assert await response.text() == "ok\n"
