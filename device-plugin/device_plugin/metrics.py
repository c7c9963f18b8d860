"""Prometheus ``/metrics`` and a ``/healthz`` for the device plugin, over aiohttp.

``main`` builds the app with :func:`init` when ``--metrics-address`` is set; the servicer and the
lifecycle bump the :class:`Counters` they are given, and the inventory holds each device's
health. Both are read when Prometheus scrapes (``PluginCollector``), through prometheus_client's
registry and exposition: allocations and their refusals, registrations with the kubelet and
failed attempts, which resources are registered now, and each device's health. Labels are
device IDs, QKD link names and resource names from the plugin's configuration; no device path.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from device_plugin.inventory import Inventory


@dataclass(kw_only=True)
class Counters:
    """Event counts since start and which resources are registered with the kubelet right now."""

    registrations: int = 0
    registration_failures: int = 0
    allocations: int = 0
    allocation_errors: int = 0
    registered: set[str] = field(default_factory=set)


INVENTORY_KEY = web.AppKey("inventory", Inventory)


class PluginCollector(Collector):
    """The plugin's counters and its devices' health, as they are at scrape time."""

    def __init__(self, *, inventory: Inventory, counters: Counters) -> None:
        self._inventory, self._counters = inventory, counters

    def collect(self) -> Iterator[Metric]:
        counters, states = self._counters, self._inventory.snapshot.values()
        healthy = sum(1 for s in states if s.healthy)
        devices = GaugeMetricFamily(
            "qss_device_plugin_devices",
            "QKD devices offered to the kubelet, by health.",
            labels=["health"],
        )
        devices.add_metric(["healthy"], healthy)
        devices.add_metric(["unhealthy"], len(states) - healthy)
        yield devices
        device_healthy = GaugeMetricFamily(
            "qss_device_plugin_device_healthy",
            "1 while the device passed its last health probe, else 0.",
            labels=["device", "link"],
        )
        for state in sorted(states, key=lambda s: s.device.id):
            device_healthy.add_metric([state.device.id, state.device.link], int(state.healthy))
        yield device_healthy
        registered = GaugeMetricFamily(
            "qss_device_plugin_registered",
            "1 while the resource is registered with the kubelet.",
            labels=["resource"],
        )
        for resource in sorted(counters.registered):
            registered.add_metric([resource], 1)
        yield registered
        for name, documentation, value in (
            ("registrations", "Successful registrations with the kubelet.", counters.registrations),
            (
                "registration_failures",
                "Failed attempts to serve or register.",
                counters.registration_failures,
            ),
            ("allocations", "Containers given devices by Allocate.", counters.allocations),
            ("allocation_errors", "Allocate calls refused.", counters.allocation_errors),
        ):
            yield CounterMetricFamily(f"qss_device_plugin_{name}", documentation, value=value)


def registry(*, inventory: Inventory, counters: Counters) -> CollectorRegistry:
    """The plugin's metrics and the process's own (CPU, memory, file descriptors, GC)."""
    collectors = CollectorRegistry()
    collectors.register(PluginCollector(inventory=inventory, counters=counters))
    ProcessCollector(registry=collectors)
    PlatformCollector(registry=collectors)
    GCCollector(registry=collectors)
    return collectors


def init(*, inventory: Inventory, counters: Counters) -> web.Application:
    """The aiohttp application serving ``/metrics`` and ``/healthz``."""
    app = web.Application()
    app[INVENTORY_KEY] = inventory
    metrics = registry(inventory=inventory, counters=counters)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics, disable_compression=True))
    app.router.add_get("/healthz", _healthz)
    return app


async def _healthz(request: web.Request) -> web.Response:
    # Liveness: the event loop answers and the first health round is done. Not being registered
    # is no reason to restart the pod (the kubelet may be restarting), so it does not count.
    if not request.app[INVENTORY_KEY].ready:
        return web.Response(status=503, text="starting\n")
    return web.Response(text="ok\n")
