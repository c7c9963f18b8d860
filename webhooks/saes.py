"""The webhook's one read of the cluster: the Sae a pod names, from the API server.

``ApiSaeDirectory`` is the ``webhooks.mutate.SaeDirectory`` that ``webhooks.main`` hands the
HTTP adapter. One GET per admitted pod, with a timeout well inside the webhook's own, so a slow
API server turns into a clear 503 denial instead of the API server timing the webhook out. The
Sae read back is checked with ``SaeView`` before use.
"""

from __future__ import annotations

import asyncio
from typing import Final, Literal

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ConfigDict

from qss_api import GROUP, SAES, VERSION
from qss_api.wire import BadMessage, SaeId, WireModel, check
from webhooks.injection import SaeRecord
from webhooks.mutate import SaeLookupError

# The MutatingWebhookConfiguration gives the webhook 5 s; the read gets at most this.
READ_TIMEOUT_SECONDS: Final = 2.0
# What the controller names an Automatic Sae's credentials Secret (the Sae CRD says so).
CREDENTIALS_SUFFIX: Final = "-credentials"


class _Loose(WireModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class SaeSpecView(_Loose):
    saeID: SaeId
    registration: Literal["Automatic", "Manual"] = "Automatic"
    credentialsSecretName: str | None = None


class SaeView(_Loose):
    spec: SaeSpecView


class ApiSaeDirectory:
    """Reads Saes with the webhook's service account (``get`` on ``saes``).

    Reviews that ask for the same Sae while a read of it is in flight share that read (a
    Deployment scaling up sends many pods naming one Sae at once); nothing is kept after it, so
    a Sae created or deleted a moment ago is seen as it is now.
    """

    def __init__(self, api: client.ApiClient, *, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._timeout = timeout
        self._in_flight: dict[tuple[str, str], asyncio.Task[SaeRecord | None]] = {}

    async def get(self, namespace: str, name: str) -> SaeRecord | None:
        key = (namespace, name)
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
