"""The sidecar's Prometheus metrics, served at ``/metrics`` on ``QSS_SIDECAR_METRICS_PORT`` (all
of the pod's addresses) when the webhook gives it one.

The key loop (``sidecar.agent``) records what it did at the end of each step: a delivery that
rotated the key files (``rotated``), a step that failed (``failed`` with a CamelCase reason:
``ApiError`` for a round the API server failed, ``BadDelivery`` for a Ready request whose keys
did not check out, or the KeyRequest's own failure reason such as ``InsufficientKeys``). No label
carries a key ID, a request name or UID: the pod's own labels say which SAE it is.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler

REGISTRY: Final = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

ROTATIONS: Final = Counter(
    "qss_sidecar_rotations",
    "New snapshots of the key files published (one per delivered KeyRequest).",
    registry=REGISTRY,
)
KEYS_WRITTEN: Final = Counter(
    "qss_sidecar_keys_written", "Keys written into the key volume.", registry=REGISTRY
)
KEYS_HELD: Final = Gauge(
    "qss_sidecar_keys_held", "Keys in the key volume's current snapshot.", registry=REGISTRY
)
ERRORS: Final = Counter(
    "qss_sidecar_errors",
    "Failed steps of the key loop, by reason (ApiError, BadDelivery, or the KeyRequest's "
    "failure reason, e.g. InsufficientKeys).",
    ["reason"],
    registry=REGISTRY,
)


def rotated(*, keys: int, held: int) -> None:
    ROTATIONS.inc()
    KEYS_WRITTEN.inc(keys)
    KEYS_HELD.set(held)


def holding(keys: int) -> None:
    KEYS_HELD.set(keys)


def failed(reason: str) -> None:
    ERRORS.labels(reason).inc()


def init() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(REGISTRY, disable_compression=True))
    return app
