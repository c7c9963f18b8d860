"""The health port of the controller and the QKDM: liveness at ``/healthz`` and Prometheus
metrics at ``/metrics``, one small aiohttp server beside the kopf operator.

kopf's own liveness endpoint serves one route only, so the mains (``controllers.main``,
``controllers.qkdm.main``) run ``kopf.operator`` with a ``ready`` event inside
``serving_health(endpoint, ready=..., registry=...)``. ``/healthz`` means what kopf's endpoint
meant: the operator's startup handlers have finished and its event loop answers (200), and not
before (503, where kopf's port was still closed). ``/metrics`` answers from the start, so a
controller that never gets ready can still be looked at; a ``refresh`` coroutine, if given, is
awaited before each scrape (the controller reads its pools' levels from Redis then).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

METRICS_PATH: Final = "/metrics"
READY: Final = web.AppKey("qss_health_ready", asyncio.Event)


class HealthEndpointError(ValueError):
    """The health endpoint is not an ``http://host:port/path`` URL."""


def parse_endpoint(endpoint: str) -> tuple[str, int, str]:
    """(host, port, liveness path) of an ``http://host:port/path`` URL."""
    parts = urllib.parse.urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise HealthEndpointError(
            f"health endpoint {endpoint!r} is not http://host:port/path (e.g. "
            "http://0.0.0.0:8080/healthz)"
        )
    path = parts.path or "/healthz"
    if path == METRICS_PATH:
        raise HealthEndpointError(f"the health endpoint's path cannot be {METRICS_PATH}")
    return parts.hostname, port, path


async def _healthz(request: web.Request) -> web.Response:
    if not request.app[READY].is_set():
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok"})


Refresh = Callable[[], Awaitable[None]]


def init(
    *,
    ready: asyncio.Event,
    registry: CollectorRegistry,
    path: str,
    refresh: Refresh | None = None,
) -> web.Application:
    app = web.Application()
    app[READY] = ready
    app.router.add_get(path, _healthz)
    expose = make_aiohttp_handler(registry, disable_compression=True)

    async def metrics(request: web.Request) -> web.StreamResponse:
        if refresh is not None:
            await refresh()
        return await expose(request)

    app.router.add_get(METRICS_PATH, metrics)
    return app


@contextlib.asynccontextmanager
async def serving_health(
    endpoint: str,
    *,
    ready: asyncio.Event,
    registry: CollectorRegistry,
    refresh: Refresh | None = None,
) -> AsyncIterator[None]:
    """Serve the health port while the block runs."""
    host, port, path = parse_endpoint(endpoint)
    runner = web.AppRunner(
        init(ready=ready, registry=registry, path=path, refresh=refresh),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
