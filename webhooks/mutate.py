"""The webhook's decision: ``mutate(review) -> AdmissionResponse``, pure but for one read.

Called by the HTTP adapter (``webhooks.server``) with an already decoded ``AdmissionReview``.
The one thing it must ask the cluster, whether the named Sae exists in the pod's namespace, goes
through the ``SaeDirectory`` interface (``webhooks.saes.ApiSaeDirectory`` on a real API server,
an in-memory one in the unit tests), so everything else here is a function of its inputs.

What it decides:

- Pods it never touches (allowed as they are): anything but a Pod CREATE, pods in
  ``InjectorConfig.skip_namespaces`` (the system's and the webhook's own), the webhook's own
  pods, and pods without the label ``qss.dev/inject: "true"`` (or with ``"false"``).
- Pods it denies, with one message listing everything to fix: a wrong label value, bad
  annotations (``webhooks.annotations``), pods the sidecar cannot serve safely (host network,
  a shared process namespace, no single non-root app user, a clash of names, paths or ports),
  a Sae that does not exist in the pod's namespace, a peer that is the pod's own SAE.
- Everything else gets the sidecar, its volumes, a read-only key mount in every app container
  and ``qss.dev/inject-status: injected``, as a JSON Patch computed against the pod as given:
  what is already there as wanted is left alone, so a reinvocation (another webhook changed the
  pod after us) or a pod re-created from an injected spec gets an empty patch, and a container
  another webhook added gets its mount.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, Protocol

from pydantic import JsonValue

from qss_api import (
    ANNOTATION_INJECT_STATUS,
    INJECT_STATUS_INJECTED,
    LABEL_NAME,
    LABEL_PART_OF,
    PART_OF,
)
from qss_api import sidecar as names
from qss_api.wire import BadMessage, check
from webhooks import patches
from webhooks.annotations import AnnotationProblems, Injection, inject_label_value, read_injection
from webhooks.injection import (
    RESERVED_VOLUMES,
    AppUser,
    InjectorConfig,
    SaeRecord,
    app_mount,
    app_user,
    sidecar_container,
    volumes,
)
from webhooks.review import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    PodView,
    ResultStatus,
)

log = logging.getLogger(__name__)

# A user's mistake: the request is wrong and retrying it unchanged will fail again.
CODE_INVALID: Final = 400
# The webhook could not decide now (the API server did not answer its read); a retry may pass.
CODE_UNAVAILABLE: Final = 503


class SaeLookupError(Exception):
    """The Sae could not be read (the API server failed or refused); the message says why."""


class SaeDirectory(Protocol):
    """Where ``mutate`` finds a pod's Sae."""

    async def get(self, namespace: str, name: str) -> SaeRecord | None:
        """The Sae ``name`` in ``namespace``, None if there is none; ``SaeLookupError`` if the
        answer is unknown."""
        ...


def _allow(request: AdmissionRequest) -> AdmissionResponse:
    return AdmissionResponse(uid=request.uid, allowed=True)


def deny(uid: str, message: str, *, code: int = CODE_INVALID) -> AdmissionResponse:
    reason = "BadRequest" if code == CODE_INVALID else "ServiceUnavailable"
    return AdmissionResponse(
        uid=uid, allowed=False, status=ResultStatus(code=code, message=message, reason=reason)
    )


def _pod_name(pod: PodView, request: AdmissionRequest) -> str:
    meta = pod.metadata
    name = meta.name or request.name or (f"{meta.generateName}*" if meta.generateName else "")
    return f"{request.namespace}/{name}" if name else f"in namespace {request.namespace}"


def _is_pod_create(request: AdmissionRequest) -> bool:
    kind = request.kind
    return (
        request.operation == "CREATE"
        and (kind.group, kind.version, kind.kind) == ("", "v1", "Pod")
        and not request.subResource
        and request.object is not None
    )


def _overlaps(a: str, b: str) -> bool:
    """Whether two mount paths are the same or one lies inside the other."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def pod_problems(pod: PodView, injection: Injection | None, config: InjectorConfig) -> list[str]:
    """Why the sidecar cannot serve this pod safely (empty: it can)."""
    problems: list[str] = []
    spec = pod.spec
    if spec.hostNetwork:
        problems.append(
            "the pod uses hostNetwork: the sidecar's key endpoint on 127.0.0.1 would be open to "
            "every process on the node; remove hostNetwork"
        )
    if spec.shareProcessNamespace:
        problems.append(
            "the pod shares its process namespace: app containers could read the sidecar's SAE "
            "credentials through /proc; remove shareProcessNamespace"
        )
    injected = pod.metadata.annotations.get(ANNOTATION_INJECT_STATUS) == INJECT_STATUS_INJECTED
    if not injected:
        # In a pod the webhook injected before, these are its own and are brought up to date.
        for container in [*spec.initContainers, *spec.containers]:
            if container.name == names.CONTAINER_NAME:
                problems.append(
                    f"container name {names.CONTAINER_NAME} is reserved for the kube-qss sidecar; "
                    "rename your container"
                )
        for volume in spec.volumes:
            if volume.name in RESERVED_VOLUMES:
                problems.append(
                    f"volume name {volume.name} is reserved for the kube-qss sidecar; rename "
                    "your volume"
                )
    for container in spec.containers:
        for port in container.ports:
            if port.containerPort == config.key_api_port and port.protocol in (None, "TCP"):
                problems.append(
                    f"container {container.name} declares port {port.containerPort}, where the "
                    "sidecar serves ETSI 014 on the pod's loopback; use another port"
                )
            if port.containerPort == config.metrics_port and port.protocol in (None, "TCP"):
                problems.append(
                    f"container {container.name} declares port {port.containerPort}, where the "
                    "sidecar serves its metrics; use another port"
                )
        if injection is None:
            continue
        for mount in container.volumeMounts:
            if mount.name != names.KEYS_VOLUME and _overlaps(mount.mountPath, injection.mount_path):
                problems.append(
                    f"container {container.name} mounts volume {mount.name} at "
                    f"{mount.mountPath}, which overlaps the key directory {injection.mount_path}; "
                    "set qss.dev/mount-path to a path of its own"
                )
    return problems


def covers(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` has everything ``wanted`` sets. The API server fills in defaults
    (``terminationMessagePath``, probe timeouts, ...) before webhooks run, so an injected
    container is "as wanted" when it has our fields, whatever defaults came with it."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and covers(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(covers(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted) and type(actual) is type(wanted)


def _index(items: Sequence[Any], name: str) -> int | None:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == name:
            return i
    return None


def plan(
    raw: dict[str, JsonValue],
    injection: Injection,
    sae: SaeRecord,
    user: AppUser,
    config: InjectorConfig,
) -> list[patches.Operation]:
    """The JSON Patch that brings the pod ``raw`` (already checked as a ``PodView``) to the
    injected state; empty if it is there already."""
    spec: dict[str, Any] = raw["spec"]  # type: ignore[assignment]
    meta: dict[str, Any] = raw.get("metadata") or {}  # type: ignore[assignment]
    ops: list[patches.Operation] = []

    init: list[Any] = spec.get("initContainers") or []
    sidecar = sidecar_container(injection, sae, user, config)
    at = _index(init, names.CONTAINER_NAME)
    if at is None:
        ops += patches.insert_first("/spec/initContainers", init, sidecar)
    elif not covers(init[at], sidecar):
        ops.append(patches.replace(patches.pointer("spec", "initContainers", at), sidecar))

    present: list[Any] = spec.get("volumes") or []
    missing = []
    for volume in volumes(injection, sae, config):
        at = _index(present, volume["name"])
        if at is None:
            missing.append(volume)
        elif not covers(present[at], volume):
            ops.append(patches.replace(patches.pointer("spec", "volumes", at), volume))
    ops += patches.append("/spec/volumes", present, missing)

    mount = app_mount(injection)
    for i, container in enumerate(spec["containers"]):
        mounts: list[Any] = container.get("volumeMounts") or []
        at = _index(mounts, names.KEYS_VOLUME)
        where = patches.pointer("spec", "containers", i, "volumeMounts")
        if at is None:
            ops += patches.append(where, mounts, [mount])
        elif not covers(mounts[at], mount):
            ops.append(patches.replace(f"{where}/{at}", mount))

    annotations = meta.get("annotations")
    ops += patches.set_annotation(annotations, ANNOTATION_INJECT_STATUS, INJECT_STATUS_INJECTED)
    return ops


def _warnings(pod: PodView) -> list[str]:
    exposed = sorted(
        c.name
        for c in pod.spec.containers
        if any(m.mountPath.rstrip("/") == names.TOKEN_DIR for m in c.volumeMounts)
    )
    if not exposed:
        return []
    return [
        f"container {', '.join(exposed)} mounts the pod's service-account token; the sidecar's "
        "RBAC lets that token read Secrets of this namespace, the SAE's credentials included: "
        "set automountServiceAccountToken: false on the pod (the sidecar has a token of its own)"
    ]


async def mutate(
    review: AdmissionReview, *, saes: SaeDirectory, config: InjectorConfig
) -> AdmissionResponse:
    """The answer to one AdmissionReview (never raises for anything in the review)."""
    request = review.request
    if not _is_pod_create(request) or (request.namespace or "") in config.skip_namespaces:
        return _allow(request)
    try:
        pod = check(PodView, request.object, what="Pod")
    except BadMessage as exc:
        return deny(request.uid, f"kube-qss cannot read the pod: {exc.message}")
    labels = pod.metadata.labels
    if labels.get(LABEL_NAME) == config.own_name and labels.get(LABEL_PART_OF) == PART_OF:
        return _allow(request)
    who = _pod_name(pod, request)
    try:
        if not inject_label_value(labels):
            return _allow(request)
    except ValueError as exc:
        return deny(request.uid, f"kube-qss cannot inject keys into pod {who}: {exc}")

    problems: list[str] = []
    injection: Injection | None = None
    try:
        injection = read_injection(pod.metadata.annotations)
    except AnnotationProblems as exc:
        problems += exc.problems
    problems += pod_problems(pod, injection, config)
    user: AppUser | None = None
    try:
        user = app_user(pod)
    except ValueError as exc:
        problems.append(str(exc))
    if problems or injection is None or user is None:
        return deny(
            request.uid, f"kube-qss cannot inject keys into pod {who}: {'; '.join(problems)}"
        )

    namespace = request.namespace or ""
    try:
        sae = await saes.get(namespace, injection.sae)
    except SaeLookupError as exc:
        return deny(
            request.uid,
            f"kube-qss cannot inject keys into pod {who} now: {exc}; retry",
            code=CODE_UNAVAILABLE,
        )
    if sae is None:
        return deny(
            request.uid,
            f"kube-qss cannot inject keys into pod {who}: Sae {injection.sae!r} does not exist in "
            f"namespace {namespace!r}; create it (kind Sae, apiVersion qss.dev/v1alpha1) or fix "
            "qss.dev/sae",
        )
    if sae.sae_id == injection.peer_sae_id:
        return deny(
            request.uid,
            f"kube-qss cannot inject keys into pod {who}: qss.dev/peer-sae {sae.sae_id!r} is the "
            f"pod's own SAE (Sae {injection.sae!r}); name the SAE it shares keys with",
        )
    ops = plan(request.object or {}, injection, sae, user, config)
    log.info(
        "pod %s: %s as %s of SAE %s with %s (%d patch operations)",
        who,
        "injecting" if ops else "already injected",
        injection.role,
        sae.sae_id,
        injection.peer_sae_id,
        len(ops),
    )
    warnings = _warnings(pod) or None
    if not ops:
        return AdmissionResponse(uid=request.uid, allowed=True, warnings=warnings)
    return AdmissionResponse(
        uid=request.uid,
        allowed=True,
        patchType="JSONPatch",
        patch=patches.encode(ops),
        warnings=warnings,
    )
