"""The webhook's HTTP adapter: decode an AdmissionReview, hand it to the reviewer, encode the
answer. No decision is made here.

``webhooks.main`` builds the app with ``init(reviewer=...)`` (the reviewer is
``webhooks.mutate.mutate`` with its Sae directory and config bound) and serves it over TLS.
Routes:

- ``POST /mutate``: an ``admission.k8s.io/v1`` AdmissionReview in, one out (HTTP 200, allowed
  or denied). A body that is not an AdmissionReview is a 400 (415 if not JSON, 413 if too
  large) with a JSON ``{message, details}`` body, never a 5xx.
- ``GET /healthz``, ``GET /readyz``: liveness and readiness (ready once a certificate is loaded,
  which ``main`` ensures before it listens).
- ``GET /metrics``: Prometheus metrics (``webhooks.metrics``): admissions by outcome, their
  latency, refused requests.

If the reviewer itself fails (a bug), the review is denied with a message naming a request ID
and the cause goes to the log only: an opted-in pod is never admitted without keys, and the API
server never sees a 500.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from qss_api.http_errors import error_response, json_errors
from qss_api.wire import BadMessage
from qss_api.wire import decode as decode_wire
from webhooks import metrics
from webhooks.mutate import deny
from webhooks.review import AdmissionResponse, AdmissionReview, encode_review

log = logging.getLogger(__name__)

Reviewer = Callable[[AdmissionReview], Awaitable[AdmissionResponse]]

MUTATE_PATH: Final = "/mutate"
# The API server admits objects up to 3 MiB; a review carries the object (CREATE has no old one)
# and its envelope. Twice that bounds what is read before it is refused.
MAX_BODY_BYTES: Final = 6 * 1024 * 1024
# The code of a denial caused by the webhook's own failure.
CODE_INTERNAL: Final = 500

REVIEWER: Final[web.AppKey[Reviewer]] = web.AppKey("qss_webhook_reviewer")


async def _review(request: web.Request) -> web.Response:
    started = time.monotonic()
    if request.content_type != "application/json":
        return error_response(
            415, f"send an AdmissionReview as application/json, not {request.content_type!r}"
        )
    body = await request.read()
    try:
        review = decode_wire(AdmissionReview, body, what="AdmissionReview")
    except BadMessage as exc:
        return error_response(400, exc.message, exc.problems)
    outcome: metrics.Outcome
    try:
        answer = await request.app[REVIEWER](review)
        outcome = ("injected" if answer.patch else "allowed") if answer.allowed else "denied"
    except Exception:
        outcome = "error"
        incident = str(uuid.uuid4())
        log.exception("review %s (uid %s) failed", incident, review.request.uid)
        answer = deny(
            review.request.uid,
            f"the kube-qss webhook failed on this pod (incident {incident} in its log); retry, "
            "and report it if it persists",
            code=CODE_INTERNAL,
        )
    metrics.reviewed(outcome, time.monotonic() - started)
    return web.Response(body=encode_review(answer), content_type="application/json")


async def _healthy(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def _count_refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every 4xx this server answers, counted by status (outside the JSON-error middleware, so
    aiohttp's own refusals count too)."""
    response = await handler(request)
    if response.status >= 400:
        metrics.refused(response.status)
    return response


def init(*, reviewer: Reviewer) -> web.Application:
    errors = json_errors(serves=f"POST AdmissionReviews to {MUTATE_PATH}")
    app = web.Application(middlewares=[_count_refusals, errors], client_max_size=MAX_BODY_BYTES)
    app[REVIEWER] = reviewer
    app.router.add_post(MUTATE_PATH, _review)
    app.router.add_get("/healthz", _healthy, allow_head=False)
    app.router.add_get("/readyz", _healthy, allow_head=False)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.REGISTRY, disable_compression=True))
    return app
