"""qss_api.wire: every message is read strictly, and a bad one says what is wrong without
quoting it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qss_api.wire import BadMessage, KeyBits, SaeId, Uuid, WireModel, check, decode, encode

SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA=="


class Sample(WireModel):
    request_id: Uuid
    sae: SaeId
    size_bits: KeyBits
    key_ids: tuple[Uuid, ...] = ()


GOOD = {"request_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "sae": "alice", "size_bits": 256}


def test_a_good_message_round_trips_through_encode_and_decode() -> None:
    message = decode(Sample, json.dumps(GOOD))
    assert message.size_bits == 256
    assert decode(Sample, encode(message)) == message


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({**GOOD, "size_bits": True}, "size_bits"),
        ({**GOOD, "size_bits": "256"}, "size_bits"),
        ({**GOOD, "size_bits": 7}, "size_bits"),
        ({**GOOD, "size_bits": 2**70}, "size_bits"),
        ({**GOOD, "sae": "bad id!"}, "sae"),
        ({**GOOD, "request_id": "X"}, "request_id"),
        ({**GOOD, "extra": 1}, "extra"),
        ({**GOOD, "key_ids": 5}, "key_ids"),
    ],
)
def test_a_wrong_field_is_named_in_the_problems(body: dict[str, object], parameter: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode(Sample, json.dumps(body))
    assert parameter in [p["parameter"] for p in caught.value.problems]


def test_deep_nesting_and_huge_numbers_are_bad_messages_not_crashes() -> None:
    for body in ("[" * 100_000 + "]" * 100_000, '{"size_bits": ' + "9" * 5000 + "}"):
        with pytest.raises(BadMessage, match="not valid JSON"):
            decode(Sample, body)


def test_problems_never_quote_the_offending_value() -> None:
    with pytest.raises(BadMessage) as caught:
        decode(Sample, json.dumps({**GOOD, "sae": SECRET, "request_id": SECRET}))
    assert SECRET not in str(caught.value)
    assert SECRET not in json.dumps(caught.value.problems)


def test_check_applies_the_same_rules_to_parsed_values() -> None:
    assert check(Sample, {**GOOD, "key_ids": [GOOD["request_id"]]}).key_ids == (GOOD["request_id"],)
    with pytest.raises(BadMessage):
        check(Sample, {**GOOD, "size_bits": True})
    with pytest.raises(BadMessage, match="not plain JSON"):
        check(Sample, {**GOOD, "size_bits": float("nan")})


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=20))
def test_any_json_value_is_a_message_or_a_bad_message(value: object) -> None:
    body = json.dumps(value)
    try:
        decode(Sample, body)
    except BadMessage as exc:
        problems = exc.problems
    else:
        problems = [{"parameter": "", "error": "accepted"}]
    assert problems  # never an empty refusal, never another exception
