"""The Route writer: creates, updates only on change, deletes the unreachable, puts back what
anyone else changed, holds deletions back while a fresh controller learns the network, and
retries what failed. Over a recording RouteApi (the real API server is in the integration
tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from controllers.routing.writer import RouteWriter

SPEC_B = {"saeID": "bob", "destinationNodeID": "node-b", "nextHopNodeID": "node-b",
          "path": ["node-a", "node-b"], "cost": 62.5, "length": 1}  # fmt: skip


class RecordingRouteApi:
    """Keeps Routes in a dict, records every call, and can be told to fail."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failures = 0

    async def put(self, name: str, spec: Mapping[str, Any]) -> None:
        self._maybe_fail()
        self.calls.append(("put", name))
        self.routes[name] = dict(spec)

    async def delete(self, name: str) -> None:
        self._maybe_fail()
        self.calls.append(("delete", name))
        self.routes.pop(name, None)

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the API server is down")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _writer(
    api: RecordingRouteApi, desired: dict[str, dict[str, Any]], clock: Callable[[], float]
) -> RouteWriter:
    return RouteWriter(api=api, desired=lambda: dict(desired), grace=10.0, clock=clock)


async def test_creates_then_writes_nothing_while_nothing_changes() -> None:
    api, clock = RecordingRouteApi(), Clock()
    desired = {"bob": SPEC_B}
    writer = _writer(api, desired, clock)
    await writer.sync()
    writer.observe("bob", SPEC_B)  # the watch shows our write
    await writer.sync()
    await writer.sync()
    assert api.calls == [("put", "bob")]
    desired["bob"] = {**SPEC_B, "cost": 70.0}
    await writer.sync()
    assert api.calls[-1] == ("put", "bob")
    assert api.routes["bob"]["cost"] == 70.0


async def test_an_edit_by_someone_else_is_put_back_and_a_deletion_undone() -> None:
    api, clock = RecordingRouteApi(), Clock()
    writer = _writer(api, {"bob": SPEC_B}, clock)
    await writer.sync()
    writer.observe("bob", {**SPEC_B, "nextHopNodeID": "node-x"})
    await writer.sync()
    assert api.routes["bob"] == SPEC_B
    assert len(api.calls) == 2
    writer.observe("bob", None)
    await writer.sync()
    assert api.routes["bob"] == SPEC_B
    assert len(api.calls) == 3


async def test_routes_not_in_the_table_are_deleted_but_only_after_the_grace() -> None:
    api, clock = RecordingRouteApi(), Clock()
    writer = _writer(api, {}, clock)
    writer.observe("stale", SPEC_B)  # from before a restart, or made by a user
    assert not await writer.sync()
    assert api.calls == []
    clock.now += 10
    assert await writer.sync()
    assert api.calls == [("delete", "stale")]


async def test_the_running_writer_retries_until_the_api_answers() -> None:
    api, clock = RecordingRouteApi(), Clock()
    api.failures = 1
    writer = _writer(api, {"bob": SPEC_B}, clock)
    writer.start()
    try:
        for _ in range(100):
            if "bob" in api.routes:
                break
            await asyncio.sleep(0.05)
        assert api.routes == {"bob": SPEC_B}
        assert writer.writes == 1
    finally:
        await writer.aclose()
