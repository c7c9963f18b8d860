"""Kubernetes Events of the controller and the QKDM, deduplicated: one ``events.k8s.io/v1``
Event per (object, type, reason) and burst, its repeats counted in the Event's ``series``.

Everything an operator must notice goes through one ``EventRecorder`` per process (the mains
create it in their kopf startup handler and put it in the memo): link up/down, LSAs dropped,
peer untrusted or unreachable, stream state changes, QBER aborts and KSID changes, key
scarcity, SAE credentials issued or revoked, route changes.

The rule (also in docs/observability.md): the first occurrence of a (regarding object, type,
reason) creates an Event. A repeat less than ``burst_window`` (10 minutes) after the previous
occurrence creates none: it is counted into that Event's ``series`` (``count``,
``lastObservedTime``; the note stays the first occurrence's, as the API server keeps it), written
at once for the first repeat and then at most every ``series_interval`` (30 s, client-go's
series heartbeat). After a quiet
``burst_window`` the next occurrence starts a new Event. A link flapping a hundred times in a
minute is so two Events (LinkDown, LinkUp) whose counts say how often, not two hundred.

``record`` never blocks and never raises: the Events are written by a background task, and a
failed write is logged and retried with the next change. Notes are sentences about state; they
never carry key material, key IDs or credentials (callers build them from names and counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from qss_api import API_VERSION

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

# The API server refuses longer notes (events.k8s.io/v1: 1 kB).
MAX_NOTE: Final = 1024
# Events of cluster-scoped objects (QKDLinks, KeyStreams, Routes) go where kopf put them.
CLUSTER_EVENTS_NAMESPACE: Final = "default"
_MERGE_PATCH: Final[dict[str, Any]] = {"_content_type": "application/merge-patch+json"}


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object an Event is about."""

    kind: str
    name: str
    namespace: str | None = None  # None: cluster-scoped
    uid: str | None = None
    api_version: str = API_VERSION

    @classmethod
    def of(cls, body: Any) -> Regarding:
        """The reference of a Kubernetes object (a dict or kopf's ``body``)."""
        meta = body.get("metadata") or {}
        return cls(
            kind=str(body.get("kind", "")),
            name=str(meta.get("name", "")),
            namespace=meta.get("namespace") or None,
            uid=meta.get("uid") or None,
            api_version=str(body.get("apiVersion", API_VERSION)),
        )

    def as_api(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


class EventSink(Protocol):
    """What the services that post Events need of the recorder (``EventRecorder.record``)."""

    def record(
        self,
        regarding: Regarding,
        *,
        type: EventType,
        reason: str,
        note: str,
        action: str = "Reconcile",
    ) -> None: ...


@dataclass(slots=True)
class _Series:
    regarding: Regarding
    type: EventType
    reason: str
    action: str
    note: str
    count: int
    first: dt.datetime
    last: dt.datetime
    last_seen: float  # on the recorder's clock
    name: str | None = None  # the Event, once created
    written: int = 0  # the count the API server has
    written_at: float = float("-inf")


@dataclass
class EventRecorder:
    """Creates and updates Events in the background (``start``, ``aclose``)."""

    api: client.ApiClient
    controller: str  # reportingController, e.g. qss.dev/controller
    instance: str  # reportingInstance: which process (node ID, stream)
    burst_window: float = 600.0
    series_interval: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _series: dict[tuple[str, str, str, str, str], _Series] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closing: bool = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qss-event-recorder")

    async def aclose(self, *, timeout: float = 5.0) -> None:
        """Write what is pending (bounded by ``timeout``), then stop."""
        task, self._task = self._task, None
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                if task is not None:
                    await task  # it ends after its current flush, never half way through a write
                await self.flush(final=True)
        except TimeoutError:
            log.warning("some Events were not written before the recorder stopped")
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def record(
        self,
        regarding: Regarding,
        *,
        type: EventType,
        reason: str,
        note: str,
        action: str = "Reconcile",
    ) -> None:
        """Note an occurrence; the Event is written (or its series counted) in the background."""
        now, wall = self.clock(), dt.datetime.now(dt.UTC)
        key = (regarding.kind, regarding.namespace or "", regarding.name, type, reason)
        series = self._series.get(key)
        if series is None or now - series.last_seen >= self.burst_window:
            self._series[key] = _Series(
                regarding=regarding,
                type=type,
                reason=reason,
                action=action,
                note=note[:MAX_NOTE],
                count=1,
                first=wall,
                last=wall,
                last_seen=now,
            )
        else:
            series.count += 1
            series.last, series.last_seen = wall, now
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            delay = await self.flush()
            if delay is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.set()

    async def flush(self, *, final: bool = False) -> float | None:
        """Write every Event that is due; the seconds until the next is due, if any waits."""
        now = self.clock()
        wait: float | None = None
        for key, series in list(self._series.items()):
            if series.name is not None and series.count == series.written:
                if now - series.last_seen >= self.burst_window:
                    del self._series[key]  # the burst is over
                continue
            due = series.written_at + self.series_interval
            if series.written <= 1 or final or now >= due:
                await self._write(series)
            else:
                wait = due - now if wait is None else min(wait, due - now)
        return wait

    async def _write(self, series: _Series) -> None:
        events = client.EventsV1Api(self.api)
        namespace = series.regarding.namespace or CLUSTER_EVENTS_NAMESPACE
        count = series.count
        try:
            if series.name is None:
                name = f"{series.regarding.name}.{secrets.token_hex(8)}"[-253:].lstrip(".")
                await events.create_namespaced_event(namespace, self._body(series, name))  # type: ignore[arg-type]
                series.name = name
            else:
                await events.patch_namespaced_event(
                    series.name, namespace, self._patch(series), **_MERGE_PATCH
                )
        except ApiException as exc:
            if exc.status == 404 and series.name is not None:
                series.name = None  # deleted (expired) meanwhile: start it again
            log.warning(
                "Event %s on %s %s not written (HTTP %s): %s",
                series.reason,
                series.regarding.kind,
                series.regarding.name,
                exc.status,
                str(exc.body)[:300],
            )
            return
        except Exception as exc:  # the API server may be unreachable; try with the next change
            log.warning("Event %s not written: %r", series.reason, exc)
            return
        series.written, series.written_at = count, self.clock()

    def _body(self, series: _Series, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name},
            "eventTime": _micro(series.first),
            "reportingController": self.controller,
            "reportingInstance": self.instance[:128],
            "action": series.action,
            "reason": series.reason,
            "type": series.type,
            "note": series.note,
            "regarding": series.regarding.as_api(),
        }
        if series.count > 1:
            body["series"] = {"count": series.count, "lastObservedTime": _micro(series.last)}
        return body

    def _patch(self, series: _Series) -> dict[str, Any]:
        # Only the series: the API server keeps an Event's note (and all else) as created.
        return {"series": {"count": series.count, "lastObservedTime": _micro(series.last)}}


def _micro(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
