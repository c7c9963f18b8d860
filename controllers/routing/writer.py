"""Keeping the cluster's Route objects equal to the routing table: created when an SAE becomes
reachable, updated only when its entry changes, deleted when it becomes unreachable, and put
back when anyone else edits or deletes one (Routes are the routing controller's alone).

``RouteWriter`` compares what it wants (``desired()``, e.g. ``RoutingService.route_objects``)
with what the Route watch reported (``observe``, called by ``controllers.handlers.routes``) and
writes the difference through a ``RouteApi``. It is woken by ``changed()`` (the routing table
changed) and by every watch event; failed writes are retried with a growing delay. Each write
is told to ``on_write(name, before, after)`` if given (``after`` None: deleted), which the node
turns into Events.

Deleting is held back for ``grace`` seconds after start: a controller that just started has an
empty table until its neighbours have answered, and would otherwise delete every Route and
create it again a moment later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from controllers.conditions import now_rfc3339
from controllers.kube import Kube, NotFoundError
from qss_api import API_VERSION, KIND_ROUTE, LABEL_NAME, LABEL_PART_OF, PART_OF, ROUTES

log = logging.getLogger(__name__)

Spec = Mapping[str, Any]

_LABELS: Final = {LABEL_NAME: "kube-qss", LABEL_PART_OF: PART_OF}
_RETRY_FIRST: Final = 1.0
_RETRY_MAX: Final = 30.0


class RouteApi(Protocol):
    async def put(self, name: str, spec: Spec) -> None:
        """Create or update Route ``name`` with ``spec`` (and mark when in its status)."""
        ...

    async def delete(self, name: str) -> None:
        """Delete Route ``name``; gone already is fine."""
        ...


class KubeRoutes:
    """``RouteApi`` over the node's own cluster, with server-side apply."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def put(self, name: str, spec: Spec) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND_ROUTE,
            "metadata": {"name": name, "labels": dict(_LABELS)},
            "spec": dict(spec),
        }
        await self._kube.apply(ROUTES, name, body)
        with contextlib.suppress(NotFoundError):
            await self._kube.apply_status(ROUTES, name, {"lastUpdateTime": now_rfc3339()})

    async def delete(self, name: str) -> None:
        await self._kube.delete(ROUTES, name)


class RouteWriter:
    def __init__(
        self,
        *,
        api: RouteApi,
        desired: Callable[[], Mapping[str, Spec]],
        grace: float,
        clock: Callable[[], float] = time.monotonic,
        on_write: Callable[[str, Spec | None, Spec | None], None] | None = None,
    ) -> None:
        self._api = api
        self._on_write = on_write
        self._desired = desired
        self._clock = clock
        self._delete_after = clock() + grace
        self._observed: dict[str, dict[str, Any] | None] = {}  # name -> spec the watch showed
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # creates and updates
        self.deletes = 0

    def start(self) -> None:
        if self._task is None:
            self._wake.set()
            self._task = asyncio.create_task(self._run(), name="qss-route-writer")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def changed(self) -> None:
        """The routing table may have changed."""
        self._wake.set()

    def observe(self, name: str, spec: Mapping[str, Any] | None) -> None:
        """The watch saw Route ``name`` with ``spec`` (None: deleted)."""
        if spec is None:
            self._observed.pop(name, None)
        else:
            self._observed[name] = dict(spec)
        self._wake.set()

    async def sync(self) -> bool:
        """Write what differs; True when the cluster holds exactly the table (or only more,
        while deletions are held back)."""
        desired = self._desired()
        for name, spec in sorted(desired.items()):
            before = self._observed.get(name)
            if before != spec:
                await self._api.put(name, spec)
                self._observed[name] = dict(spec)  # the watch confirms (or corrects) it
                self.writes += 1
                if self._on_write is not None:
                    self._on_write(name, before, spec)
                log.info("route to SAE %s: %s", spec.get("saeID"), _describe(spec))
        extra = sorted(set(self._observed) - set(desired))
        if extra and self._clock() < self._delete_after:
            return False
        for name in extra:
            await self._api.delete(name)
            before = self._observed.pop(name, None)
            self.deletes += 1
            if self._on_write is not None:
                self._on_write(name, before, None)
            log.info("Route %s deleted: no reachable SAE of that name", name)
        return True

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        while True:
            timeout = None if self._clock() >= self._delete_after else self._delete_after
            wait = None if timeout is None else max(0.0, timeout - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except Exception as exc:
                log.warning("writing Routes failed (retrying in %.0f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX, delay * 2)
                self._wake.set()
            else:
                delay = _RETRY_FIRST


def _describe(spec: Mapping[str, Any]) -> str:
    if not spec.get("length"):
        return "local"
    path = " -> ".join(spec.get("path", []))
    return f"{path} (cost {spec.get('cost')}, {spec.get('length')} hops)"
