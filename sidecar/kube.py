"""The API calls the sidecar makes, all in the pod's namespace, over a small aiohttp client.

``sidecar.agent`` uses ``KubeKeyRequests``; the RBAC it needs (``kustomize/webhook``'s
ClusterRole ``kube-qss-sidecar``, bound in the app's namespace) is exactly these calls:
keyrequests list/watch/create/patch/delete, secrets get. ``sidecar.service`` makes the client
with ``connect``.

Why not kubernetes_asyncio, which the controllers use: the sidecar makes six kinds of call, and
importing the generated client costs about 0.4 s of CPU, nearly half of the sidecar's start, on
a node that gives a sidecar little CPU; the pod's app waits for it. Everything read from the API
server is checked before use (the list's envelope and the Secret here, each KeyRequest by
``sidecar.keyrequests.read_view``, each watch event's type). Errors become ``KubeError`` with the
HTTP status and reason, never a response body (a key Secret's body is key material).

Credentials: in a pod, the sidecar's own service-account token and the cluster's CA (the
projected volume at ``qss_api.sidecar.TOKEN_DIR``), the token read again for every call, since
the kubelet renews it; the API server's address from ``KUBERNETES_SERVICE_HOST``/``_PORT`` (the
settings). Outside a pod (the tests' sidecar processes), a kubeconfig whose user is a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp
from pydantic import ConfigDict, JsonValue

from qss_api import GROUP, KEYREQUESTS, VERSION
from qss_api import sidecar as names
from qss_api.wire import BadMessage, WireModel, decode

log = logging.getLogger(__name__)

# Every call gives up after this; the agent's next round tries again.
REQUEST_TIMEOUT: Final = 10.0
# Watches end after this (the server closes them), then start again.
WATCH_SECONDS: Final = 60
WATCH_RETRY_SECONDS: Final = 1.0
# A list of KeyRequests or a Secret larger than this is not one the sidecar asked for.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
# One watch event (one KeyRequest) larger than this is not a KeyRequest.
MAX_EVENT_BYTES: Final = 1024 * 1024

TOKEN_FILE: Final = Path(names.TOKEN_DIR) / "token"
CA_FILE: Final = Path(names.TOKEN_DIR) / "ca.crt"


class KubeError(Exception):
    """An API call failed; retrying later may help. ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeConfigError(Exception):
    """The sidecar cannot tell how to reach the API server; the message says what to fix."""


class _Loose(WireModel):
    # Kubernetes objects carry much the sidecar does not read; what it declares is strict.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ObjectList(_Loose):
    """A list answer; each item is checked by the caller (one bad item spoils only itself)."""

    items: list[dict[str, JsonValue]] | None = None


class SecretView(_Loose):
    data: dict[str, str] | None = None


class WatchEvent(_Loose):
    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


@dataclass(frozen=True)
class Access:
    """Where the API server is and how the sidecar proves who it is."""

    server: str
    ca_file: Path | None = None
    ca_data: str | None = None  # PEM
    token: str | None = None
    token_file: Path | None = None

    def read_token(self) -> str:
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        return self.token_file.read_text().strip()


def in_cluster(api_server: str) -> Access:
    return Access(server=api_server, ca_file=CA_FILE, token_file=TOKEN_FILE)


def from_kubeconfig(path: Path) -> Access:
    """The current context of a kubeconfig whose user authenticates with a bearer token."""
    import yaml  # only outside pods: not worth its import time at a pod's start

    try:
        document = yaml.safe_load(path.read_text())
        contexts = {c["name"]: c["context"] for c in document["contexts"]}
        context = contexts[document["current-context"]]
        cluster = {c["name"]: c["cluster"] for c in document["clusters"]}[context["cluster"]]
        user = {u["name"]: u["user"] for u in document["users"]}[context["user"]]
        server = str(cluster["server"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise KubeConfigError(f"kubeconfig {path} is unreadable ({type(exc).__name__})") from None
    token, token_file = user.get("token"), user.get("tokenFile")
    if token is None and token_file is None:
        raise KubeConfigError(
            f"kubeconfig {path}: the sidecar authenticates with a bearer token only; give its "
            "user a token or tokenFile"
        )
    ca_file = cluster.get("certificate-authority")
    ca_data = cluster.get("certificate-authority-data")
    try:
        ca_pem = None if ca_data is None else base64.b64decode(ca_data).decode()
    except (ValueError, TypeError):
        raise KubeConfigError(
            f"kubeconfig {path}: certificate-authority-data is not base64 PEM"
        ) from None
    return Access(
        server=server,
        ca_file=None if ca_file is None else (path.parent / ca_file),
        ca_data=ca_pem,
        token=None if token is None else str(token),
        token_file=None if token_file is None else (path.parent / token_file),
    )


class KubeApi:
    """HTTPS calls to the API server with the sidecar's token."""

    def __init__(self, access: Access) -> None:
        self._access = access
        try:
            context = ssl.create_default_context(
                cafile=None if access.ca_file is None else str(access.ca_file),
                cadata=access.ca_data,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KubeConfigError(
                f"the API server's CA cannot be read ({type(exc).__name__}); is the sidecar's "
                f"token volume mounted at {names.TOKEN_DIR}?"
            ) from None
        self._base = access.server.rstrip("/")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        try:
            token = self._access.read_token()
        except OSError as exc:
            raise KubeError(f"the sidecar's token cannot be read ({type(exc).__name__})") from None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    async def call(
        self,
        action: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """One call: its status and body (a 2xx), or ``KubeError`` naming ``action``."""
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers(None if body is None else content_type)
        try:
            async with (
                asyncio.timeout(REQUEST_TIMEOUT),
                self._session.request(
                    method, self._base + path, params=params, data=data, headers=headers
                ) as response,
            ):
                if response.status >= 300:
                    raise KubeError(
                        f"{action} failed: {response.status} {response.reason}"
                        + (
                            " (bind ClusterRole kube-qss-sidecar to the pod's service account)"
                            if response.status == 403
                            else ""
                        ),
                        response.status,
                    )
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise KubeError(f"{action} failed: the answer is too large")
                    chunks.append(chunk)
                return response.status, b"".join(chunks)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeError(f"{action} failed: {type(exc).__name__}") from None

    async def watch(
        self, path: str, params: Mapping[str, str], on_event: Callable[[], None]
    ) -> None:
        """One watch, until the server ends it; ``on_event`` for every event read."""
        query = {**params, "watch": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = aiohttp.ClientTimeout(total=WATCH_SECONDS + REQUEST_TIMEOUT)
        async with self._session.get(
            self._base + path, params=query, headers=self._headers(), timeout=timeout
        ) as response:
            if response.status >= 300:
                raise KubeError(f"watch failed: {response.status} {response.reason}")
            while line := await response.content.readline():
                if len(line) > MAX_EVENT_BYTES or not line.endswith(b"\n"):
                    raise KubeError("watch failed: an event is too large or cut short")
                try:
                    event = decode(WatchEvent, line, what="watch event")
                except BadMessage as exc:
                    raise KubeError(f"watch failed: {exc.message}") from None
                if event.type == "ERROR":  # e.g. 410 Gone: start a new watch
                    return
                on_event()

    async def close(self) -> None:
        await self._session.close()


async def connect(kubeconfig: str | None, api_server: str | None) -> KubeApi:
    """A client: the kubeconfig if given, else the sidecar's own service-account token."""
    if kubeconfig is not None:
        return KubeApi(from_kubeconfig(Path(kubeconfig)))
    if api_server is None:
        raise KubeConfigError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: run the sidecar in "
            "a pod, or give it KUBECONFIG"
        )
    return KubeApi(in_cluster(api_server))


class KubeKeyRequests:
    """KeyRequests and their Secrets in one namespace."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self._api = api
        self.namespace = namespace
        ns = quote(namespace, safe="")
        self._requests = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{KEYREQUESTS}"
        self._secrets = f"/api/v1/namespaces/{ns}/secrets"

    async def list_requests(self, label_selector: str) -> list[dict[str, Any]]:
        _, body = await self._api.call(
            "listing KeyRequests",
            "GET",
            self._requests,
            params={"labelSelector": label_selector},
        )
        try:
            listed = decode(ObjectList, body, what="KeyRequest list")
        except BadMessage as exc:
            raise KubeError(f"listing KeyRequests failed: {exc.message}") from None
        return list(listed.items or [])

    async def create(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        await self._api.call(f"creating KeyRequest {name}", "POST", self._requests, body=body)

    async def delete(self, name: str) -> None:
        """Delete a request (gone already is fine); its Secret follows (ownerReference)."""
        try:
            await self._api.call(
                f"deleting KeyRequest {name}",
                "DELETE",
                f"{self._requests}/{quote(name, safe='')}",
                params={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def claim(self, name: str, patch: list[dict[str, Any]]) -> bool:
        """Apply a guarded JSON Patch; False if the guard failed (someone changed it first)."""
        try:
            await self._api.call(
                f"claiming KeyRequest {name}",
                "PATCH",
                f"{self._requests}/{quote(name, safe='')}",
                body=patch,
                content_type="application/json-patch+json",
            )
        except KubeError as exc:
            # 422: the resourceVersion test failed; 409: a conflict; 404: gone meanwhile.
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    async def secret_data(self, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values), or None if it does not exist."""
        action = f"reading Secret {name}"
        try:
            _, body = await self._api.call(action, "GET", f"{self._secrets}/{quote(name, safe='')}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        try:
            secret = decode(SecretView, body, what="Secret")
        except BadMessage:
            # The problems could quote the body, which holds keys: say only that it is wrong.
            raise KubeError(f"{action} failed: the answer is not a Secret") from None
        return dict(secret.data or {})

    async def watch(self, label_selector: str, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever a matching request changes, until cancelled."""
        while True:
            try:
                await self._api.watch(self._requests, {"labelSelector": label_selector}, on_change)
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("KeyRequest watch ended (%s); starting again", type(exc).__name__)
                await asyncio.sleep(WATCH_RETRY_SECONDS)
