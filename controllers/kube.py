"""A thin async client for the Kubernetes API, shared by the controller and the QKDM.

Status is written with server-side apply under a field manager per writer (``qss-controller``,
``qss-qkdm``), so two writers of one object's status own their own fields and condition types
and never overwrite each other's; the QKDM workloads the controller runs are applied the same
way. Callers pass plain dicts; nothing here logs object contents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from qss_api import API_VERSION, GROUP, RESOURCES, VERSION

APPLY = "application/apply-patch+yaml"

# What a call to the API server raises when it fails for now (429 or 5xx, a write refused, no
# connection, no answer in time): worth trying again soon.
API_FAILURES = (ApiException, aiohttp.ClientError, TimeoutError)


def api_failure(exc: BaseException) -> str:
    """One of ``API_FAILURES`` in a few words: the HTTP status and reason, or the error's type
    (never a response body)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__


class NotFoundError(LookupError):
    """The object does not exist (HTTP 404)."""


class AlreadyExistsError(Exception):
    """An object of that name exists already (HTTP 409 on create)."""


class SecretVanished(Exception):
    """A create found the Secret existing (409), but it was gone when read back."""


async def create_secret_or_read(
    core: client.CoreV1Api, namespace: str, body: Any
) -> tuple[client.V1Secret, bool]:
    """Create a Secret (``body``: a V1Secret or a plain dict); if one of that name exists
    already, read it instead: (the Secret, whether this call created it). The one way every
    component creates Secrets that another writer (or an earlier try) may have created first.
    Raises ``SecretVanished`` if it was deleted between the two calls, and the API's other
    errors as they are."""
    try:
        return await core.create_namespaced_secret(namespace, body), True
    except ApiException as exc:
        if exc.status != 409:
            raise
    name = body.metadata.name if isinstance(body, client.V1Secret) else body["metadata"]["name"]
    try:
        return await core.read_namespaced_secret(name, namespace), False
    except ApiException as exc:
        if exc.status == 404:
            raise SecretVanished(
                f"Secret {namespace}/{name} was created and deleted again meanwhile"
            ) from None
        raise


@dataclass(frozen=True)
class SecretRecord:
    """A Secret as ``Kube.create_secret`` and ``Kube.read_secret`` return it."""

    uid: str
    owner_uids: tuple[str, ...]
    annotations: Mapping[str, str]
    data: Mapping[str, str] = field(repr=False)  # base64 values, as the API has them
    created: bool = False  # by this call


def _record(secret: client.V1Secret, created: bool) -> SecretRecord:
    owners = secret.metadata.owner_references or []
    return SecretRecord(
        uid=str(secret.metadata.uid),
        owner_uids=tuple(str(o.uid) for o in owners),
        annotations=dict(secret.metadata.annotations or {}),
        data=dict(secret.data or {}),
        created=created,
    )


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """An API client from a kubeconfig file; with None, the pod's service account if in a pod,
    else the default kubeconfig."""
    cfg = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration=cfg)
        except config.ConfigException:
            pass
    await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


@dataclass
class Kube:
    """The calls our components make, over one ``ApiClient``."""

    api: client.ApiClient
    field_manager: str

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        try:
            if namespace is None:
                obj = await self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
            else:
                obj = await self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name
                )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"{plural}/{name} not found") from None
            raise
        return cast(dict[str, Any], obj)

    async def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            result = await self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        else:
            result = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural
            )
        return cast(list[dict[str, Any]], result.get("items", []))

    async def apply_status(
        self,
        plural: str,
        name: str,
        status: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> None:
        """Server-side apply ``status`` (the fields this writer owns) on the status subresource."""
        kind, _namespaced = RESOURCES[plural]
        metadata: dict[str, Any] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        body = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "status": status}
        kwargs: dict[str, Any] = {
            "field_manager": self.field_manager,
            "force": True,
            "_content_type": APPLY,
        }
        try:
            if namespace is None:
                await self.custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, plural, name, body, **kwargs
                )
            else:
                await self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body, **kwargs
                )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"{plural}/{name} not found") from None
            raise

    async def apply(self, plural: str, name: str, body: Mapping[str, Any]) -> None:
        """Server-side apply a whole cluster-scoped custom object (created if missing); the
        fields in ``body`` become this writer's, taken over from anyone else (force)."""
        kwargs: dict[str, Any] = {
            "field_manager": self.field_manager,
            "force": True,
            "_content_type": APPLY,
        }
        await self.custom.patch_cluster_custom_object(
            GROUP, VERSION, plural, name, dict(body), **kwargs
        )

    async def delete(self, plural: str, name: str) -> None:
        """Delete a cluster-scoped custom object; one that is gone already is fine."""
        try:
            await self.custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def create(
        self, plural: str, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """Create a custom object; ``AlreadyExistsError`` if the name is taken."""
        try:
            if namespace is None:
                obj = await self.custom.create_cluster_custom_object(
                    GROUP, VERSION, plural, dict(body)
                )
            else:
                obj = await self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, dict(body)
                )
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExistsError(f"{plural}/{body['metadata']['name']} exists") from None
            raise
        return cast(dict[str, Any], obj)

    async def read_secret(self, name: str, namespace: str) -> SecretRecord | None:
        """A Secret, or None if it does not exist."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _record(secret, False)

    async def create_secret(self, body: Mapping[str, Any]) -> SecretRecord:
        """Create a Secret, or read the one of that name that exists already
        (``SecretRecord.created`` says which)."""
        namespace = str(body["metadata"]["namespace"])
        secret, created = await create_secret_or_read(self.core, namespace, dict(body))
        return _record(secret, created)

    async def pod_template(self, name: str, namespace: str) -> dict[str, Any]:
        """A PodTemplate as a plain dict (API field names); ``NotFoundError`` if missing."""
        try:
            obj = await self.core.read_namespaced_pod_template(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"PodTemplate {namespace}/{name} not found") from None
            raise
        return cast(dict[str, Any], self.api.sanitize_for_serialization(obj))

    async def apply_deployment(self, body: Mapping[str, Any]) -> None:
        """Server-side apply a Deployment: created if missing, else this writer's fields set."""
        metadata = body["metadata"]
        kwargs: dict[str, Any] = {
            "field_manager": self.field_manager,
            "force": True,
            "_content_type": APPLY,
        }
        await client.AppsV1Api(self.api).patch_namespaced_deployment(
            metadata["name"], metadata["namespace"], dict(body), **kwargs
        )
