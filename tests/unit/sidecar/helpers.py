"""Doubles and builders for the sidecar's unit tests.

``InMemoryKeyRequests`` stands in for the API server as the agent uses it (``KeyRequestApi``):
KeyRequests and Secrets in one namespace, with resourceVersions that guard claims as the real
server's do. The tests play the QSS node's part by hand (``serve``: mark a request Ready and
write its Secret as the controller would, in ``keys.json``). The real API server and controller
are in the integration tests (``tests/integration/test_sidecar_process.py``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

from qss_api import LABEL_AUTOMATIC, SECRET_KEYS_JSON
from sidecar.kube import KubeError
from sidecar.settings import SidecarSettings

NAMESPACE = "team-a"


def settings(role: str = "master", **overrides: Any) -> SidecarSettings:
    values: dict[str, Any] = {
        "role": role,
        "sae": "alice" if role == "master" else "bob",
        "sae_id": "alice" if role == "master" else "bob",
        "peer_sae_id": "bob" if role == "master" else "alice",
        "max_keys": 4,
        "pod_name": f"{role}-pod",
        "pod_namespace": NAMESPACE,
        "pod_uid": str(uuid.uuid4()),
    }
    if role == "master":
        values.update(key_size=256, key_number=2, refresh_seconds=30.0)
    values.update(overrides)
    return SidecarSettings(**values)


class InMemoryKeyRequests:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.deleted: list[str] = []
        # Deletes fail while set, as if the sidecar died before it could make them.
        self.deletes_fail = False
        self.created: list[str] = []
        self._version = 0
        self._changed = asyncio.Event()

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._changed.set()

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(json.dumps(body))
        meta = obj["metadata"]
        meta.setdefault("namespace", NAMESPACE)
        meta["uid"] = str(uuid.uuid4())
        # Now, as the API server would say (the agent paces a master's refreshes by it).
        meta["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._bump(obj)
        self.objects[meta["name"]] = obj
        return obj

    def serve(
        self, name: str, *, size_bits: int = 256, number: int | None = None
    ) -> dict[str, bytes]:
        """Play the node: deliver keys for request ``name`` into its Secret, mark it Ready."""
        obj = self.objects[name]
        count = number or obj["spec"].get("number") or len(obj["spec"].get("keyIDs") or [])
        ids = obj["spec"].get("keyIDs") or [str(uuid.uuid4()) for _ in range(count)]
        keys = {i: os.urandom(size_bits // 8) for i in ids}
        container = {
            "keys": [{"key_ID": i, "key": base64.b64encode(k).decode()} for i, k in keys.items()]
        }
        secret = f"{name}-keys"
        self.secrets[secret] = {
            **{i: base64.b64encode(k).decode() for i, k in keys.items()},
            SECRET_KEYS_JSON: base64.b64encode(json.dumps(container).encode()).decode(),
        }
        obj["status"] = {"phase": "Ready", "secretName": secret, "keyIDs": list(ids)}
        self._bump(obj)
        return keys

    def fail(self, name: str, reason: str = "InsufficientKeys") -> None:
        obj = self.objects[name]
        obj["status"] = {
            "phase": "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": reason, "message": "no keys"}
            ],
        }
        self._bump(obj)

    def automatic(self, *, sae: str = "bob", master: str = "alice", number: int = 2) -> str:
        """A slave request as the node creates it after a hand-over."""
        name = f"{sae}-{uuid.uuid4()}"
        self.add(
            {
                "metadata": {"name": name, "labels": {LABEL_AUTOMATIC: "true"}},
                "spec": {
                    "sae": sae,
                    "masterSaeID": master,
                    "keyIDs": [str(uuid.uuid4()) for _ in range(number)],
                },
            }
        )
        return name

    # -- KeyRequestApi ------------------------------------------------------------------------

    async def list_requests(self, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        return [
            json.loads(json.dumps(o))
            for o in self.objects.values()
            if o["metadata"].get("labels", {}).get(key) == value
        ]

    async def create(self, body: dict[str, Any]) -> None:
        self.add(body)
        self.created.append(body["metadata"]["name"])

    async def delete(self, name: str) -> None:
        if self.deletes_fail:
            raise KubeError(f"deleting KeyRequest {name} failed: 503 Service Unavailable", 503)
        if self.objects.pop(name, None) is not None:
            self.deleted.append(name)
            self.secrets.pop(f"{name}-keys", None)

    async def claim(self, name: str, patch: list[dict[str, Any]]) -> bool:
        obj = self.objects.get(name)
        if obj is None:
            return False
        test, add = patch
        if obj["metadata"]["resourceVersion"] != test["value"]:
            return False
        obj["metadata"]["ownerReferences"] = add["value"]
        self._bump(obj)
        return True

    async def secret_data(self, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    async def watch(self, label_selector: str, on_change: Callable[[], None]) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            on_change()
