"""The API calls the sidecar makes, over kubernetes_asyncio, all in the pod's namespace.

``sidecar.agent`` uses ``KubeKeyRequests``; the RBAC it needs (``kustomize/webhook``'s
ClusterRole ``kube-qss-sidecar``, bound in the app's namespace) is exactly these calls:
keyrequests list/watch/create/patch/delete, secrets get. Errors become ``KubeError`` with the
API's status and reason, never a response body (a key Secret's body is key material), and
kubernetes_asyncio's body logging is pinned off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from qss_api import GROUP, KEYREQUESTS, VERSION

logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)
log = logging.getLogger(__name__)

# Every call gives up after this; the agent's next round tries again.
REQUEST_TIMEOUT: Final = 10.0
# Watches end after this (the server closes them), then start again.
WATCH_SECONDS: Final = 60
WATCH_RETRY_SECONDS: Final = 1.0


class KubeError(Exception):
    """An API call failed; retrying later may help. ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """An API client: the kubeconfig if given, else the sidecar's own service-account token."""
    cfg = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def _failed(action: str, exc: BaseException) -> KubeError:
    if isinstance(exc, ApiException):
        hint = ""
        if exc.status == 403:
            hint = " (bind ClusterRole kube-qss-sidecar to the pod's service account)"
        return KubeError(f"{action} failed: {exc.status} {exc.reason}{hint}", exc.status)
    return KubeError(f"{action} failed: {type(exc).__name__}")


class KubeKeyRequests:
    """KeyRequests and their Secrets in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self.namespace = namespace

    async def _call(self, action: str, call: Awaitable[Any], *, missing_ok: bool = False) -> Any:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                return await call
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise _failed(action, exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _failed(action, exc) from None

    async def list_requests(self, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(
            "listing KeyRequests",
            self._custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, KEYREQUESTS, label_selector=label_selector
            ),
        )
        return cast(list[dict[str, Any]], result.get("items", []))

    async def create(self, body: dict[str, Any]) -> None:
        await self._call(
            f"creating KeyRequest {body['metadata']['name']}",
            self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, KEYREQUESTS, body
            ),
        )

    async def delete(self, name: str) -> None:
        """Delete a request (gone already is fine); its Secret follows (ownerReference)."""
        await self._call(
            f"deleting KeyRequest {name}",
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, KEYREQUESTS, name, propagation_policy="Background"
            ),
            missing_ok=True,
        )

    async def claim(self, name: str, patch: list[dict[str, Any]]) -> bool:
        """Apply a guarded JSON Patch; False if the guard failed (someone changed it first)."""
        try:
            await self._call(
                f"claiming KeyRequest {name}",
                self._custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, KEYREQUESTS, name, patch
                ),
            )
        except KubeError as exc:
            # 422: the resourceVersion test failed; 409: a conflict; 404: gone meanwhile.
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    async def secret_data(self, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values), or None if it does not exist."""
        secret = await self._call(
            f"reading Secret {name}",
            self._core.read_namespaced_secret(name, self.namespace),
            missing_ok=True,
        )
        return None if secret is None else dict(secret.data or {})

    async def watch(self, label_selector: str, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever a matching request changes, until cancelled."""
        while True:
            watcher = watch.Watch()
            try:
                async with watcher.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    KEYREQUESTS,
                    label_selector=label_selector,
                    timeout_seconds=WATCH_SECONDS,
                ) as stream:
                    async for _event in stream:
                        on_change()
            except (ApiException, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("KeyRequest watch ended (%s); starting again", type(exc).__name__)
                await asyncio.sleep(WATCH_RETRY_SECONDS)
            finally:
                watcher.stop()
