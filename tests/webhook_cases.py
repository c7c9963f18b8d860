"""Pods for the webhook's tests: a good annotated pod, and the table of bad ones.

The unit tests (``tests/unit/webhooks``) run the table through ``mutate`` directly; the
integration tests (``tests/integration/test_webhook.py``) create the same pods on a real API
server through the real webhook process. Each bad pod names the words its denial must contain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SAE = "alice"
SAE_ID = "wh-alice"
PEER_SAE_ID = "wh-bob"
APP_UID = 1000
KEY_API_PORT = 8014

Pod = dict[str, Any]


def annotated_pod(
    name: str = "app",
    *,
    role: str = "master",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Pod:
    """A pod asking for keys as ``role``, runnable by a restricted Pod Security policy."""
    wanted = {"qss.dev/sae": SAE, "qss.dev/peer-sae": PEER_SAE_ID, "qss.dev/role": role}
    if role == "master":
        wanted.update({"qss.dev/key-size": "256", "qss.dev/refresh-interval": "30s"})
    wanted.update(annotations or {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"qss.dev/inject": "true", "app": name, **(labels or {})},
            "annotations": wanted,
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": APP_UID, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "command": ["sleep", "infinity"],
                    "securityContext": {"allowPrivilegeEscalation": False},
                }
            ],
        },
    }


@dataclass(frozen=True)
class BadPod:
    id: str
    change: Callable[[Pod], None]
    expected: tuple[str, ...]  # words the denial's message contains

    def pod(self, name: str) -> Pod:
        pod = annotated_pod(name)
        self.change(pod)
        return pod


def _annotate(**values: str | None) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        for key, value in values.items():
            full = "qss.dev/" + key.replace("_", "-")
            if value is None:
                pod["metadata"]["annotations"].pop(full, None)
            else:
                pod["metadata"]["annotations"][full] = value

    return change


def _spec(**values: Any) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        pod["spec"].update(copy.deepcopy(values))

    return change


def _slave_with_refresh(pod: Pod) -> None:
    annotations = pod["metadata"]["annotations"]
    annotations["qss.dev/role"] = "slave"
    annotations.pop("qss.dev/key-size")


def _two_users(pod: Pod) -> None:
    pod["spec"]["containers"].append(
        {
            "name": "helper",
            "image": "registry.invalid/helper:1",
            "securityContext": {"runAsUser": 2000},
        }
    )


def _no_user(pod: Pod) -> None:
    del pod["spec"]["securityContext"]["runAsUser"]


def _container(**fields: Any) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        pod["spec"]["containers"][0].update(copy.deepcopy(fields))

    return change


def _label(value: str) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        pod["metadata"]["labels"]["qss.dev/inject"] = value

    return change


def _mount_clash(pod: Pod) -> None:
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/var/run/qss"}]


def _reserved_container(pod: Pod) -> None:
    pod["spec"]["initContainers"] = [
        {"name": "qss-sidecar", "image": "registry.invalid/mine:1", "command": ["true"]}
    ]


BAD_PODS: tuple[BadPod, ...] = (
    BadPod(
        "unknown-role", _annotate(role="leader"), ("qss.dev/role", "'leader'", "master or slave")
    ),
    BadPod("role-missing", _annotate(role=None), ("qss.dev/role is missing",)),
    BadPod("sae-missing", _annotate(sae=None), ("qss.dev/sae is missing",)),
    BadPod("sae-elsewhere", _annotate(sae="team-b/alice"), ("another namespace",)),
    BadPod("sae-not-a-name", _annotate(sae="Alice_1"), ("not a Sae name",)),
    BadPod("sae-does-not-exist", _annotate(sae="carol"), ("Sae 'carol' does not exist",)),
    BadPod("peer-not-an-id", _annotate(peer_sae="bad id!"), ("qss.dev/peer-sae", "not an SAE ID")),
    BadPod("peer-is-self", _annotate(peer_sae=SAE_ID), ("pod's own SAE",)),
    BadPod("size-not-bytes", _annotate(key_size="255"), ("not a multiple of 8",)),
    BadPod(
        "size-not-a-number", _annotate(key_size="256bits"), ("qss.dev/key-size", "whole number")
    ),
    BadPod("size-too-large", _annotate(key_size="65536"), ("from 8 to 32768",)),
    BadPod("number-zero", _annotate(key_number="0"), ("qss.dev/key-number", "from 1 to 1000")),
    BadPod(
        "number-times-size",
        _annotate(key_number="1000", key_size="8192"),
        ("at most 4194304 bits",),
    ),
    BadPod("refresh-garbage", _annotate(refresh_interval="soon"), ("qss.dev/refresh-interval",)),
    BadPod("refresh-fraction", _annotate(refresh_interval="1.5s"), ("whole seconds",)),
    BadPod("refresh-zero", _annotate(refresh_interval="0s"), ("from 1s to 24h",)),
    BadPod(
        "max-below-batch", _annotate(key_number="20", max_keys="5"), ("raise it to at least 20",)
    ),
    BadPod("slave-with-refresh", _slave_with_refresh, ("for role master only",)),
    BadPod("mount-relative", _annotate(mount_path="keys"), ("absolute path",)),
    BadPod("mount-dotdot", _annotate(mount_path="/var/run/../keys"), ("absolute path",)),
    BadPod(
        "mount-reserved",
        _annotate(mount_path="/var/run/secrets/kubernetes.io/serviceaccount"),
        ("overlaps /var/run/secrets",),
    ),
    BadPod("mount-clash", _mount_clash, ("mounts volume data at /var/run/qss",)),
    BadPod(
        "unknown-annotation", _annotate(keysize="256"), ("unknown annotation", "qss.dev/keysize")
    ),
    BadPod("inject-status-forged", _annotate(inject_status="pending"), ("the webhook writes it",)),
    BadPod("label-typo", _label("yes"), ("label qss.dev/inject", "'yes'")),
    BadPod("host-network", _spec(hostNetwork=True), ("hostNetwork",)),
    BadPod("shared-pids", _spec(shareProcessNamespace=True), ("process namespace",)),
    BadPod("no-user", _no_user, ("runAsUser",)),
    BadPod("root-user", _spec(securityContext={"runAsUser": 0}), ("as root",)),
    BadPod("two-users", _two_users, ("different users",)),
    BadPod("reserved-container", _reserved_container, ("qss-sidecar is reserved",)),
    BadPod(
        "port-clash",
        _container(ports=[{"containerPort": KEY_API_PORT}]),
        (f"port {KEY_API_PORT}",),
    ),
)
