"""The webhook's one read of the cluster: the Sae a pod names, from the API server.

``ApiSaeDirectory`` is the ``webhooks.mutate.SaeDirectory`` that ``webhooks.main`` hands the
HTTP adapter, and ``webhooks.main`` runs its ``run`` (a list and watch of every namespace's
Saes) beside the server, so an admission finds its Sae in memory instead of waiting for a GET:
a burst of pods comes exactly when the API server is busiest, and the GET was most of an
admission's time (0.4 s on average for 50 pods at once on the real test nodes). A Sae the watch
has not shown (yet: created a moment ago, or the watch is down) is read with a GET, with a
timeout well inside the webhook's own, so a slow API server turns into a clear 503 denial
instead of the API server timing the webhook out. What is kept is what a GET would have said
a moment before; a Sae deleted in that moment leaves the pod as if it had been deleted just
after the pod was admitted, which could always happen. Every Sae read is checked with
``SaeView`` before use.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, Literal

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ConfigDict, Field

from qss_api import GROUP, SAES, VERSION
from qss_api.wire import BadMessage, SaeId, WireModel, check
from webhooks.injection import SaeRecord
from webhooks.mutate import SaeLookupError

# The MutatingWebhookConfiguration gives the webhook 5 s; the read gets at most this.
READ_TIMEOUT_SECONDS: Final = 2.0
# What the controller names an Automatic Sae's credentials Secret (the Sae CRD says so).
CREDENTIALS_SUFFIX: Final = "-credentials"
# The watch is ended by the API server after this and continued from where it was.
WATCH_SECONDS: Final = 300
# After the list or the watch failed, start again this much later (lookups use GETs meanwhile).
RELIST_SECONDS: Final = 2.0

log = logging.getLogger(__name__)


class _Loose(WireModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class SaeSpecView(_Loose):
    saeID: SaeId
    registration: Literal["Automatic", "Manual"] = "Automatic"
    credentialsSecretName: str | None = None


class SaeView(_Loose):
    spec: SaeSpecView


class SaeMetadata(_Loose):
    name: str
    namespace: str
    resourceVersion: str


class ListedSae(_Loose):
    metadata: SaeMetadata


class ListMetadata(_Loose):
    resourceVersion: str


class SaeList(_Loose):
    metadata: ListMetadata
    items: list[dict[str, Any]] = Field(default_factory=list)


def _record(namespace: str, name: str, body: Any) -> SaeRecord:
    """The record of a Sae read from the API server; ``SaeLookupError`` if it is unreadable."""
    try:
        sae = check(SaeView, body, what="Sae")
    except BadMessage as exc:
        raise SaeLookupError(f"Sae {namespace}/{name} is unreadable: {exc.message}") from None
    secret = sae.spec.credentialsSecretName
    if sae.spec.registration == "Automatic" or not secret:
        secret = f"{name}{CREDENTIALS_SUFFIX}"
    return SaeRecord(
        namespace=namespace, name=name, sae_id=sae.spec.saeID, credentials_secret=secret
    )


class ApiSaeDirectory:
    """Saes as the watch last showed them, else read (``get`` on ``saes``); ``run`` keeps the
    watch (``list`` and ``watch`` on ``saes``, every namespace).

    Reviews that GET the same Sae while a read of it is in flight share that read (a Deployment
    scaling up sends many pods naming one Sae at once).
    """

    def __init__(self, api: client.ApiClient, *, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._timeout = timeout
        self._in_flight: dict[tuple[str, str], asyncio.Task[SaeRecord | None]] = {}
        # (namespace, name) -> the Sae's record, for the Saes the watch showed readable.
        self._watched: dict[tuple[str, str], SaeRecord] = {}

    async def get(self, namespace: str, name: str) -> SaeRecord | None:
        key = (namespace, name)
        watched = self._watched.get(key)
        if watched is not None:
            return watched
        read = self._in_flight.get(key)
        if read is None:
            read = asyncio.create_task(
                self._read(namespace, name), name=f"read Sae {namespace}/{name}"
            )
            self._in_flight[key] = read
            read.add_done_callback(lambda done: self._done(key, done))
        # A review given up on (its connection closed) does not cancel the others' read.
        return await asyncio.shield(read)

    def _done(self, key: tuple[str, str], read: asyncio.Task[SaeRecord | None]) -> None:
        self._in_flight.pop(key, None)
        if not read.cancelled():
            read.exception()  # retrieved, even if every review waiting for it was given up on

    async def _read(self, namespace: str, name: str) -> SaeRecord | None:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, SAES, name, _request_timeout=self._timeout
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            hint = " (the webhook's service account needs get on saes)" if exc.status == 403 else ""
            raise SaeLookupError(
                f"reading Sae {namespace}/{name} failed: {exc.status} {exc.reason}{hint}"
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SaeLookupError(
                f"reading Sae {namespace}/{name} failed: the API server did not answer "
                f"({type(exc).__name__})"
            ) from None
        return _record(namespace, name, body)

    def _show(self, kind: str, body: Any) -> None:
        """One Sae as the list or the watch gave it (``kind``: ADDED, MODIFIED, DELETED)."""
        try:
            meta = check(ListedSae, body, what="Sae").metadata
        except BadMessage:
            return  # without a name there is nothing to key it by; lookups GET it
        key = (meta.namespace, meta.name)
        if kind == "DELETED":
            self._watched.pop(key, None)
            return
        try:
            self._watched[key] = _record(meta.namespace, meta.name, body)
        except SaeLookupError:
            # Unreadable: forgotten, so a lookup GETs it and denies the pod saying why.
            self._watched.pop(key, None)

    async def run(self) -> None:
        """List every Sae, then follow the watch, until cancelled; start again on failure."""
        while True:
            try:
                await self._list_and_watch()
            except (ApiException, aiohttp.ClientError, TimeoutError, BadMessage) as exc:
                reason = exc.status if isinstance(exc, ApiException) else type(exc).__name__
                log.warning(
                    "watching Saes stopped (%s); admissions read Saes with GETs until it is back"
                    " (needs list and watch on saes)",
                    reason,
                )
                self._watched = {}
                await asyncio.sleep(RELIST_SECONDS)

    async def _list_and_watch(self) -> None:
        async with asyncio.timeout(self._timeout * 5):
            body = await self._custom.list_cluster_custom_object(GROUP, VERSION, SAES)
        listed = check(SaeList, body, what="Sae list")
        self._watched = {}
        for item in listed.items:
            self._show("ADDED", item)
        version = listed.metadata.resourceVersion
        log.info("watching Saes: %d known", len(self._watched))
        while True:
            watcher = watch.Watch()
            try:
                async with watcher.stream(
                    self._custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    SAES,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                ) as stream:
                    async for event in stream:
                        kind = event.get("type") if isinstance(event, dict) else None
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._show(kind, event["raw_object"])
                        version = watcher.resource_version or version
            except ApiException as exc:
                if exc.status == 410:  # too old to continue from: list again
                    return
                raise
            finally:
                watcher.stop()
