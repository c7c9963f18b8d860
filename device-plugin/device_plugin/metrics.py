"""Prometheus-style ``/metrics`` and a ``/healthz`` for the device plugin, over aiohttp.

``main`` builds the app with :func:`init` when ``--metrics-address`` is set; the servicer and the
lifecycle bump the :class:`Counters` they are given. The text format is written by hand: a
handful of gauges and counters do not justify a client library.
"""

from dataclasses import dataclass, field

from aiohttp import web

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
COUNTERS_KEY = web.AppKey("counters", Counters)


def init(*, inventory: Inventory, counters: Counters) -> web.Application:
    """The aiohttp application serving ``/metrics`` and ``/healthz``."""
    app = web.Application()
    app[INVENTORY_KEY] = inventory
    app[COUNTERS_KEY] = counters
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


def render(inventory: Inventory, counters: Counters) -> str:
    """The metrics in the Prometheus text exposition format."""
    states = inventory.snapshot.values()
    healthy = sum(1 for s in states if s.healthy)
    lines = [
        "# HELP qss_device_plugin_devices QKD devices offered to the kubelet, by health.",
        "# TYPE qss_device_plugin_devices gauge",
        f'qss_device_plugin_devices{{health="healthy"}} {healthy}',
        f'qss_device_plugin_devices{{health="unhealthy"}} {len(states) - healthy}',
        "# HELP qss_device_plugin_registered 1 while the resource is registered with the kubelet.",
        "# TYPE qss_device_plugin_registered gauge",
        *(f'qss_device_plugin_registered{{resource="{r}"}} 1' for r in sorted(counters.registered)),
    ]
    for name, help_text, value in (
        ("registrations", "Successful registrations with the kubelet.", counters.registrations),
        (
            "registration_failures",
            "Failed attempts to serve or register.",
            counters.registration_failures,
        ),
        ("allocations", "Containers given devices by Allocate.", counters.allocations),
        ("allocation_errors", "Allocate calls refused.", counters.allocation_errors),
    ):
        lines += [
            f"# HELP qss_device_plugin_{name}_total {help_text}",
            f"# TYPE qss_device_plugin_{name}_total counter",
            f"qss_device_plugin_{name}_total {value}",
        ]
    return "\n".join(lines) + "\n"


async def _metrics(request: web.Request) -> web.Response:
    text = render(request.app[INVENTORY_KEY], request.app[COUNTERS_KEY])
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _healthz(request: web.Request) -> web.Response:
    # Liveness: the event loop answers and the first health round is done. Not being registered
    # is no reason to restart the pod (the kubelet may be restarting), so it does not count.
    if not request.app[INVENTORY_KEY].ready:
        return web.Response(status=503, text="starting\n")
    return web.Response(text="ok\n")
