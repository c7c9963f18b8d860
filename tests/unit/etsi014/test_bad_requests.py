"""Malformed 014 requests over HTTPS: each is a 400 ``{message, details}`` saying what was
wrong, and none of them takes a key."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controllers.delivery.api import MAX_KEYS_PER_REQUEST
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map
from tests.unit.etsi014.conftest import Kme

KEY_ID = "550e8400-e29b-41d4-a716-446655440000"


async def _bad_request(call: Awaitable[Any]) -> Etsi014Error:
    with pytest.raises(Etsi014Error) as caught:
        await call
    error = caught.value
    assert error.status == 400, error
    assert error.content_type == "application/json"
    assert set(error.body) == {"message", "details"}
    assert isinstance(error.details, list)
    assert error.details
    assert all(isinstance(d, dict) for d in error.details)
    return error


def _stock_untouched(kme: Kme) -> None:
    assert all(pair.stock_bits == 100 * 256 for pair in kme.delivery.pairs.values())
    assert not [name for name, _ in kme.delivery.calls if name == "get_keys"]


@pytest.mark.parametrize(
    ("body", "parameter", "fragment"),
    [
        (b"{number: 1}", "body", "not valid JSON"),
        (b"[]", "body", "must be a JSON object"),
        (json.dumps({"number": 0}).encode(), "number", "from 1 to 1000"),
        (json.dumps({"number": -2}).encode(), "number", "got -2"),
        (json.dumps({"number": MAX_KEYS_PER_REQUEST + 1}).encode(), "number", "got 1001"),
        (json.dumps({"number": "3"}).encode(), "number", "must be a JSON integer"),
        (json.dumps({"size": 100}).encode(), "size", "multiple of 8"),
        (json.dumps({"size": 4}).encode(), "size", "from 8 to 32768 bits"),
        (json.dumps({"size": 40000}).encode(), "size", "from 8 to 32768 bits"),
        (json.dumps({"size": 2.5}).encode(), "size", "must be a JSON integer"),
        (
            json.dumps({"additional_slave_SAE_IDs": ["sae-c"]}).encode(),
            "additional_slave_SAE_IDs",
            "max_SAE_ID_count is 0",
        ),
        (
            json.dumps({"extension_mandatory": [{"abc_route_type": "direct"}]}).encode(),
            "extension_mandatory",
            'unsupported mandatory extension "abc_route_type"',
        ),
    ],
)
async def test_post_enc_keys_with_a_bad_body_is_400(
    kme: Kme, body: bytes, parameter: str, fragment: str
) -> None:
    client = kme.sae("sae-a")
    error = await _bad_request(client.request("POST", "sae-b", "enc_keys", data=body))
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in (error.message or "")
    _stock_untouched(kme)


# Regression (issue 9): numbers beyond Python's 4,300-digit limit and deep nesting were 500s.
_HUGE = b"9" * 5000
_LARGE = b"9" * 4000
_DEEP = b"[" * 50_000 + b"]" * 50_000


@pytest.mark.parametrize(
    ("body", "parameter", "fragment"),
    [
        (b'{"number": ' + _HUGE + b"}", "body", "not valid JSON"),
        (b'{"size": ' + _HUGE + b"}", "body", "not valid JSON"),
        (b'{"number": ' + _LARGE + b"}", "number", "an integer of more than 40 digits"),
        (b'{"size": -' + _LARGE + b"}", "size", "an integer of more than 40 digits"),
        (b'{"number": ' + _DEEP + b"}", "body", "not valid JSON"),
        (b'{"size": ' + _DEEP + b"}", "body", "not valid JSON"),
        (b'{"number": 1e999}', "number", "must be a JSON integer"),
        (b'{"number": NaN}', "body", "not valid JSON"),
    ],
)
async def test_enc_keys_with_huge_numbers_or_deep_nesting_is_400_not_500(
    kme: Kme, body: bytes, parameter: str, fragment: str
) -> None:
    error = await _bad_request(kme.sae("sae-a").request("POST", "sae-b", "enc_keys", data=body))
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in (error.message or "")
    _stock_untouched(kme)


@pytest.mark.parametrize(
    "body",
    [
        b'{"key_IDs": [' + _HUGE + b"]}",
        b'{"key_IDs": [' + _LARGE + b"]}",
        b'{"key_IDs": [{"key_ID": ' + _LARGE + b"}]}",
        b'{"key_IDs": ' + _DEEP + b"}",
        b'{"key_IDs": [{"key_ID": ' + _DEEP + b"}]}",
    ],
)
async def test_dec_keys_with_huge_numbers_or_deep_nesting_is_400_not_500(
    kme: Kme, body: bytes
) -> None:
    await _bad_request(kme.sae("sae-b").request("POST", "sae-a", "dec_keys", data=body))
    assert not [name for name, _ in kme.delivery.calls if name == "get_keys_with_ids"]


async def test_optional_extensions_are_ignored(kme: Kme) -> None:
    container = await kme.sae("sae-a").enc_keys(
        "sae-b", number=1, extra={"extension_optional": [{"abc_route_type": "direct"}]}
    )
    assert len(key_map(container)) == 1


@pytest.mark.parametrize(
    ("params", "parameter", "fragment"),
    [
        ([("number", "abc")], "number", 'must be an integer, got "abc"'),
        ([("number", "0")], "number", "got 0"),
        ([("number", "-1")], "number", "got -1"),
        ([("number", "1001")], "number", "max_key_per_request"),
        ([("size", "12")], "size", "multiple of 8"),
        ([("number", "1"), ("number", "1")], "number", "may be given once"),
    ],
)
async def test_get_enc_keys_with_a_bad_query_is_400(
    kme: Kme, params: list[tuple[str, str]], parameter: str, fragment: str
) -> None:
    client = kme.sae("sae-a")
    error = await _bad_request(client.request("GET", "sae-b", "enc_keys", params=params))
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in (error.message or "")
    _stock_untouched(kme)


@pytest.mark.parametrize(
    ("body", "parameter", "fragment"),
    [
        (b"", "body", "not valid JSON"),
        (b"{}", "key_IDs", "must be an array of objects"),
        (json.dumps({"key_IDs": []}).encode(), "key_IDs", "at least one key ID"),
        (json.dumps({"key_IDs": [KEY_ID]}).encode(), "key_IDs[0]", "must be an object"),
        (json.dumps({"key_IDs": [{"key_ID": "k1"}]}).encode(), "key_IDs[0].key_ID", "UUID"),
        (
            json.dumps({"key_IDs": [{"key_ID": KEY_ID}, {"key_ID": KEY_ID}]}).encode(),
            "key_IDs",
            "twice",
        ),
    ],
)
async def test_post_dec_keys_with_a_bad_body_is_400(
    kme: Kme, body: bytes, parameter: str, fragment: str
) -> None:
    client = kme.sae("sae-b")
    error = await _bad_request(client.request("POST", "sae-a", "dec_keys", data=body))
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in (error.message or "")
    assert not [name for name, _ in kme.delivery.calls if name == "get_keys_with_ids"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([], "key_ID must name at least one key ID"),
        ([("key_ID", "12345")], 'got "12345"'),
    ],
)
async def test_get_dec_keys_with_a_bad_query_is_400(
    kme: Kme, params: list[tuple[str, str]], fragment: str
) -> None:
    client = kme.sae("sae-b")
    error = await _bad_request(client.request("GET", "sae-a", "dec_keys", params=params))
    assert error.details[0]["parameter"] == "key_ID"
    assert fragment in (error.message or "")


@pytest.mark.parametrize("sae_id", ["bad*id", "-sae", "sae b", "x" * 65])
async def test_a_path_sae_id_of_the_wrong_form_is_400(kme: Kme, sae_id: str) -> None:
    client = kme.sae("sae-a")
    calls: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: client.status(sae_id), "slave_SAE_ID"),
        (lambda: client.enc_keys(sae_id, number=1), "slave_SAE_ID"),
        (lambda: client.dec_keys(sae_id, [KEY_ID], method="GET"), "master_SAE_ID"),
    ]
    for call, parameter in calls:
        error = await _bad_request(call())
        assert error.details[0]["parameter"] == parameter
        assert "is not an SAE ID" in (error.message or "")
    _stock_untouched(kme)


async def test_an_unknown_slave_sae_is_400_not_retryable(kme: Kme) -> None:
    client = kme.sae("sae-a")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.status("sae-zz"),
        lambda: client.enc_keys("sae-zz", number=1, size=256),
    ]
    for call in calls:
        error = await _bad_request(call())
        assert error.details[0]["reason"] == "UnknownSae"
        assert error.details[0]["retryable"] is False
        assert "sae-zz" in (error.message or "")


async def test_an_sae_not_known_yet_is_503_retryable(kme: Kme) -> None:
    """Regression (issue 9): an SAE of a neighbour that had not told us its SAEs yet (after a
    restart) was a 400 that said retryable, which 014 clients treat as final."""
    kme.delivery.not_known_yet.add("sae-zz")
    client = kme.sae("sae-a")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.status("sae-zz"),
        lambda: client.enc_keys("sae-zz", number=1, size=256),
    ]
    for call in calls:
        with pytest.raises(Etsi014Error) as caught:
            await call()
        assert caught.value.status == 503
        assert caught.value.details[0]["reason"] == "UnknownSae"
        assert caught.value.details[0]["retryable"] is True
    assert all(pair.stock_bits == 100 * 256 for pair in kme.delivery.pairs.values())


async def test_unknown_key_ids_are_400(kme: Kme) -> None:
    error = await _bad_request(kme.sae("sae-b").dec_keys("sae-a", [KEY_ID]))
    assert error.details[0]["reason"] == "UnknownKeys"
    assert KEY_ID in (error.message or "")


async def test_the_standard_client_sees_nothing_taken_by_a_refused_request(kme: Kme) -> None:
    client: Etsi014Client = kme.sae("sae-a")
    await _bad_request(client.enc_keys("sae-b", number=2, size=7))
    assert (await client.status("sae-b"))["stored_key_count"] == 100
