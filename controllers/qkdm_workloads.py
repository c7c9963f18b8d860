"""The workload that runs one KeyStream end's QKD module (QKDM): a Deployment built from the
operator's PodTemplate, owned by the KeyStream, asking for one device of the stream's link.

Pure functions over plain dicts; ``controllers.handlers.qkdms`` reads the KeyStream and the
PodTemplate, calls :func:`qkdm_deployment` and applies the result server-side. What the
Deployment adds to the template:

- the stream's name in ``QSS_KEYSTREAM`` (the QKDM serves exactly that stream);
- a limit of one ``qss.dev/qkd-<link>`` (``qss_api.qkd_resource``): the device plugin offers
  each QKD link's devices under their own resource, so the kubelet hands the QKDM a device of
  its own link, and sets ``QSS_QKD_DEVICE_PATH`` (mounting a simulated device's socket);
- labels ``qss.dev/keystream`` and ``app.kubernetes.io/managed-by``, and the selector on them;
- an owner reference to the KeyStream (controller), so the garbage collector deletes the
  Deployment with the stream;
- one replica and the Recreate strategy: two QKDMs must never serve one stream end at once.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

from qss_api import API_VERSION, GROUP, KIND_KEYSTREAM, LABEL_NAME, qkd_resource

QKDM_CONTAINER: Final = "qkdm"
LABEL_KEYSTREAM: Final = f"{GROUP}/keystream"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "qss-controller"
ENV_KEYSTREAM: Final = "QSS_KEYSTREAM"
NAME_PREFIX: Final = "kube-qss-qkdm-"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_RESOURCE_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class WorkloadError(ValueError):
    """The QKDM workload cannot be built; the message says what to fix."""


def _short(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else a prefix and a hash of the whole."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-.')}-{digest}"


def deployment_name(stream: str) -> str:
    """The QKDM Deployment's name: a DNS label, so its pods' names stay valid host names."""
    return NAME_PREFIX + _short(stream, 63 - len(NAME_PREFIX))


def stream_label(stream: str) -> str:
    """The ``qss.dev/keystream`` label value (a label value has at most 63 characters)."""
    value = _short(stream, 63)
    if not _LABEL_VALUE.match(value):  # a KeyStream name is a DNS subdomain; always matches
        raise WorkloadError(f"KeyStream name {stream!r} cannot be a label value")
    return value


def qkdm_deployment(
    *,
    stream: Mapping[str, Any],
    template: Mapping[str, Any],
    namespace: str,
) -> dict[str, Any]:
    """The Deployment running the QKDM of ``stream`` (a KeyStream) from ``template`` (a
    PodTemplate object), in ``namespace``. Raises ``WorkloadError`` for a template or stream it
    cannot build from."""
    metadata = stream.get("metadata") or {}
    name, uid = str(metadata.get("name", "")), str(metadata.get("uid", ""))
    link = str((stream.get("spec") or {}).get("link", ""))
    if not name or not uid or not link:
        raise WorkloadError("the KeyStream has no name, uid or spec.link")
    resource = qkd_resource(link)
    if not _RESOURCE_NAME_PART.match(resource.partition("/")[2]):
        raise WorkloadError(
            f"link {link!r} gives the device resource {resource!r}, which Kubernetes refuses "
            "(at most 63 characters after the '/'); give the QKDLink a shorter name"
        )
    pod = copy.deepcopy(dict(template.get("template") or {}))
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    qkdm = next((c for c in containers if c.get("name") == QKDM_CONTAINER), None)
    if qkdm is None:
        template_name = (template.get("metadata") or {}).get("name", "?")
        raise WorkloadError(
            f"PodTemplate {namespace}/{template_name} has no container named "
            f"{QKDM_CONTAINER!r}; name the container that runs qss-qkdm so"
        )
    qkdm["env"] = [e for e in qkdm.get("env") or [] if e.get("name") != ENV_KEYSTREAM] + [
        {"name": ENV_KEYSTREAM, "value": name}
    ]
    resources = qkdm.setdefault("resources", {})
    resources.setdefault("limits", {})[resource] = "1"
    if resource in (resources.get("requests") or {}):
        resources["requests"][resource] = "1"

    selector = {
        LABEL_NAME: str(
            (pod.get("metadata") or {}).get("labels", {}).get(LABEL_NAME, "kube-qss-qkdm")
        ),
        LABEL_KEYSTREAM: stream_label(name),
    }
    labels = {
        **(pod.get("metadata") or {}).get("labels", {}),
        **selector,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    pod.setdefault("metadata", {})["labels"] = labels
    pod["spec"] = spec
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND_KEYSTREAM,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": pod,
        },
    }
