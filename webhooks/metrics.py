"""The webhook's Prometheus metrics, served at ``/metrics`` on its HTTPS port beside ``/healthz``.

``webhooks.server`` records every AdmissionReview it answers (``reviewed``) and every request it
refuses before a review (``refused``); nothing else touches these. Outcomes: ``injected``
(allowed with the sidecar patch), ``allowed`` (allowed unchanged: the pod did not opt in, or
was injected already), ``denied`` (an opted-in pod the webhook cannot serve, with a message),
``error`` (the reviewer failed; the pod is denied). Labels never carry pod names, namespaces,
SAE IDs or UIDs: an admission webhook sees every pod of the cluster.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

Outcome = Literal["injected", "allowed", "denied", "error"]

REGISTRY: Final = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

ADMISSIONS: Final = Counter(
    "qss_webhook_admissions",
    "AdmissionReviews answered, by outcome (injected, allowed, denied, error).",
    ["outcome"],
    registry=REGISTRY,
)
# The API server gives the webhook 10 s at most (the configuration's timeoutSeconds).
ADMISSION_SECONDS: Final = Histogram(
    "qss_webhook_admission_duration_seconds",
    "Time to answer an AdmissionReview, by outcome.",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
REFUSED: Final = Counter(
    "qss_webhook_requests_refused",
    "Requests refused before any review, by HTTP status (400 malformed, 413, 415, 404, 405).",
    ["code"],
    registry=REGISTRY,
)


def reviewed(outcome: Outcome, seconds: float) -> None:
    ADMISSIONS.labels(outcome).inc()
    ADMISSION_SECONDS.labels(outcome).observe(max(0.0, seconds))


def refused(status: int) -> None:
    REFUSED.labels(str(status)).inc()
