"""The Event recorder's aggregation rule against a real API server, on a clock the test moves.

``controllers.events.EventRecorder``: one ``events.k8s.io/v1`` Event per (object, type, reason)
and burst; repeats counted in its series, written at once for the first repeat and then at most
every ``series_interval``; a new Event after a quiet ``burst_window``. The tests call ``flush``
themselves (the recorder's background task is not started), so what the API server holds after
each step is exactly what the rule says.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from controllers.events import MAX_NOTE, EventRecorder, Regarding
from controllers.kube import connect
from tests.cluster.localcluster import Cluster

pytestmark = pytest.mark.cluster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api_client = await connect(str(cluster.kubeconfig))
    yield api_client
    await api_client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder(api: client.ApiClient, clock: Clock) -> EventRecorder:
    return EventRecorder(
        api=api,
        controller="qss.dev/test",
        instance="test-events",
        burst_window=600.0,
        series_interval=30.0,
        clock=clock,
    )


def link() -> Regarding:
    return Regarding(kind="QKDLink", name=f"ev-{uuid.uuid4().hex[:8]}")


async def events_of(api: client.ApiClient, what: Regarding) -> list[dict[str, Any]]:
    listed = await client.EventsV1Api(api).list_namespaced_event("default")
    found = [api.sanitize_for_serialization(e) for e in listed.items]
    return [e for e in found if e["regarding"]["name"] == what.name]


async def test_repeats_of_one_reason_are_one_event_whose_series_counts_them(
    recorder: EventRecorder, api: client.ApiClient
) -> None:
    target = link()
    for i in range(50):
        recorder.record(target, type="Warning", reason="LinkDown", note=f"down #{i}")
    await recorder.flush(final=True)
    (event,) = await events_of(api, target)
    assert event["reason"] == "LinkDown"
    assert event["type"] == "Warning"
    assert event["series"]["count"] == 50
    assert event["note"] == "down #0"  # the first occurrence's, as the API server keeps it
    assert event["reportingController"] == "qss.dev/test"
    assert event["regarding"]["kind"] == "QKDLink"


async def test_series_updates_are_written_at_once_then_at_most_every_interval(
    recorder: EventRecorder, api: client.ApiClient, clock: Clock
) -> None:
    target = link()

    async def count() -> int:
        (event,) = await events_of(api, target)
        return int((event.get("series") or {}).get("count", 1))

    recorder.record(target, type="Normal", reason="LinkUp", note="up")
    await recorder.flush()
    assert await count() == 1
    recorder.record(target, type="Normal", reason="LinkUp", note="up")
    await recorder.flush()
    assert await count() == 2  # the first repeat at once
    for _ in range(8):
        clock.now += 1
        recorder.record(target, type="Normal", reason="LinkUp", note="up")
        wait = await recorder.flush()
        assert wait is not None
        assert wait > 0
    assert await count() == 2  # held back: less than the interval since the last write
    clock.now += 30
    assert await recorder.flush() is None
    assert await count() == 10


async def test_reasons_and_objects_are_separate_and_a_quiet_window_starts_a_new_event(
    recorder: EventRecorder, api: client.ApiClient, clock: Clock
) -> None:
    one, two = link(), link()
    recorder.record(one, type="Warning", reason="LinkDown", note="down")
    recorder.record(one, type="Normal", reason="LinkUp", note="up")
    recorder.record(two, type="Warning", reason="LinkDown", note="down")
    await recorder.flush()
    assert sorted(e["reason"] for e in await events_of(api, one)) == ["LinkDown", "LinkUp"]
    assert [e["reason"] for e in await events_of(api, two)] == ["LinkDown"]
    clock.now += 601
    await recorder.flush()  # the burst is over: forgotten
    recorder.record(one, type="Warning", reason="LinkDown", note="down again")
    await recorder.flush()
    downs = [e for e in await events_of(api, one) if e["reason"] == "LinkDown"]
    assert sorted(e["note"] for e in downs) == ["down", "down again"]


async def test_a_long_note_is_cut_to_what_the_api_server_takes(
    recorder: EventRecorder, api: client.ApiClient
) -> None:
    target = link()
    recorder.record(target, type="Warning", reason="LsaDropped", note="x" * 5000)
    await recorder.flush()
    (event,) = await events_of(api, target)
    assert event["note"] == "x" * MAX_NOTE


async def test_the_background_task_writes_and_close_flushes_what_is_pending(
    api: client.ApiClient,
) -> None:
    recorder = EventRecorder(api=api, controller="qss.dev/test", instance="test-events")
    recorder.start()
    target = link()
    for _ in range(5):
        recorder.record(target, type="Warning", reason="PeerUnreachable", note="no answer")
    await recorder.aclose()
    (event,) = await events_of(api, target)
    assert event["series"]["count"] == 5
