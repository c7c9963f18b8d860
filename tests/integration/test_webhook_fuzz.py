"""Property-based fuzzing of the webhook's endpoint over real TLS (hypothesis): AdmissionReviews
built from the pods users write and from plain junk, and raw bodies, sent to the running webhook
process (the session fixture, registered with node-a's API server, which its Sae reads use).

For every request: never a 5xx; a 200 is a well-formed AdmissionReview answer for the same uid
whose denials are user errors (400) or a retryable 503, never the webhook's own failure (500);
anything else is a JSON 4xx with a message. After all of it the webhook still admits a good pod.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qss_api.wire import decode
from tests.cluster.webhook import RunningWebhook
from tests.webhook_cases import annotated_pod
from webhooks.review import AdmissionReviewResponse
from webhooks.server import MUTATE_PATH

pytestmark = pytest.mark.cluster

# At least 1,000 requests in all: structured reviews, reviews of junk, and raw bodies.
REVIEWS, JUNK_REVIEWS, RAW_BODIES = 500, 250, 350
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


class Endpoint:
    """One keep-alive HTTPS connection to the webhook, trusting the CA the API server trusts."""

    def __init__(self, webhook: RunningWebhook) -> None:
        self.webhook = webhook
        self.sent = 0
        self._connection: http.client.HTTPSConnection | None = None

    def _connect(self) -> http.client.HTTPSConnection:
        context = self.webhook.trusted_context()
        return http.client.HTTPSConnection(
            "127.0.0.1", self.webhook.port, context=context, timeout=10
        )

    def post(self, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
        for attempt in range(2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request(
                    "POST", MUTATE_PATH, body=body, headers={"Content-Type": content_type}
                )
                response = self._connection.getresponse()
                self.sent += 1
                return response.status, response.getheader("Content-Type") or "", response.read()
            except (ssl.SSLError, ConnectionError, http.client.HTTPException):
                # The serving certificate rotated under the connection: connect again.
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@pytest.fixture(scope="module")
def endpoint(webhook: RunningWebhook) -> Iterator[Endpoint]:
    e = Endpoint(webhook)
    yield e
    e.close()


def check_answer(status: int, content_type: str, body: bytes, *, uid: str | None) -> None:
    assert status < 500, body[:300]
    if status == 200:
        answer = decode(AdmissionReviewResponse, body).response
        if uid is not None:
            assert answer.uid == uid
        if not answer.allowed:
            assert answer.status is not None
            assert answer.status.code in (400, 503), answer.status
            assert answer.status.message
        if answer.patch is not None:
            assert isinstance(json.loads(base64.b64decode(answer.patch)), list)
        return
    assert 400 <= status < 500
    assert content_type.startswith("application/json"), content_type
    document = json.loads(body)
    assert isinstance(document["message"], str)
    assert document["message"]


# --- strategies ---------------------------------------------------------------------------------

ANNOTATION_KEYS = [
    "qss.dev/sae",
    "qss.dev/peer-sae",
    "qss.dev/role",
    "qss.dev/key-size",
    "qss.dev/key-number",
    "qss.dev/refresh-interval",
    "qss.dev/max-keys",
    "qss.dev/mount-path",
    "qss.dev/inject-status",
    "qss.dev/other",
    "example.com/x",
]
text = st.text(max_size=40)
interesting = st.one_of(
    text,
    st.sampled_from(
        [
            "",
            "master",
            "slave",
            "alice",
            "256",
            "255",
            "0",
            "-1",
            "30s",
            "1h",
            "/keys",
            "/",
            "injected",
            "9" * 30,
        ]
    ),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    pod = annotated_pod(
        draw(st.sampled_from(["app", "x", "p-1"])), role=draw(st.sampled_from(["master", "slave"]))
    )
    meta, spec = pod["metadata"], pod["spec"]
    for key in draw(st.lists(st.sampled_from(ANNOTATION_KEYS), max_size=5)):
        meta["annotations"][key] = draw(interesting)
    for key in draw(st.lists(st.sampled_from(ANNOTATION_KEYS[:3]), max_size=2)):
        meta["annotations"].pop(key, None)
    meta["labels"]["qss.dev/inject"] = draw(st.sampled_from(["true", "true", "false", "yes"]))
    if draw(st.booleans()):
        spec["securityContext"]["runAsUser"] = draw(st.integers(min_value=-5, max_value=2**40))
    if draw(st.booleans()):
        spec["containers"].append(
            {
                "name": draw(st.sampled_from(["qss-sidecar", "helper", "app2"])),
                "volumeMounts": [
                    {
                        "name": draw(st.sampled_from(["qss-keys", "data"])),
                        "mountPath": draw(interesting),
                    }
                ],
                "ports": [{"containerPort": draw(st.sampled_from([80, 8014, 65536]))}],
            }
        )
    if draw(st.booleans()):
        spec[
            draw(
                st.sampled_from(
                    ["hostNetwork", "shareProcessNamespace", "initContainers", "volumes"]
                )
            )
        ] = draw(json_value)
    return pod


def review(
    pod: Any, *, namespace: Any, operation: Any = "CREATE", uid: Any = None
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "fuzz"},
            "object": pod,
        },
    }


@given(pod=pods(), namespace=st.sampled_from(["default", "kube-system", "team-a", "nope"]))
@settings(FUZZ, max_examples=REVIEWS)
def test_reviews_of_pods_users_might_write(
    endpoint: Endpoint, pod: dict[str, Any], namespace: str
) -> None:
    body = review(pod, namespace=namespace)
    status, content_type, answer = endpoint.post(json.dumps(body).encode())
    assert status == 200, answer[:300]
    check_answer(status, content_type, answer, uid=body["request"]["uid"])


@given(
    pod=json_value,
    namespace=json_value,
    operation=st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]), json_value),
    uid=st.one_of(st.none(), json_value),
    drop=st.sampled_from([None, "uid", "kind", "operation", "userInfo", "resource"]),
)
@settings(FUZZ, max_examples=JUNK_REVIEWS)
def test_reviews_of_junk(
    endpoint: Endpoint, pod: Any, namespace: Any, operation: Any, uid: Any, drop: str | None
) -> None:
    body = review(pod, namespace=namespace, operation=operation, uid=uid)
    if drop is not None:
        body["request"].pop(drop)
    status, content_type, answer = endpoint.post(json.dumps(body).encode())
    check_answer(
        status, content_type, answer, uid=body["request"].get("uid") if status == 200 else None
    )


@given(
    body=st.one_of(
        st.binary(max_size=2000),
        json_value.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda cut, v: (
                json.dumps(review(annotated_pod(), namespace="default")).encode()[:cut] + v
            ),
            st.integers(min_value=0, max_value=1500),
            st.binary(max_size=20),
        ),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/json", "text/plain", "application/x-www-form-urlencoded"]
    ),
)
@settings(FUZZ, max_examples=RAW_BODIES)
def test_raw_bodies(endpoint: Endpoint, body: bytes, content_type: str) -> None:
    status, answer_type, answer = endpoint.post(body, content_type)
    check_answer(status, answer_type, answer, uid=None)


def test_after_the_fuzzing_the_webhook_is_up_and_sent_at_least_a_thousand(
    endpoint: Endpoint, webhook: RunningWebhook
) -> None:
    assert endpoint.sent >= 1000
    assert webhook.proc is not None
    assert webhook.proc.poll() is None
    body = review(annotated_pod(), namespace="default")
    status, content_type, answer = endpoint.post(json.dumps(body).encode())
    check_answer(status, content_type, answer, uid=body["request"]["uid"])
    assert "Traceback" not in webhook.log.read_text()
