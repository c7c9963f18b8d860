"""LSAs and routing messages on the wire: read strictly, one canonical encoding to sign, and a
signature that breaks when anything signed changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controllers.routing.messages import Exchange, Flood, Hello, LinkEntry, Lsa, signed_bytes
from controllers.routing.signing import RoutingKey, verify
from qss_api.wire import BadMessage, decode, encode
from tests.unit.routing.helpers import signed

KEY = RoutingKey()


def _k_lsa() -> Lsa:
    other = RoutingKey()
    return signed(
        KEY,
        type="K",
        source="node-a",
        links=(
            LinkEntry(node="node-b", cost=50_000, key=other.public),
            LinkEntry(node="node-c", cost=1_000, key=other.public),
        ),
    )


def test_an_lsa_round_trips_through_the_wire_and_still_verifies() -> None:
    lsa = _k_lsa()
    read = decode(Lsa, encode(lsa))
    assert read == lsa
    assert verify(read.key, read.signature, read.signed)


def test_the_signed_bytes_leave_out_signature_and_age_and_nothing_else() -> None:
    lsa = signed(KEY, saes=("alice", "bob"))
    aged = lsa.model_copy(update={"age": 30})
    assert signed_bytes(aged) == signed_bytes(lsa)
    assert verify(aged.key, aged.signature, signed_bytes(aged))
    body = json.loads(signed_bytes(lsa).split(b"\n", 1)[1])
    assert set(body) == {
        "version", "type", "source", "seq", "timestamp", "lifetime", "key", "saes", "links"
    }  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 11},
        {"saes": ("alice", "mallory")},
        {"source": "node-x"},
        {"lifetime": 3600},
        {"timestamp": 1},
        {"type": "K"},
    ],
)
def test_changing_any_signed_field_breaks_the_signature(change: dict[str, Any]) -> None:
    lsa = signed(KEY, saes=("alice",))
    forged = lsa.model_copy(update=change)
    assert not verify(forged.key, forged.signature, signed_bytes(forged))


def test_a_signature_by_another_key_does_not_verify() -> None:
    lsa = signed(RoutingKey(), saes=("alice",))
    assert not verify(KEY.public, lsa.signature, lsa.signed)


def _wire(**change: Any) -> bytes:
    body = json.loads(encode(_k_lsa()))
    body.update(change)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"version": 2}, "version"),
        ({"type": "X"}, "type"),
        ({"source": "Node A"}, "source"),
        ({"seq": 0}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": "5"}, "seq"),
        ({"lifetime": 5}, "lifetime"),
        ({"key": "short"}, "key"),
        ({"signature": "x" * 86}, "signature"),
        ({"age": -1}, "age"),
        ({"saes": ["b", "a"]}, ""),  # a K packet with SAEs, and unsorted at that
        ({"links": [{"node": "node-b", "cost": 0, "key": KEY.public}]}, "links.0.cost"),
        ({"links": [{"node": "node-a", "cost": 1000, "key": KEY.public}]}, ""),
        ({"extra": 1}, "extra"),
        ({"source": None}, "source"),
    ],
)
def test_malformed_lsas_are_refused_naming_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(BadMessage) as refused:
        decode(Lsa, _wire(**change))
    assert any(p["parameter"].startswith(where) for p in refused.value.problems), refused.value


def test_lists_must_be_sorted_and_unique() -> None:
    body = json.loads(encode(signed(KEY, saes=("a", "b"))))
    for saes in (["b", "a"], ["a", "a"]):
        with pytest.raises(BadMessage, match="sorted and unique"):
            decode(Lsa, json.dumps({**body, "saes": saes}))
    links = json.loads(encode(_k_lsa()))["links"]
    with pytest.raises(BadMessage, match="sorted by node"):
        decode(Lsa, _wire(links=list(reversed(links))))


def test_an_sae_id_that_is_not_one_is_refused() -> None:
    body = json.loads(encode(signed(KEY, saes=("a",))))
    with pytest.raises(BadMessage) as refused:
        decode(Lsa, json.dumps({**body, "saes": ["bad id!"]}))
    assert refused.value.problems[0]["parameter"] == "saes.0"
    assert "bad id" not in refused.value.message  # values are never quoted back


def test_messages_carry_lsas_and_name_their_sender() -> None:
    lsa = _k_lsa()
    hello = Hello(version=1, node="node-a", key=KEY.public)
    assert decode(Exchange, encode(Exchange(hello=hello, lsas=(lsa,)))).lsas == (lsa,)
    assert decode(Flood, encode(Flood(forwarder="node-b", lsas=(lsa,)))).forwarder == "node-b"
    with pytest.raises(BadMessage):
        decode(Flood, b'{"forwarder": "node-b", "lsas": [{}]}')
    with pytest.raises(BadMessage):
        decode(Hello, b'{"version": 1, "node": "node-a"}')


def test_a_copy_with_other_content_is_signed_over_its_own_content() -> None:
    lsa = signed(KEY, saes=("alice",))
    assert verify(lsa.key, lsa.signature, lsa.signed)  # caches the signed bytes
    altered = lsa.model_copy(update={"saes": ("mallory",)})
    assert altered.signed == signed_bytes(altered) != lsa.signed
    assert not verify(altered.key, altered.signature, altered.signed)
    moved = lsa.model_copy(update={"source": "node-x"})
    assert moved.ident == ("node-x", "S")
    aged = lsa.model_copy(update={"age": 5})
    assert aged.signed is lsa.signed  # age is not signed: the cache may travel
