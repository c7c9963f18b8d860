"""What the webhook injects into a pod, as pure builders: the native sidecar container, its three
volumes and the read-only key mount of each app container.

Called by ``webhooks.mutate`` with the pod's checked request (``webhooks.annotations.Injection``),
its Sae (``SaeRecord``) and the webhook's ``InjectorConfig``. Everything the sidecar needs to
know comes to it as environment variables named in ``qss_api.sidecar``.

Why the pieces look the way they do:

- The sidecar is an init container with ``restartPolicy: Always`` (a native sidecar), first
  among the init containers: it starts before every other container, its startup probe passes
  once the first keys are written, so the app finds keys when it starts; it does not keep a Job
  from finishing, and it stops after the app containers.
- Key files are mode 0400, readable only by their owner, so the sidecar runs as the app's user
  (``app_user``); it never runs as root.
- The SAE's credentials Secret is mounted into the sidecar only. The sidecar gets its own
  service-account token (a projected volume): the pod's token mounts were added by the API
  server before the webhook ran, so the pod can set ``automountServiceAccountToken: false`` to
  keep the token, and with it the API, away from the app without breaking the sidecar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from qss_api import sidecar as names
from webhooks.annotations import Injection
from webhooks.review import PodView

# The kubelet checks the sidecar's startup probe this often; the app starts at the first pass.
STARTUP_PERIOD_SECONDS: Final = 1
# Under contention a container gets CPU in proportion to its request, and the app container waits
# for the sidecar's start (about 0.5 s of CPU: Python, aiohttp, pydantic) and first KeyRequest.
# At 10m a busy node gave the sidecar about 1% of a core and pods took 26 s to their first keys;
# 100m (what Istio's proxy asks for) bounds that start to about 5 s on a node whose CPU is all
# taken. Once started it uses a few millicores; it has no CPU limit, so an idle node lets it
# start at full speed.
SIDECAR_CPU_REQUEST: Final = "100m"
# A slave waits for its master's first keys; give that ten minutes before the kubelet restarts
# the sidecar (which then resumes waiting).
STARTUP_FAILURE_THRESHOLD: Final = 600
# tmpfs charges whole pages; the volume holds the current snapshot, the previous one (kept for
# readers still on it) and the one being written.
_PAGE: Final = 4096
_SNAPSHOTS: Final = 3
_INDEX_BYTES_PER_KEY: Final = 256
_MIB: Final = 1024 * 1024
# Where a slave's key size is unknown (its master decides), assume the largest.
_LARGEST_KEY_BYTES: Final = 4096


@dataclass(frozen=True, kw_only=True)
class InjectorConfig:
    """The webhook-wide choices that shape an injected pod (from ``WebhookSettings``)."""

    # The kube-qss image that has the qss-sidecar command.
    sidecar_image: str
    image_pull_policy: str = "IfNotPresent"
    # The node's ETSI 014 API, which the sidecar forwards its loopback endpoint to.
    key_api_url: str = "https://kube-qss.kube-qss-system.svc:9443"
    # The sidecar's ETSI 014 endpoint on the pod's loopback.
    key_api_port: int = names.DEFAULT_KEY_API_PORT
    # The sidecars' Prometheus /metrics port on the pod's IP (a container port named
    # qss-metrics); None: the sidecars serve no metrics.
    metrics_port: int | None = None
    # Namespaces whose pods are never touched (the system's and the webhook's own).
    skip_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})
    # app.kubernetes.io/name of the webhook's own pods, which it never touches.
    own_name: str = "kube-qss-webhook"
    # The sidecar's projected service-account token is renewed by the kubelet before this.
    token_expiration_seconds: int = 3600


@dataclass(frozen=True, kw_only=True)
class SaeRecord:
    """The Sae a pod acts as, as far as injection needs it."""

    namespace: str
    name: str
    sae_id: str
    credentials_secret: str


@dataclass(frozen=True)
class AppUser:
    uid: int
    gid: int | None


def app_user(pod: PodView) -> AppUser:
    """The one non-root user every app container runs as; ``ValueError`` saying what to set."""
    pod_context = pod.spec.securityContext
    uids: dict[str, int | None] = {}
    gids: set[int | None] = set()
    pod_uid = pod_context.runAsUser if pod_context is not None else None
    pod_gid = pod_context.runAsGroup if pod_context is not None else None
    for container in pod.spec.containers:
        own = container.securityContext
        uid = own.runAsUser if own is not None else None
        gid = own.runAsGroup if own is not None else None
        uids[container.name] = uid if uid is not None else pod_uid
        gids.add(gid if gid is not None else pod_gid)
    unset = sorted(name for name, uid in uids.items() if uid is None)
    if unset:
        raise ValueError(
            f"set spec.securityContext.runAsUser (container {', '.join(unset)} has no user): key "
            "files are mode 0400, so the sidecar runs as the app's user and must know it"
        )
    distinct = {uid for uid in uids.values()}
    if len(distinct) > 1:
        listed = ", ".join(f"{n} as {u}" for n, u in sorted(uids.items()))
        raise ValueError(
            f"the app containers run as different users ({listed}); key files are mode 0400 and "
            "readable by one user only: run them as one user"
        )
    (uid,) = distinct
    assert uid is not None
    if uid == 0:
        raise ValueError(
            "the app containers run as root (runAsUser 0); run them as a non-root user: the "
            "sidecar runs as the app's user and never as root"
        )
    return AppUser(uid=uid, gid=gids.pop() if len(gids) == 1 else None)


def keys_volume_mib(injection: Injection) -> int:
    """The keys volume's size limit, in MiB."""
    key_bytes = injection.key_size // 8 if injection.key_size else _LARGEST_KEY_BYTES
    per_key = math.ceil(key_bytes / _PAGE) * _PAGE
    index = math.ceil(injection.max_keys * _INDEX_BYTES_PER_KEY / _PAGE) * _PAGE
    total = _SNAPSHOTS * (injection.max_keys * per_key + index + 2 * _PAGE)
    return math.ceil(total / _MIB) + 1


def _env(injection: Injection, sae: SaeRecord, config: InjectorConfig) -> list[dict[str, Any]]:
    values: list[tuple[str, str | None]] = [
        (names.ENV_ROLE, injection.role),
        (names.ENV_SAE, sae.name),
        (names.ENV_SAE_ID, sae.sae_id),
        (names.ENV_PEER_SAE_ID, injection.peer_sae_id),
        (names.ENV_KEY_SIZE, None if injection.key_size is None else str(injection.key_size)),
        (names.ENV_KEY_NUMBER, None if injection.key_number is None else str(injection.key_number)),
        (
            names.ENV_REFRESH_SECONDS,
            None if injection.refresh_seconds is None else str(injection.refresh_seconds),
        ),
        (names.ENV_MAX_KEYS, str(injection.max_keys)),
        (names.ENV_KEYS_DIR, injection.mount_path),
        (names.ENV_CREDENTIALS_DIR, names.CREDENTIALS_DIR),
        (names.ENV_KEY_API_URL, config.key_api_url),
        (names.ENV_LISTEN_PORT, str(config.key_api_port)),
        (names.ENV_METRICS_PORT, None if config.metrics_port is None else str(config.metrics_port)),
    ]
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values if v is not None]
    for name, field in (
        (names.ENV_POD_NAME, "metadata.name"),
        (names.ENV_POD_NAMESPACE, "metadata.namespace"),
        (names.ENV_POD_UID, "metadata.uid"),
    ):
        env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})
    return env


def startup_probe_command(injection: Injection) -> list[str]:
    """Passes once the first keys are in the volume. coreutils' ``test``, not a Python command:
    the kubelet runs it every second, each run in the sidecar's own CPU share, while the sidecar
    is still starting, and a Python interpreter's start costs what the sidecar needs then."""
    return ["test", "-f", f"{injection.mount_path}/{names.READY_FILE}"]


def sidecar_container(
    injection: Injection, sae: SaeRecord, user: AppUser, config: InjectorConfig
) -> dict[str, Any]:
    security: dict[str, Any] = {"runAsUser": user.uid}
    if user.gid is not None:
        security["runAsGroup"] = user.gid
    security.update(
        runAsNonRoot=True,
        allowPrivilegeEscalation=False,
        readOnlyRootFilesystem=True,
        capabilities={"drop": ["ALL"]},
        seccompProfile={"type": "RuntimeDefault"},
    )
    container: dict[str, Any] = {
        "name": names.CONTAINER_NAME,
        "image": config.sidecar_image,
        "imagePullPolicy": config.image_pull_policy,
        "restartPolicy": "Always",
        "command": ["qss-sidecar"],
        "args": ["run"],
        "env": _env(injection, sae, config),
        "volumeMounts": [
            {"name": names.KEYS_VOLUME, "mountPath": injection.mount_path},
            {
                "name": names.CREDENTIALS_VOLUME,
                "mountPath": names.CREDENTIALS_DIR,
                "readOnly": True,
            },
            {"name": names.TOKEN_VOLUME, "mountPath": names.TOKEN_DIR, "readOnly": True},
        ],
        "startupProbe": {
            "exec": {"command": startup_probe_command(injection)},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": STARTUP_FAILURE_THRESHOLD,
        },
        "resources": {
            "requests": {"cpu": SIDECAR_CPU_REQUEST, "memory": "48Mi"},
            "limits": {"memory": "160Mi"},
        },
        "securityContext": security,
    }
    if config.metrics_port is not None:
        container["ports"] = [
            {
                "name": names.METRICS_PORT_NAME,
                "containerPort": config.metrics_port,
                "protocol": "TCP",
            }
        ]
    return container


def volumes(injection: Injection, sae: SaeRecord, config: InjectorConfig) -> list[dict[str, Any]]:
    """The keys emptyDir (memory), the credentials Secret and the sidecar's token."""
    return [
        {
            "name": names.KEYS_VOLUME,
            "emptyDir": {"medium": "Memory", "sizeLimit": f"{keys_volume_mib(injection)}Mi"},
        },
        {
            "name": names.CREDENTIALS_VOLUME,
            # Mounted in the sidecar only; readable there by the non-root sidecar user.
            "secret": {"secretName": sae.credentials_secret, "defaultMode": 0o444},
        },
        {
            "name": names.TOKEN_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "expirationSeconds": config.token_expiration_seconds,
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
    ]


def app_mount(injection: Injection) -> dict[str, Any]:
    return {"name": names.KEYS_VOLUME, "mountPath": injection.mount_path, "readOnly": True}


RESERVED_VOLUMES: Final = (names.KEYS_VOLUME, names.CREDENTIALS_VOLUME, names.TOKEN_VOLUME)
