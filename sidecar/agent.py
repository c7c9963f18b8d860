"""The sidecar's key loop: KeyRequests in, key files out, requests consumed.

``sidecar.main`` builds one ``Agent`` and runs it beside the loopback 014 endpoint. Each round
lists the KeyRequests this sidecar serves (``sidecar.keyrequests.selector``) and, oldest first:

- a request whose keys are in the volume already (its UID is in the ring's memory) is deleted;
- a Ready request's keys are read from its Secret, checked, added to the ring, published as a
  new snapshot of the volume (``sidecar.volume``), and then the request is deleted (its Secret
  goes with it);
- a Failed request is logged with its reason and deleted;
- a slave takes an unowned automatic request by making its pod the owner first.

A master then creates the next request when none is in flight and its refresh interval has
passed since the newest key. Rounds run when a watch on the requests reports a change, when the
refresh is due, and at least every ``RESYNC_SECONDS``.

Exactly once across restarts: the snapshot and the memory of delivered requests are published
in one atomic step, and a request is deleted only after that step; a sidecar killed anywhere in
between finds, on restart, either the request undelivered (it delivers it) or delivered (it only
deletes it). Pending requests survive in the API server; the ring survives in the volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from sidecar import metrics
from sidecar.keyrequests import (
    BadDelivery,
    KeyRequestView,
    claim_patch,
    concerns,
    delivered_keys,
    failure_code,
    failure_reason,
    master_request,
    owned_by_pod,
    read_view,
    selector,
)
from sidecar.keyring import Ring
from sidecar.kube import KubeError
from sidecar.settings import SidecarSettings
from sidecar.volume import KeyVolume

log = logging.getLogger(__name__)

# The longest a round waits without a watch event: bounds how late a missed event is noticed.
RESYNC_SECONDS: Final = 5.0
# After a failed master request (no keys in time, the peer unknown yet), ask again this soon
# (or at the refresh, if that is sooner).
RETRY_SECONDS: Final = 5.0


class KeyRequestApi(Protocol):
    """What the agent needs of the API server (``sidecar.kube.KubeKeyRequests``)."""

    async def list_requests(self, label_selector: str) -> list[dict[str, Any]]: ...

    async def create(self, body: dict[str, Any]) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def claim(self, name: str, patch: list[dict[str, Any]]) -> bool: ...

    async def secret_data(self, name: str) -> dict[str, str] | None: ...

    async def watch(self, label_selector: str, on_change: Callable[[], None]) -> None: ...


class Agent:
    def __init__(
        self,
        settings: SidecarSettings,
        api: KeyRequestApi,
        volume: KeyVolume,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings, self._api, self._volume = settings, api, volume
        self._clock = clock
        self._wake = asyncio.Event()
        self.ring = Ring()
        self._next_request = clock()

    def restore(self) -> None:
        """Resume from the volume: the keys held and the requests delivered before a restart.
        ``VolumeError``/``RingError`` if the volume holds something else (never guess: a wrong
        guess could serve a key twice)."""
        self._volume.tidy()
        snapshot = self._volume.read_current()
        if snapshot is not None:
            self.ring = Ring.from_files(snapshot.files)
            log.info(
                "resumed with %d keys (generation %d) from %s",
                len(self.ring.keys),
                self.ring.generation,
                snapshot.directory.name,
            )
        if self.ring.current is not None:
            self._not_before(self.ring.current.issued_at)
        metrics.holding(len(self.ring.keys))

    def _not_before(self, asked_at: str) -> None:
        """A master asks again no sooner than its refresh interval after ``asked_at`` (RFC
        3339): the newest key's time after a restart, or a request's creation time."""
        refresh = self._settings.refresh_seconds
        if refresh is None:
            return
        then = dt.datetime.fromisoformat(asked_at.replace("Z", "+00:00"))
        age = (dt.datetime.now(dt.UTC) - then).total_seconds()
        self._next_request = max(self._next_request, self._clock() + max(0.0, refresh - age))

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; API failures are logged and retried."""
        watcher = asyncio.create_task(
            self._api.watch(selector(self._settings), self.wake), name="qss-sidecar-watch"
        )
        stopping = asyncio.create_task(stop.wait(), name="qss-sidecar-stop")
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.round()
                except KubeError as exc:
                    metrics.failed("ApiError")
                    log.warning("round failed, retrying: %s", exc)
                wait = RESYNC_SECONDS
                if self._settings.role == "master":
                    wait = max(0.0, min(wait, self._next_request - self._clock()))
                woken = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {woken, stopping}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
        finally:
            for task in (watcher, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def round(self) -> None:
        """One pass over the requests (see the module docstring)."""
        settings = self._settings
        listed = await self._api.list_requests(selector(settings))
        requests: list[tuple[KeyRequestView, dict[str, Any]]] = []
        for obj in listed:
            view = read_view(obj)
            if (
                view is not None
                and concerns(view, settings)
                and not view.metadata.deletionTimestamp
            ):
                requests.append((view, obj))
        requests.sort(key=lambda r: (r[0].metadata.creationTimestamp, r[0].metadata.name))
        in_flight = False
        for request, obj in requests:
            name = request.metadata.name
            if request.metadata.uid in self.ring.delivered:
                await self._api.delete(name)
                continue
            if settings.role == "slave":
                owned = owned_by_pod(request, settings)
                if owned is False:
                    continue  # another pod of this Sae took it
                if owned is None:
                    if not await self._api.claim(name, claim_patch(request, settings)):
                        self.wake()  # it changed under us: look again soon
                        continue
                    log.info("took KeyRequest %s", name)
            phase = request.status.phase
            if phase == "Ready":
                await self._deliver(request)
                self._not_before(request.metadata.creationTimestamp)
            elif phase == "Failed":
                log.warning("KeyRequest %s failed (%s); deleting it", name, failure_reason(obj))
                metrics.failed(failure_code(obj))
                await self._api.delete(name)
                if settings.role == "master":
                    self._next_request = min(self._next_request, self._clock() + RETRY_SECONDS)
            else:
                in_flight = True
        if settings.role == "master" and not in_flight and self._clock() >= self._next_request:
            body = master_request(settings)
            await self._api.create(body)
            assert settings.refresh_seconds is not None
            self._next_request = self._clock() + settings.refresh_seconds
            log.info(
                "asked for %s keys in KeyRequest %s", settings.key_number, body["metadata"]["name"]
            )

    async def _deliver(self, request: KeyRequestView) -> None:
        name, secret = request.metadata.name, request.status.secretName
        data = await self._api.secret_data(secret) if secret else None
        try:
            if data is None:
                raise BadDelivery(f"its Secret {secret} does not exist")
            keys = delivered_keys(request, data, self._settings)
        except BadDelivery as exc:
            # Never serve what does not check out; the request is consumed so it does not pile up.
            log.error("KeyRequest %s is Ready but unusable, deleting it: %s", name, exc)
            metrics.failed("BadDelivery")
            await self._api.delete(name)
            return
        ring = self.ring.add(
            keys, request_uid=request.metadata.uid, max_keys=self._settings.max_keys
        )
        await asyncio.to_thread(self._volume.publish, ring.files(), ring.links())
        self.ring = ring
        metrics.rotated(keys=len(keys), held=len(ring.keys))
        log.info(
            "wrote %d keys from KeyRequest %s (holding %d, generation %d)",
            len(keys),
            name,
            len(ring.keys),
            ring.generation,
        )
        await self._api.delete(name)
