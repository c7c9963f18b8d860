"""The health port of the controller and the QKDM (``controllers.health``): liveness that means
what kopf's meant (healthy once the operator's startup is done), metrics from the start, and
clear errors for an endpoint setting that cannot work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Counter, Gauge

from controllers.health import HealthEndpointError, init, parse_endpoint
from controllers.settings import ControllerSettings, SettingsError
from tests.metrics import parse

ClientMaker = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def test_healthz_is_503_until_the_operator_is_ready_then_200(
    aiohttp_client: ClientMaker,
) -> None:
    ready = asyncio.Event()
    client = await aiohttp_client(init(ready=ready, registry=CollectorRegistry(), path="/healthz"))
    starting = await client.get("/healthz")
    assert starting.status == 503
    assert (await starting.json()) == {"status": "starting"}
    ready.set()
    ok = await client.get("/healthz")
    assert ok.status == 200
    assert (await ok.json()) == {"status": "ok"}


async def test_metrics_serve_the_registry_from_the_start(aiohttp_client: ClientMaker) -> None:
    registry = CollectorRegistry()
    served = Counter("qss_test_things", "Things.", ["kind"], registry=registry)
    served.labels("a").inc(3)
    client = await aiohttp_client(init(ready=asyncio.Event(), registry=registry, path="/live"))
    answer = await client.get("/metrics")
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    page = parse(await answer.text())
    assert page.value("qss_test_things_total", kind="a") == 3
    assert (await client.get("/live")).status == 503  # the path the setting names


async def test_each_scrape_awaits_the_refresh_before_it_reads_the_registry(
    aiohttp_client: ClientMaker,
) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("qss_test_level", "A level read at scrape time.", registry=registry)
    reads: list[int] = []

    async def refresh() -> None:
        await asyncio.sleep(0)  # a real refresh awaits the store
        reads.append(len(reads) + 1)
        gauge.set(len(reads) * 10)

    client = await aiohttp_client(
        init(ready=asyncio.Event(), registry=registry, path="/healthz", refresh=refresh)
    )
    for expected in (10, 20):
        page = parse(await (await client.get("/metrics")).text())
        assert page.value("qss_test_level") == expected
    assert (await client.get("/healthz")).status == 503  # liveness does not refresh
    assert reads == [1, 2]


@pytest.mark.parametrize(
    "endpoint",
    ["0.0.0.0:8080", "https://0.0.0.0:8080/healthz", "http://0.0.0.0/healthz", "http://:80/x"],
)
def test_an_endpoint_that_is_not_http_host_port_path_is_refused(endpoint: str) -> None:
    with pytest.raises(HealthEndpointError, match="http://host:port/path"):
        parse_endpoint(endpoint)
    with pytest.raises(SettingsError, match="QSS_HEALTH_ENDPOINT"):
        ControllerSettings(node_id="node-a", health_endpoint=endpoint)


def test_the_metrics_path_cannot_be_the_liveness_path() -> None:
    with pytest.raises(HealthEndpointError, match="/metrics"):
        parse_endpoint("http://0.0.0.0:8080/metrics")


def test_an_endpoint_without_a_path_serves_liveness_at_healthz() -> None:
    assert parse_endpoint("http://127.0.0.1:8080") == ("127.0.0.1", 8080, "/healthz")
