"""What the webhook's unit tests share: AdmissionReviews around pods, an in-memory Sae directory,
and a JSON Patch applier (RFC 6902 add/replace, as much as the webhook emits) to see the pod
the API server would store."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from qss_api.wire import decode
from tests.webhook_cases import SAE, SAE_ID
from webhooks.injection import InjectorConfig, SaeRecord
from webhooks.mutate import SaeLookupError, mutate
from webhooks.review import AdmissionResponse, AdmissionReview

NAMESPACE = "team-a"
CONFIG = InjectorConfig(
    sidecar_image="kube-qss:test",
    key_api_url="https://kube-qss.kube-qss-system.svc:9443",
    skip_namespaces=frozenset({"kube-system", "kube-public", "kube-node-lease", "kube-qss-system"}),
)


class InMemorySaes:
    """The SaeDirectory of the unit tests: Saes by (namespace, name); ``failing`` makes every
    read fail as an unreachable API server would."""

    def __init__(self, *records: SaeRecord) -> None:
        self.records = {(r.namespace, r.name): r for r in records}
        self.failing = False
        self.reads = 0

    async def get(self, namespace: str, name: str) -> SaeRecord | None:
        self.reads += 1
        if self.failing:
            raise SaeLookupError("reading Sae failed: the API server did not answer (TimeoutError)")
        return self.records.get((namespace, name))


def alice(namespace: str = NAMESPACE) -> SaeRecord:
    return SaeRecord(
        namespace=namespace, name=SAE, sae_id=SAE_ID, credentials_secret=f"{SAE}-credentials"
    )


def review_body(
    pod: dict[str, Any],
    *,
    namespace: str = NAMESPACE,
    operation: str = "CREATE",
    kind: tuple[str, str, str] = ("", "v1", "Pod"),
) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for ``pod``."""
    group, version, name = kind
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": name},
            "resource": {"group": group, "version": version, "resource": "pods"},
            "requestKind": {"group": group, "version": version, "kind": name},
            "requestResource": {"group": group, "version": version, "resource": "pods"},
            "name": pod.get("metadata", {}).get("name"),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "alice@example.org", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def review(pod: dict[str, Any], **kwargs: Any) -> AdmissionReview:
    return decode(AdmissionReview, json.dumps(review_body(pod, **kwargs)))


async def run(
    pod: dict[str, Any], saes: InMemorySaes | None = None, **kwargs: Any
) -> AdmissionResponse:
    return await mutate(
        review(pod, **kwargs),
        saes=saes if saes is not None else InMemorySaes(alice()),
        config=CONFIG,
    )


def operations(response: AdmissionResponse) -> list[dict[str, Any]]:
    if response.patch is None:
        return []
    assert response.patchType == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response.patch))
    return ops


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: dict[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``document`` with the add/replace operations applied, strictly as RFC 6902 says."""
    result = copy.deepcopy(document)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        target: Any = result
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        value = copy.deepcopy(op["value"])
        if isinstance(target, list):
            if last == "-":
                assert op["op"] == "add"
                target.append(value)
            elif op["op"] == "add":
                assert 0 <= int(last) <= len(target), op
                target.insert(int(last), value)
            else:
                target[int(last)] = value
        else:
            if op["op"] == "replace":
                assert last in target, op
            target[last] = value
    return result
