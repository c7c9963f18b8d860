"""What the KeyRequest service reads and writes, as pure functions: the request as a typed
value (``KeyRequestView.from_body``), the key Secret and the status.

The Secret holds one data entry per key ID (the raw key) and ``keys.json``, the keys in ETSI GS
QKD 014's key container format (``{"keys": [{"key_ID", "key"}]}``, keys in base64); it is owned
by its KeyRequest so that deleting the request deletes the keys. Status never carries key bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controllers.conditions import condition
from controllers.delivery.api import DeliveredKey
from qss_api import API_VERSION, KIND_KEYREQUEST, LABEL_NAME, LABEL_PART_OF, PART_OF

Role = Literal["Master", "Slave"]
KEYS_JSON = "keys.json"
LABEL_KEYREQUEST = "qss.dev/keyrequest"
# Where the keys of a key Secret came from: what a request resumed after a crash needs to
# finish (commit, hand over) without asking anything else.
ANNOTATION_STREAM = "qss.dev/key-stream"
ANNOTATION_PEER = "qss.dev/peer-node"


def role_of(spec: Mapping[str, Any]) -> Role:
    return "Slave" if spec.get("keyIDs") else "Master"


def secret_name(name: str, spec: Mapping[str, Any]) -> str:
    return str(spec.get("secretName") or f"{name}-keys")


def deadline_of(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> dt.datetime:
    created = dt.datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
    return created + dt.timedelta(seconds=int(spec.get("timeoutSeconds", 30)))


@dataclass(frozen=True, kw_only=True)
class KeyRequestView:
    """A KeyRequest as the service needs it, read once from the object."""

    name: str
    namespace: str
    uid: str
    generation: int
    deadline: dt.datetime
    role: Role
    sae: str  # the local Sae object's name
    secret: str
    slave_sae_id: str  # master requests
    number: int
    size: int
    master_sae_id: str  # slave requests
    key_ids: tuple[str, ...]
    phase: str | None
    start_time: str | None
    deleting: bool

    @property
    def finished(self) -> bool:
        return self.phase in ("Ready", "Failed")

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> KeyRequestView | None:
        """The request, or None for an object that is not one we can serve (no namespace)."""
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        namespace = meta.get("namespace")
        if not namespace or not meta.get("uid") or not meta.get("creationTimestamp"):
            return None
        return cls(
            name=str(meta["name"]),
            namespace=str(namespace),
            uid=str(meta["uid"]),
            generation=int(meta.get("generation", 0)),
            deadline=deadline_of(meta, spec),
            role=role_of(spec),
            sae=str(spec.get("sae", "")),
            secret=secret_name(str(meta["name"]), spec),
            slave_sae_id=str(spec.get("slaveSaeID", "")),
            number=int(spec.get("number", 0)),
            size=int(spec.get("size", 0)),
            master_sae_id=str(spec.get("masterSaeID", "")),
            key_ids=tuple(str(k) for k in spec.get("keyIDs") or ()),
            phase=status.get("phase"),
            start_time=status.get("startTime"),
            deleting=bool(meta.get("deletionTimestamp")),
        )


def key_container(keys: Sequence[DeliveredKey]) -> dict[str, Any]:
    """ETSI GS QKD 014 key container."""
    return {
        "keys": [{"key_ID": k.key_id, "key": base64.b64encode(k.material).decode()} for k in keys]
    }


def key_secret(
    *,
    name: str,
    namespace: str,
    keys: Sequence[DeliveredKey],
    owner: Mapping[str, Any],
    stream: str = "",
    peer_node: str = "",
) -> dict[str, Any]:
    """The Secret delivering ``keys`` for the KeyRequest ``owner`` (its metadata), from
    ``stream``, shared with an SAE of ``peer_node``."""
    data = {k.key_id: base64.b64encode(k.material).decode() for k in keys}
    data[KEYS_JSON] = base64.b64encode(json.dumps(key_container(keys)).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                LABEL_NAME: "qss-keys",
                LABEL_PART_OF: PART_OF,
                LABEL_KEYREQUEST: str(owner["name"]),
            },
            "annotations": {ANNOTATION_STREAM: stream, ANNOTATION_PEER: peer_node},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND_KEYREQUEST,
                    "name": owner["name"],
                    "uid": owner["uid"],
                    "controller": True,
                }
            ],
        },
        "data": data,
    }


def key_ids_in_secret(secret_data: Mapping[str, str] | None) -> list[str]:
    """The key IDs a key Secret delivered (from keys.json, in order)."""
    raw = (secret_data or {}).get(KEYS_JSON)
    if raw is None:
        return []
    container = json.loads(base64.b64decode(raw))
    return [str(k["key_ID"]) for k in container.get("keys", [])]


def now_precise() -> str:
    """The current time in RFC 3339 with milliseconds, for start and completion times."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ready_status(
    *,
    role: Role,
    key_ids: Sequence[str],
    secret: str,
    peer_node: str,
    started: str | None,
    generation: int,
    at: str | None = None,
) -> dict[str, Any]:
    now = at or now_precise()
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Ready",
        "role": role,
        "keyIDs": list(key_ids),
        "keyCount": len(key_ids),
        "secretName": secret,
        "peerNodeID": peer_node,
        "hops": 1,
        "completionTime": now,
        "conditions": [
            condition(
                "Ready",
                ok=True,
                reason="KeysDelivered",
                message=f"{len(key_ids)} keys are in Secret {secret}",
                generation=generation,
                at=at,
            )
        ],
    }
    if started:
        status["startTime"] = started
        status["durationMilliseconds"] = _millis_between(started, now)
    return status


def failed_status(
    *, role: Role, reason: str, message: str, started: str | None, generation: int
) -> dict[str, Any]:
    now = now_precise()
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Failed",
        "role": role,
        "completionTime": now,
        "conditions": [
            condition("Ready", ok=False, reason=reason, message=message, generation=generation)
        ],
    }
    if started:
        status["startTime"] = started
        status["durationMilliseconds"] = _millis_between(started, now)
    return status


def _millis_between(start: str, end: str) -> int:
    a = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max(0, int((b - a).total_seconds() * 1000))
