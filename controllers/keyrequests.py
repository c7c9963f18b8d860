"""What the KeyRequest reconciler writes, as pure functions: the key Secret and the status.

The Secret holds one data entry per key ID (the raw key) and ``keys.json``, the keys in ETSI GS
QKD 014's key container format (``{"keys": [{"key_ID", "key"}]}``, keys in base64); it is owned
by its KeyRequest so that deleting the request deletes the keys. Status never carries key bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from controllers.conditions import condition
from controllers.delivery.api import DeliveredKey
from qss_api import API_VERSION, KIND_KEYREQUEST, LABEL_NAME, LABEL_PART_OF, PART_OF

Role = Literal["Master", "Slave"]
KEYS_JSON = "keys.json"
LABEL_KEYREQUEST = "qss.dev/keyrequest"


def role_of(spec: Mapping[str, Any]) -> Role:
    return "Slave" if spec.get("keyIDs") else "Master"


def secret_name(name: str, spec: Mapping[str, Any]) -> str:
    return str(spec.get("secretName") or f"{name}-keys")


def deadline_of(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> dt.datetime:
    created = dt.datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
    return created + dt.timedelta(seconds=int(spec.get("timeoutSeconds", 30)))


def key_container(keys: Sequence[DeliveredKey]) -> dict[str, Any]:
    """ETSI GS QKD 014 key container."""
    return {
        "keys": [{"key_ID": k.key_id, "key": base64.b64encode(k.material).decode()} for k in keys]
    }


def key_secret(
    *, name: str, namespace: str, keys: Sequence[DeliveredKey], owner: Mapping[str, Any]
) -> dict[str, Any]:
    """The Secret delivering ``keys`` for the KeyRequest ``owner`` (its metadata)."""
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


def started_status(*, role: Role, generation: int, at: str | None = None) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "phase": "Reserving",
        "role": role,
        "startTime": at or now_precise(),
        "conditions": [
            condition(
                "Ready",
                ok=False,
                reason="Reserving",
                message="reserving keys",
                generation=generation,
                at=at,
            )
        ],
    }


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
