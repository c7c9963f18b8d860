"""Reading 014 requests without a server: what is accepted, what is refused, and what the
refusal says (one ``details`` entry per wrong parameter)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from controllers.delivery.api import MAX_KEY_SIZE, MAX_KEYS_PER_REQUEST, MIN_KEY_SIZE
from controllers.etsi014.app import MAX_BODY_BYTES
from controllers.etsi014.requests import (
    KeyIdsRequest,
    KeyRequest,
    RequestError,
    parse_dec_keys_body,
    parse_dec_keys_query,
    parse_enc_keys_body,
    parse_enc_keys_query,
    parse_sae_id,
)

KEY_ID = "550e8400-e29b-41d4-a716-446655440000"
OTHER_ID = "bc490419-7d60-487f-adc1-4ddcc177c139"


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _refusal(call: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)
    error = caught.value
    assert error.details, "a refusal names at least one parameter"
    assert all(set(d) == {"parameter", "error"} for d in error.details)
    assert error.message == "; ".join(d["error"] for d in error.details)
    return error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", KeyRequest(number=1, size=None)),
        (b"  \n", KeyRequest(number=1, size=None)),
        (b"{}", KeyRequest(number=1, size=None)),
        (_body({"number": 3}), KeyRequest(number=3, size=None)),
        (_body({"number": 2, "size": 512}), KeyRequest(number=2, size=512)),
        (_body({"size": MIN_KEY_SIZE}), KeyRequest(size=MIN_KEY_SIZE)),
        (_body({"size": MAX_KEY_SIZE}), KeyRequest(size=MAX_KEY_SIZE)),
        (_body({"number": MAX_KEYS_PER_REQUEST}), KeyRequest(number=MAX_KEYS_PER_REQUEST)),
        (_body({"additional_slave_SAE_IDs": []}), KeyRequest()),
        (_body({"extension_mandatory": []}), KeyRequest()),
        (_body({"extension_optional": [{"abc_route_type": "direct"}]}), KeyRequest()),
        (_body({"number": 1, "something_new": True}), KeyRequest()),
    ],
)
def test_enc_keys_body_accepts_the_standard_members(body: bytes, expected: KeyRequest) -> None:
    assert parse_enc_keys_body(body) == expected


@pytest.mark.parametrize(
    ("body", "parameter", "fragment"),
    [
        (b"{", "body", "not valid JSON"),
        (b"\xff\xfe", "body", "not UTF-8"),
        (b"[1, 2]", "body", "must be a JSON object, got list"),
        (b'"number"', "body", "must be a JSON object, got str"),
        (_body({"number": 0}), "number", f"from 1 to {MAX_KEYS_PER_REQUEST}"),
        (_body({"number": -1}), "number", "got -1"),
        (_body({"number": MAX_KEYS_PER_REQUEST + 1}), "number", "max_key_per_request"),
        (_body({"number": "2"}), "number", 'must be a JSON integer, got "2"'),
        (_body({"number": 1.5}), "number", "must be a JSON integer, got 1.5"),
        (_body({"number": True}), "number", "must be a JSON integer, got true"),
        (_body({"number": None}), "number", "must be a JSON integer, got null"),
        (_body({"size": 100}), "size", "multiple of 8 bits, got 100"),
        (_body({"size": 0}), "size", f"from {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bits"),
        (_body({"size": MAX_KEY_SIZE + 8}), "size", f"got {MAX_KEY_SIZE + 8}"),
        (_body({"size": "256"}), "size", "must be a JSON integer"),
        (
            _body({"additional_slave_SAE_IDs": ["sae-c"]}),
            "additional_slave_SAE_IDs",
            "not supported",
        ),
        (_body({"additional_slave_SAE_IDs": "sae-c"}), "additional_slave_SAE_IDs", "an array"),
        (
            _body({"extension_mandatory": [{"abc_route_type": "direct"}]}),
            "extension_mandatory",
            'unsupported mandatory extension "abc_route_type"',
        ),
        (_body({"extension_mandatory": {"x": 1}}), "extension_mandatory", "array of objects"),
        (_body({"extension_mandatory": ["x"]}), "extension_mandatory", "array of objects"),
    ],
)
def test_enc_keys_body_refusals_say_what_was_wrong(
    body: bytes, parameter: str, fragment: str
) -> None:
    error = _refusal(parse_enc_keys_body, body)
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in error.message


def test_enc_keys_body_reports_every_wrong_member_at_once() -> None:
    error = _refusal(
        parse_enc_keys_body,
        _body(
            {
                "number": 0,
                "size": 7,
                "extension_mandatory": [{"abc_route_type": "direct", "abc_qos": "gold"}],
            }
        ),
    )
    assert [d["parameter"] for d in error.details] == [
        "number",
        "size",
        "extension_mandatory",
        "extension_mandatory",
    ]
    assert 'unsupported mandatory extension "abc_qos"' in error.message


def test_a_long_rejected_value_is_quoted_shortened() -> None:
    error = _refusal(parse_enc_keys_body, _body({"number": "x" * 1000}))
    assert "x" * 100 not in error.message
    assert "..." in error.message


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([], KeyRequest()),
        ([("number", "4")], KeyRequest(number=4)),
        ([("number", "2"), ("size", "128")], KeyRequest(number=2, size=128)),
        ([("size", "+64"), ("unrelated", "x")], KeyRequest(size=64)),
    ],
)
def test_enc_keys_query_accepts_number_and_size(
    query: list[tuple[str, str]], expected: KeyRequest
) -> None:
    assert parse_enc_keys_query(query) == expected


@pytest.mark.parametrize(
    ("query", "parameter", "fragment"),
    [
        ([("number", "abc")], "number", 'must be an integer, got "abc"'),
        ([("number", "1.0")], "number", "must be an integer"),
        ([("number", "")], "number", "must be an integer"),
        ([("number", "0")], "number", "got 0"),
        ([("number", "-3")], "number", "got -3"),
        ([("number", "1001")], "number", "max_key_per_request"),
        ([("number", "1"), ("number", "2")], "number", "may be given once, got 2 values"),
        ([("size", "7")], "size", "from 8 to"),
        ([("size", "12")], "size", "multiple of 8"),
        ([("size", "99999999999999")], "size", "must be an integer"),
    ],
)
def test_enc_keys_query_refusals_say_what_was_wrong(
    query: list[tuple[str, str]], parameter: str, fragment: str
) -> None:
    error = _refusal(parse_enc_keys_query, query)
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in error.message


def test_dec_keys_body_reads_key_ids_in_order_lower_case() -> None:
    body = _body(
        {
            "key_IDs": [
                {"key_ID": OTHER_ID},
                {"key_ID": KEY_ID.upper(), "key_ID_extension": {"x": 1}},
            ],
            "key_IDs_extension": {"y": 2},
        }
    )
    assert parse_dec_keys_body(body) == KeyIdsRequest(key_ids=(OTHER_ID, KEY_ID))


@pytest.mark.parametrize(
    ("body", "parameter", "fragment"),
    [
        (b"", "body", "not valid JSON"),
        (b"{}", "key_IDs", "must be an array of objects"),
        (_body({"key_IDs": KEY_ID}), "key_IDs", "must be an array of objects"),
        (_body({"key_IDs": []}), "key_IDs", "at least one key ID"),
        (_body({"key_IDs": [KEY_ID]}), "key_IDs[0]", "must be an object"),
        (_body({"key_IDs": [{}]}), "key_IDs[0].key_ID", "has no key_ID"),
        (_body({"key_IDs": [{"key_ID": "not-a-uuid"}]}), "key_IDs[0].key_ID", "must be a UUID"),
        (_body({"key_IDs": [{"key_ID": 7}]}), "key_IDs[0].key_ID", "got 7"),
        (_body({"key_IDs": [{"key_ID": "{" + KEY_ID + "}"}]}), "key_IDs[0].key_ID", "UUID"),
        (_body({"key_IDs": [{"key_ID": KEY_ID.replace("-", "")}]}), "key_IDs[0].key_ID", "UUID"),
        (
            _body({"key_IDs": [{"key_ID": KEY_ID}, {"key_ID": KEY_ID.upper()}]}),
            "key_IDs",
            f"names key ID {KEY_ID} twice",
        ),
        (
            _body({"key_IDs": [{"key_ID": KEY_ID, "key_ID_extension": "x"}]}),
            "key_IDs[0].key_ID_extension",
            "must be an object",
        ),
        (
            _body({"key_IDs": [{"key_ID": KEY_ID}], "key_IDs_extension": []}),
            "key_IDs_extension",
            "must be an object",
        ),
    ],
)
def test_dec_keys_body_refusals_say_what_was_wrong(
    body: bytes, parameter: str, fragment: str
) -> None:
    error = _refusal(parse_dec_keys_body, body)
    assert [d["parameter"] for d in error.details] == [parameter]
    assert fragment in error.message


def test_dec_keys_body_refuses_more_ids_than_one_request_may_name() -> None:
    ids = [{"key_ID": f"00000000-0000-4000-8000-{i:012x}"} for i in range(MAX_KEYS_PER_REQUEST + 1)]
    error = _refusal(parse_dec_keys_body, _body({"key_IDs": ids}))
    assert f"at most {MAX_KEYS_PER_REQUEST} keys" in error.message


def test_dec_keys_query_takes_one_or_repeated_key_ids() -> None:
    assert parse_dec_keys_query([("key_ID", KEY_ID)]) == KeyIdsRequest(key_ids=(KEY_ID,))
    assert parse_dec_keys_query(
        [("key_ID", KEY_ID), ("other", "x"), ("key_ID", OTHER_ID)]
    ) == KeyIdsRequest(key_ids=(KEY_ID, OTHER_ID))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ([], "key_ID must name at least one key ID"),
        ([("key_IDs", KEY_ID)], "key_ID must name at least one key ID"),
        (
            [("key_ID", "nope")],
            'key_ID must be a UUID such as 550e8400-e29b-41d4-a716-446655440000, got "nope"',
        ),
        ([("key_ID", KEY_ID), ("key_ID", KEY_ID)], "twice"),
    ],
)
def test_dec_keys_query_refusals_say_what_was_wrong(
    query: list[tuple[str, str]], fragment: str
) -> None:
    error = _refusal(parse_dec_keys_query, query)
    assert fragment in error.message


@pytest.mark.parametrize("sae_id", ["sae-a", "A", "sae_1.prod", "x" * 64])
def test_sae_ids_of_the_sae_crd_form_are_accepted(sae_id: str) -> None:
    assert parse_sae_id(sae_id, parameter="slave_SAE_ID") == sae_id


@pytest.mark.parametrize("sae_id", ["", "-sae", "sae b", "sae*", "ü", "x" * 65, ".hidden"])
def test_sae_ids_of_another_form_are_refused(sae_id: str) -> None:
    error = _refusal(lambda: parse_sae_id(sae_id, parameter="slave_SAE_ID"))
    assert error.details[0]["parameter"] == "slave_SAE_ID"
    assert "is not an SAE ID" in error.message


def test_the_largest_dec_keys_body_fits_the_body_limit_with_room_to_spare() -> None:
    ids = [
        {"key_ID": str(uuid.uuid4()), "key_ID_extension": {}} for _ in range(MAX_KEYS_PER_REQUEST)
    ]
    body = json.dumps({"key_IDs": ids}, indent=2).encode()
    assert len(body) * 2 < MAX_BODY_BYTES
    assert len(parse_dec_keys_body(body).key_ids) == MAX_KEYS_PER_REQUEST
