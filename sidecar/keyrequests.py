"""The KeyRequests a sidecar works with, as pure functions: the master request it creates, the
checked view of a listed request, which requests are its own, and the keys in a request's
Secret.

Called by ``sidecar.agent``. Every request the sidecar creates or takes is owned by its pod
(an ownerReference), so when the pod goes, the garbage collector removes whatever the sidecar
had not consumed yet, and the request's Secret with it.

- Master: the sidecar creates ``qss-<pod>-<random>`` in its namespace, labelled with its pod's
  UID, for ``key-number`` keys of ``key-size`` bits shared with the peer SAE.
- Slave: the node creates a request labelled ``qss.dev/automatic: "true"`` for every batch a
  master hands over; the sidecar takes those for its Sae from its peer, claiming each by adding
  its pod as owner (guarded by the resourceVersion, so two pods of one Sae never both take one).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field

from qss_api import (
    API_VERSION,
    KIND_KEYREQUEST,
    LABEL_AUTOMATIC,
    LABEL_NAME,
    LABEL_PART_OF,
    PART_OF,
    SECRET_KEYS_JSON,
)
from qss_api.etsi014 import KeyContainer
from qss_api.wire import BadMessage, SaeId, Uuid, WireModel, check, decode
from sidecar.keyring import HeldKey, now_rfc3339
from sidecar.settings import SidecarSettings

# The pod whose sidecar created a master request.
LABEL_POD_UID: Final = "qss.dev/sidecar-pod-uid"
NAME_LABEL_VALUE: Final = "qss-sidecar"
_REASON: Final = re.compile(r"[A-Z][A-Za-z]{0,63}")


class _Loose(WireModel):
    # Kubernetes objects carry much the sidecar does not read (kopf's annotations, managed
    # fields); what it declares is strict.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class OwnerReference(_Loose):
    uid: str
    kind: str


class Metadata(_Loose):
    name: str
    namespace: str
    uid: Uuid
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    ownerReferences: list[OwnerReference] = Field(default_factory=list)


class Spec(_Loose):
    sae: str
    slaveSaeID: SaeId | None = None
    masterSaeID: SaeId | None = None
    keyIDs: list[Uuid] | None = None
    number: int | None = None
    size: int | None = None


class Status(_Loose):
    phase: Literal["Pending", "Reserving", "Ready", "Failed"] | None = None
    secretName: str | None = None
    keyIDs: list[Uuid] | None = None


class KeyRequestView(_Loose):
    metadata: Metadata
    spec: Spec
    status: Status = Field(default_factory=Status)


class BadDelivery(ValueError):
    """A Ready request whose Secret does not hold what the request says it delivered."""


def failure_reason(obj: Mapping[str, Any]) -> str:
    """The Ready condition's reason and message of a Failed request (never key material)."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return f"{condition.get('reason')}: {condition.get('message')}"
    return "no reason given"


def failure_code(obj: Mapping[str, Any]) -> str:
    """Just the Ready condition's reason of a Failed request, if it is a CamelCase word (it
    becomes a metric label, which must stay one of a few values); else ``Other``."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            reason = condition.get("reason")
            if isinstance(reason, str) and _REASON.fullmatch(reason):
                return reason
    return "Other"


def owner(settings: SidecarSettings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "name": settings.pod_name, "uid": settings.pod_uid}


def master_request(settings: SidecarSettings) -> dict[str, Any]:
    """A new master KeyRequest for one refresh."""
    name = f"qss-{settings.pod_name[:40].rstrip('-.')}-{secrets.token_hex(4)}"
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_KEYREQUEST,
        "metadata": {
            "name": name,
            "namespace": settings.pod_namespace,
            "labels": {
                LABEL_NAME: NAME_LABEL_VALUE,
                LABEL_PART_OF: PART_OF,
                LABEL_POD_UID: settings.pod_uid,
            },
            "ownerReferences": [owner(settings)],
        },
        "spec": {
            "sae": settings.sae,
            "slaveSaeID": settings.peer_sae_id,
            "number": settings.key_number,
            "size": settings.key_size,
            "timeoutSeconds": settings.request_timeout_seconds,
        },
    }


def selector(settings: SidecarSettings) -> str:
    """The label selector of the requests this sidecar looks at."""
    if settings.role == "master":
        return f"{LABEL_POD_UID}={settings.pod_uid}"
    return f"{LABEL_AUTOMATIC}=true"


def concerns(request: KeyRequestView, settings: SidecarSettings) -> bool:
    """Whether a listed request is one this sidecar serves."""
    if settings.role == "master":
        return request.metadata.labels.get(LABEL_POD_UID) == settings.pod_uid
    return (
        request.spec.sae == settings.sae
        and request.spec.masterSaeID == settings.peer_sae_id
        and request.metadata.labels.get(LABEL_AUTOMATIC) == "true"
    )


def owned_by_pod(request: KeyRequestView, settings: SidecarSettings) -> bool | None:
    """True if this pod owns the request, False if another pod does, None if no pod does."""
    pods = [r.uid for r in request.metadata.ownerReferences if r.kind == "Pod"]
    if not pods:
        return None
    return settings.pod_uid in pods


def claim_patch(request: KeyRequestView, settings: SidecarSettings) -> list[dict[str, Any]]:
    """JSON Patch making this pod the request's owner, only if nobody changed it since read."""
    return [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": request.metadata.resourceVersion,
        },
        {"op": "add", "path": "/metadata/ownerReferences", "value": [owner(settings)]},
    ]


def read_view(obj: Any) -> KeyRequestView | None:
    """A listed request, checked; None if it is not one this sidecar can use."""
    try:
        return check(KeyRequestView, obj, what="KeyRequest")
    except BadMessage:
        return None


def delivered_keys(
    request: KeyRequestView, secret_data: Mapping[str, str], settings: SidecarSettings
) -> list[HeldKey]:
    """The keys of a Ready request, from its Secret, checked against what the request says."""
    raw = secret_data.get(SECRET_KEYS_JSON)
    if raw is None:
        raise BadDelivery(f"Secret {request.status.secretName} has no {SECRET_KEYS_JSON}")
    try:
        container = decode(
            KeyContainer, base64.b64decode(raw, validate=True), what=SECRET_KEYS_JSON
        )
    except (BadMessage, binascii.Error) as exc:
        raise BadDelivery(
            f"{SECRET_KEYS_JSON} of Secret {request.status.secretName} is malformed: {exc}"
        ) from None
    ids = [k.key_ID.lower() for k in container.keys]
    if request.status.keyIDs is not None and sorted(ids) != sorted(request.status.keyIDs):
        raise BadDelivery(
            f"Secret {request.status.secretName} holds other keys than the request names"
        )
    if len(set(ids)) != len(ids):
        raise BadDelivery(f"Secret {request.status.secretName} names a key twice")
    if settings.role == "master":
        master, slave = settings.sae_id, settings.peer_sae_id
    else:
        master, slave = settings.peer_sae_id, settings.sae_id
    issued = now_rfc3339()
    keys = [
        HeldKey(
            key_id=key_id,
            material=base64.b64decode(k.key),
            master_sae_id=master,
            slave_sae_id=slave,
            issued_at=issued,
        )
        for key_id, k in zip(ids, container.keys, strict=True)
    ]
    if settings.role == "master" and any(k.size_bits != settings.key_size for k in keys):
        raise BadDelivery(
            f"Secret {request.status.secretName} holds keys of another size than asked for"
        )
    if any(k.size_bits == 0 for k in keys):
        raise BadDelivery(f"Secret {request.status.secretName} holds an empty key")
    return keys
