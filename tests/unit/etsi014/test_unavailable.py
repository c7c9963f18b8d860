"""When keys cannot be had: 503 with the delivery layer's reason for what may heal, 500 with a
generic message for what should not happen, and JSON for aiohttp's own refusals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from controllers.delivery.api import (
    DeliveredKey,
    DeliveryError,
    InsufficientKeys,
    NoRoute,
    PeerUnreachable,
    SlaveBacklog,
)
from controllers.etsi014.app import MAX_BODY_BYTES
from tests.etsi014_client import Etsi014Error
from tests.unit.etsi014.conftest import GET_KEYS_TIMEOUT, Kme


async def _error(call: Awaitable[Any], status: int) -> Etsi014Error:
    with pytest.raises(Etsi014Error) as caught:
        await call
    assert caught.value.status == status, caught.value
    assert caught.value.content_type == "application/json"
    return caught.value


async def test_enc_keys_beyond_the_stock_is_503_after_the_timeout(kme: Kme) -> None:
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    error = await _error(kme.sae("sae-a").enc_keys("sae-b", number=101), 503)
    assert loop_time() - started >= GET_KEYS_TIMEOUT
    assert "not available" in (error.message or "")
    assert error.details[0]["reason"] == "InsufficientKeys"
    assert error.details[0]["retryable"] is True
    # Nothing was taken: the whole set or nothing.
    assert (await kme.sae("sae-a").status("sae-b"))["stored_key_count"] == 100


@pytest.mark.parametrize(
    "exc",
    [
        InsufficientKeys("only 3 keys of 256 bits towards sae-b"),
        NoRoute("no usable key stream leads to node-b"),
        PeerUnreachable("node-b did not answer in time"),
        DeliveryError("something the delivery layer could not do"),
    ],
)
async def test_delivery_failures_that_may_heal_are_503(kme: Kme, exc: DeliveryError) -> None:
    kme.delivery.fail_with = exc
    error = await _error(kme.sae("sae-a").enc_keys("sae-b", number=1), 503)
    assert error.message == exc.message
    assert error.details[0]["reason"] == exc.reason
    assert error.details[0]["request_id"] == kme.delivery.calls[-1][1]["request_id"]


async def test_a_refusal_for_want_of_keys_is_told_with_the_caller_and_no_other_is(
    kme: Kme,
) -> None:
    kme.delivery.fail_with = PeerUnreachable("node-b did not answer in time")
    await _error(kme.sae("sae-a").enc_keys("sae-b", number=1), 503)
    assert kme.scarcity == []
    for exc in (
        InsufficientKeys("only 3 keys of 256 bits towards sae-b"),
        SlaveBacklog("node-b holds as many keys for slave SAEs as it may"),
    ):
        kme.delivery.fail_with = exc
        await _error(kme.sae("sae-a").enc_keys("sae-b", number=1), 503)
    assert kme.scarcity == [
        ("sae-a", "InsufficientKeys", "only 3 keys of 256 bits towards sae-b"),
        ("sae-a", "SlaveBacklog", "node-b holds as many keys for slave SAEs as it may"),
    ]


async def test_dec_keys_with_the_peer_unreachable_is_503(kme: Kme) -> None:
    kme.delivery.fail_with = PeerUnreachable("node-b broke off the connection")
    error = await _error(
        kme.sae("sae-b").dec_keys("sae-a", ["550e8400-e29b-41d4-a716-446655440000"]), 503
    )
    assert error.details[0]["reason"] == "PeerUnreachable"


async def test_an_unexpected_failure_is_500_with_the_cause_only_in_the_log(
    kme: Kme, caplog: pytest.LogCaptureFixture
) -> None:
    kme.delivery.fail_with = RuntimeError("redis said something internal")
    error = await _error(kme.sae("sae-a").enc_keys("sae-b", number=1), 500)
    assert set(error.body) == {"message"}
    assert "internal error" in (error.message or "")
    assert "redis" not in (error.message or "")
    request_id = kme.delivery.calls[-1][1]["request_id"]
    assert request_id in (error.message or "")
    assert any(
        request_id in r.getMessage() and r.exc_info is not None and r.levelno == logging.ERROR
        for r in caplog.records
    )


async def test_keys_of_the_wrong_size_from_the_delivery_layer_are_not_handed_out(
    kme: Kme, caplog: pytest.LogCaptureFixture
) -> None:
    material = b"\x42" * 16
    kme.delivery.broken_answer = [DeliveredKey("550e8400-e29b-41d4-a716-446655440000", material)]
    error = await _error(kme.sae("sae-a").enc_keys("sae-b", number=1, size=256), 500)
    assert "QkJC" not in str(error.body)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "wrong size" in "\n".join(str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert material.hex() not in logged


async def test_unknown_paths_and_methods_are_json_errors(kme: Kme) -> None:
    client = kme.sae("sae-a")
    base = f"{kme.server.url}/api/v1/keys"
    not_found = await client.raw("GET", f"{base}/sae-b/keys")
    assert not_found.status == 404
    assert "/enc_keys" in not_found.json()["message"]
    for method, path, allowed in (
        ("DELETE", "/sae-b/enc_keys", "GET, POST"),
        ("POST", "/sae-b/status", "GET"),
        ("HEAD", "/sae-b/enc_keys", "GET, POST"),
    ):
        answer = await client.raw(method, base + path)
        assert answer.status == 405, (method, path)
        assert answer.headers["Allow"] == allowed
        if method != "HEAD":
            assert f"use {allowed}" in answer.json()["message"]
    # A HEAD must not have taken keys on the way.
    assert not [name for name, _ in kme.delivery.calls if name == "get_keys"]


async def test_an_oversized_body_is_a_json_413_and_takes_nothing(kme: Kme) -> None:
    answer = await kme.sae("sae-b").raw(
        "POST", f"{kme.server.url}/api/v1/keys/sae-a/dec_keys", data=b" " * (MAX_BODY_BYTES + 1)
    )
    assert answer.status == 413
    assert "too large" in answer.json()["message"]
    assert kme.delivery.calls == []
