"""Reading and writing the Secrets that hold SAE credentials, with CoreV1Api.

Called by ``controllers.saes.reconcile`` only. Secret data is decoded to bytes and kept out of
``repr``; errors carry the API's status and reason, never a body (a Secret's body is key
material). A create that loses a race (409) returns the winner's Secret; an update names the
resourceVersion it read, so a concurrent change makes it fail with ``SecretConflict`` instead of
overwriting. Importing the module keeps kubernetes_asyncio from logging response bodies.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controllers.kube import SecretVanished, create_secret_or_read

# kubernetes_asyncio logs every response body at DEBUG ("response body: ..."), Secrets and their
# keys included, whenever the root logger is at DEBUG (qss-controller --verbose). Its own
# Configuration.debug switch guards a logger named "client", not this one, so pin it here.
logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)


class SecretAccessError(Exception):
    """The API server refused or failed a Secret call; retrying may help."""


class SecretConflict(SecretAccessError):
    """The Secret changed (or appeared, or vanished) under us; read it again and retry."""


@dataclass(frozen=True)
class Owner:
    """The object a Secret belongs to (its controller ownerReference)."""

    api_version: str
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class SecretData:
    namespace: str
    name: str
    type: str
    resource_version: str
    # uid of the Secret's controller ownerReference, if it has one.
    controller_uid: str | None
    data: Mapping[str, bytes] = field(repr=False)


def _error(action: str, namespace: str, name: str, exc: ApiException) -> SecretAccessError:
    hint = " (the controller needs get, create and patch on secrets)" if exc.status == 403 else ""
    return SecretAccessError(
        f"cannot {action} Secret {namespace}/{name}: {exc.status} {exc.reason}{hint}"
    )


def _decode(secret: client.V1Secret) -> SecretData:
    meta = secret.metadata
    controller = next(
        (ref.uid for ref in meta.owner_references or () if ref.controller),
        None,
    )
    return SecretData(
        namespace=str(meta.namespace),
        name=str(meta.name),
        type=str(secret.type or "Opaque"),
        resource_version=str(meta.resource_version or ""),
        controller_uid=controller,
        data={k: base64.b64decode(v) for k, v in (secret.data or {}).items()},
    )


def _encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}


async def read_secret(core: client.CoreV1Api, namespace: str, name: str) -> SecretData | None:
    """The Secret, or None if it does not exist."""
    try:
        secret = await core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _error("read", namespace, name, exc) from None
    return _decode(secret)


async def create_secret(
    core: client.CoreV1Api,
    *,
    namespace: str,
    name: str,
    type_: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str],
    owner: Owner,
) -> SecretData:
    """Create the Secret, controlled by ``owner``; if someone created it first, theirs."""
    body = client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            labels=dict(labels),
            # Without blockOwnerDeletion: it only matters to foreground deletion, and would need
            # update on saes/finalizers where OwnerReferencesPermissionEnforcement is on.
            owner_references=[
                client.V1OwnerReference(
                    api_version=owner.api_version,
                    kind=owner.kind,
                    name=owner.name,
                    uid=owner.uid,
                    controller=True,
                )
            ],
        ),
        type=type_,
        data=_encode(data),
    )
    try:
        secret, _ = await create_secret_or_read(core, namespace, body)
    except ApiException as exc:
        raise _error("create", namespace, name, exc) from None
    except SecretVanished as exc:
        raise SecretConflict(str(exc)) from None
    return _decode(secret)


async def update_secret_data(
    core: client.CoreV1Api, secret: SecretData, data: Mapping[str, bytes]
) -> SecretData:
    """Replace the entries ``data`` names in ``secret``, if it is still the version read."""
    patch = {"metadata": {"resourceVersion": secret.resource_version}, "data": _encode(data)}
    try:
        updated = await core.patch_namespaced_secret(secret.name, secret.namespace, patch)
    except ApiException as exc:
        if exc.status in (404, 409):
            raise SecretConflict(
                f"Secret {secret.namespace}/{secret.name} changed while being updated"
            ) from None
        raise _error("update", secret.namespace, secret.name, exc) from None
    return _decode(updated)
