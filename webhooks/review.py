"""The AdmissionReview protocol (``admission.k8s.io/v1``) as wire messages, and the view of a Pod
the webhook reads.

The HTTP adapter (``webhooks.server``) reads each request body with
``qss_api.wire.decode(AdmissionReview, body)`` before anything else runs, and ``webhooks.mutate``
reads the pod inside it with ``qss_api.wire.check(PodView, ...)``. Tests build reviews with the
same models.

Two deliberate departures from ``WireModel``'s ``extra="forbid"``, both with strict types on
every member we declare:

- ``KubeMessage`` (the request and the pod view) ignores members it does not declare: the API
  server adds members to AdmissionRequest over releases (``requestKind`` came in 1.15), and a
  Pod carries hundreds of fields the webhook never reads. Refusing them would deny every pod
  after an upgrade; ignoring them is what Kubernetes' own clients do.
- The response is written by us only, so it is a plain ``WireModel``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, JsonValue, StringConstraints

from qss_api.wire import WireModel

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"

# Kubernetes object names and UIDs are short; anything longer is not from an API server.
Name = Annotated[str, StringConstraints(max_length=253)]
Uid = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Json = dict[str, JsonValue]


class KubeMessage(WireModel):
    """Strict on what it declares, tolerant of what a newer API server adds (see above)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class GroupVersionKind(KubeMessage):
    group: str
    version: str
    kind: str


class GroupVersionResource(KubeMessage):
    group: str
    version: str
    resource: str


class UserInfo(KubeMessage):
    username: str = ""
    uid: str = ""
    groups: list[str] = Field(default_factory=list)
    extra: dict[str, list[str]] = Field(default_factory=dict)


class AdmissionRequest(KubeMessage):
    uid: Uid
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str | None = None
    requestKind: GroupVersionKind | None = None
    requestResource: GroupVersionResource | None = None
    requestSubResource: str | None = None
    name: Name | None = None
    namespace: Name | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfo
    object: Json | None = None
    oldObject: Json | None = None
    dryRun: bool | None = None
    options: Json | None = None


class AdmissionReview(KubeMessage):
    """What the API server POSTs."""

    apiVersion: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class ResultStatus(WireModel):
    """metav1.Status, as much of it as a denial needs."""

    code: int
    message: str
    reason: str | None = None


class AdmissionResponse(WireModel):
    uid: Uid
    allowed: bool
    status: ResultStatus | None = None
    patchType: Literal["JSONPatch"] | None = None
    patch: str | None = None  # base64 of the JSON Patch
    warnings: list[str] | None = None


class AdmissionReviewResponse(WireModel):
    """What the webhook answers."""

    apiVersion: Literal["admission.k8s.io/v1"] = API_VERSION
    kind: Literal["AdmissionReview"] = KIND
    response: AdmissionResponse


def encode_review(response: AdmissionResponse) -> bytes:
    """The answer's JSON bytes (members that are None left out, as the API server expects)."""
    return AdmissionReviewResponse(response=response).model_dump_json(exclude_none=True).encode()


# --- the pod, as far as the webhook reads it ----------------------------------------------------


class ObjectMeta(KubeMessage):
    name: Name | None = None
    generateName: Name | None = None
    namespace: Name | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecurityContext(KubeMessage):
    runAsUser: int | None = None
    runAsGroup: int | None = None


class VolumeMount(KubeMessage):
    name: str
    mountPath: str


class ContainerPort(KubeMessage):
    containerPort: int
    protocol: str | None = None
    hostIP: str | None = None


class Container(KubeMessage):
    name: str
    volumeMounts: list[VolumeMount] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    securityContext: SecurityContext | None = None


class Volume(KubeMessage):
    name: str


class PodSpec(KubeMessage):
    containers: Annotated[list[Container], Field(min_length=1)]
    initContainers: list[Container] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    securityContext: SecurityContext | None = None
    hostNetwork: bool | None = None
    shareProcessNamespace: bool | None = None


class PodView(KubeMessage):
    """The members of a Pod the webhook reads; the full object stays in the review as JSON."""

    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec
