"""The HTTP adapter: AdmissionReviews in and out, every refusal a JSON 4xx, a failing reviewer a
denial (never a 500)."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.metrics import Page, parse
from tests.unit.webhooks.helpers import CONFIG, InMemorySaes, alice, review_body
from tests.webhook_cases import BAD_PODS, annotated_pod
from webhooks.mutate import mutate
from webhooks.review import AdmissionResponse, AdmissionReview
from webhooks.server import MAX_BODY_BYTES, init

ClientMaker = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(aiohttp_client: ClientMaker) -> TestClient[Any, Any]:
    reviewer = functools.partial(mutate, saes=InMemorySaes(alice()), config=CONFIG)
    return await aiohttp_client(init(reviewer=reviewer))


async def test_a_review_is_answered_with_a_review_for_the_same_uid(
    client: TestClient[Any, Any],
) -> None:
    body = review_body(annotated_pod())
    response = await client.post("/mutate", json=body)
    assert response.status == 200
    answer = await response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    assert answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch"
    assert "status" not in answer["response"]  # None members are left out


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "AdmissionReview"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}', "apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
async def test_a_body_that_is_not_a_review_is_a_json_400(
    client: TestClient[Any, Any], body: bytes, says: str
) -> None:
    response = await client.post("/mutate", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    answer = await response.json()
    assert says in answer["message"]
    assert isinstance(answer["details"], list)


async def test_a_review_with_a_wrong_member_type_names_the_member(
    client: TestClient[Any, Any],
) -> None:
    body = review_body(annotated_pod())
    body["request"]["uid"] = 7
    response = await client.post("/mutate", json=body)
    assert response.status == 400
    answer = await response.json()
    assert [d["parameter"] for d in answer["details"]] == ["request.uid"]


async def test_other_content_types_paths_methods_and_sizes_are_json_4xx(
    client: TestClient[Any, Any],
) -> None:
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[Callable[[], Any], int]] = [
        (lambda: client.post("/mutate", data=b"x", headers={"Content-Type": "text/plain"}), 415),
        (lambda: client.get("/mutate"), 405),
        (lambda: client.post("/validate", json={}), 404),
        (
            lambda: client.post(
                "/mutate", data=io.BytesIO(b" " * (MAX_BODY_BYTES + 1)), headers=json_type
            ),
            413,
        ),
    ]
    for request, status in cases:
        response = await request()
        assert response.status == status
        assert response.content_type == "application/json"
        assert (await response.json())["message"]


async def test_a_failing_reviewer_is_a_denial_with_an_incident_not_a_500(
    aiohttp_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(review: AdmissionReview) -> AdmissionResponse:
        raise RuntimeError("a bug")

    client = await aiohttp_client(init(reviewer=broken))
    body = review_body(annotated_pod())
    response = await client.post("/mutate", json=body)
    assert response.status == 200
    answer = (await response.json())["response"]
    assert answer["uid"] == body["request"]["uid"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 500
    assert "incident" in answer["status"]["message"]
    assert "a bug" not in json.dumps(answer)
    assert "a bug" in caplog.text


async def test_health_endpoints(client: TestClient[Any, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        response = await client.get(path)
        assert response.status == 200


async def test_metrics_count_reviews_by_outcome_and_refusals_by_status(
    aiohttp_client: ClientMaker,
) -> None:
    async def broken(review: AdmissionReview) -> AdmissionResponse:
        raise RuntimeError("a bug")

    good = await aiohttp_client(
        init(reviewer=functools.partial(mutate, saes=InMemorySaes(alice()), config=CONFIG))
    )
    bad = await aiohttp_client(init(reviewer=broken))

    async def page() -> Page:
        response = await good.get("/metrics")
        assert response.status == 200
        return parse(await response.text())

    def admissions(p: Page, outcome: str) -> float:
        return p.value("qss_webhook_admissions_total", outcome=outcome)

    before = await page()
    await good.post("/mutate", json=review_body(annotated_pod()))
    await good.post("/mutate", json=review_body(BAD_PODS[0].pod("bad")))
    plain = annotated_pod()
    plain["metadata"]["labels"] = {}
    plain["metadata"]["annotations"] = {}
    await good.post("/mutate", json=review_body(plain))
    await bad.post("/mutate", json=review_body(annotated_pod()))
    await good.post("/mutate", data=b"{", headers={"Content-Type": "application/json"})
    after = await page()

    for outcome in ("injected", "denied", "allowed", "error"):
        assert admissions(after, outcome) - admissions(before, outcome) == 1, outcome
    refused = "qss_webhook_requests_refused_total"
    assert after.value(refused, code="400") - before.value(refused, code="400") == 1
