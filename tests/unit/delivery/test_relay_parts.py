"""The key relay's pure parts: pads and tags (``relay_pad``), its messages' validation
(``relay_messages``), and the relay's plan from a route (``NodeKeyDelivery.route``: which pool
and which path a request for an SAE beyond the neighbours uses)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import pytest

from controllers.delivery.api import NoRoute
from controllers.delivery.pools import PoolKey, Pools
from controllers.delivery.relay_messages import MAX_RELAY_BYTES, RelayCommit, RelayPrepare
from controllers.delivery.relay_pad import (
    TAG_BYTES,
    BadTag,
    header_bytes,
    open_sealed,
    pad_count,
    seal,
    tag_keys_needed,
)
from controllers.delivery.service import NodeKeyDelivery
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.saes import SaeDirectory
from qss_api.wire import BadMessage, decode
from tests.unit.delivery.harness import FixedRoutes, KnownSaes

# -- pads and tags -------------------------------------------------------------------------------


def test_tag_keys_cover_a_poly1305_key_whatever_the_key_size() -> None:
    assert tag_keys_needed(256) == 1
    assert tag_keys_needed(8) == 32
    assert tag_keys_needed(100 * 8) == 1
    assert tag_keys_needed(248) == 2
    assert pad_count(keys=10, size_bits=128) == 12


def _sealed(n: int = 3, size: int = 32) -> dict[str, Any]:
    keys = [os.urandom(size) for _ in range(n)]
    pads = [os.urandom(size) for _ in range(n)]
    tag_material = [os.urandom(32)]
    header = header_bytes({"relay_id": "r", "hop": 2})
    ciphertext, tag = seal(header=header, keys=keys, pads=pads, tag_material=tag_material)
    return {
        "keys": keys,
        "pads": pads,
        "tag_material": tag_material,
        "header": header,
        "ciphertext": ciphertext,
        "tag": tag,
    }


def test_sealed_keys_open_to_the_same_keys_and_are_each_xored_with_their_pad() -> None:
    s = _sealed()
    assert len(s["tag"]) == TAG_BYTES
    size = len(s["keys"][0])
    for i, (key, pad) in enumerate(zip(s["keys"], s["pads"], strict=True)):
        part = s["ciphertext"][i * size : (i + 1) * size]
        assert bytes(a ^ b for a, b in zip(key, pad, strict=True)) == part
    opened = open_sealed(
        header=s["header"],
        ciphertext=s["ciphertext"],
        tag=s["tag"],
        pads=s["pads"],
        tag_material=s["tag_material"],
    )
    assert opened == s["keys"]


@pytest.mark.parametrize("what", ["ciphertext", "tag", "header", "tag_material", "pads"])
def test_any_change_fails_the_tag_before_anything_is_decrypted(what: str) -> None:
    s = _sealed()
    if what == "pads":
        s["pads"] = s["pads"][:2]  # fewer pads than the ciphertext needs
    elif what == "tag_material":
        s["tag_material"] = [os.urandom(32)]
    else:
        raw = bytearray(s[what])
        raw[len(raw) // 2] ^= 0x40
        s[what] = bytes(raw)
    with pytest.raises(BadTag):
        open_sealed(
            header=s["header"],
            ciphertext=s["ciphertext"],
            tag=s["tag"],
            pads=s["pads"],
            tag_material=s["tag_material"],
        )


def test_a_tag_key_needs_32_bytes_of_key_material() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(header=b"h", keys=[b"k"], pads=[b"p"], tag_material=[os.urandom(31)])


# -- messages ------------------------------------------------------------------------------------


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def _prepare(**changes: Any) -> dict[str, Any]:
    keys = _ids(2)
    body: dict[str, Any] = {
        "relay_id": str(uuid.uuid4()),
        "request_id": str(uuid.uuid4()),
        "stream": "node-b-node-c",
        "master_sae": "alice",
        "slave_sae": "carol",
        "size_bits": 256,
        "path": ["node-a", "node-b", "node-c"],
        "hop": 2,
        "wait_ms": 4000,
        "key_ids": keys,
        "sealed": {
            "pad_key_ids": _ids(3),
            "ciphertext": base64.b64encode(os.urandom(64)).decode(),
            "tag": base64.b64encode(os.urandom(16)).decode(),
        },
    }
    body.update(changes)
    return body


def _decode(body: dict[str, Any]) -> RelayPrepare:
    return decode(RelayPrepare, json.dumps(body).encode())


def test_a_well_formed_prepare_is_read() -> None:
    message = _decode(_prepare())
    assert message.hop == 2
    fields = message.tagged_fields()
    assert "sealed" not in fields
    assert fields["pad_key_ids"] == list(message.sealed.pad_key_ids)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"hop": 3}, "hop must name a node"),
        ({"hop": 0}, "greater than or equal to 1"),
        ({"path": ["node-a", "node-b", "node-a"]}, "same node"),
        ({"path": ["node-a", "node-c"]}, "at least 3"),
        ({"hop": 1}, "first hop carries no sealed keys"),
        ({"sealed": None}, "every later hop does"),
        ({"key_ids": ["x"]}, "String should match pattern"),
        ({"size_bits": 12}, "multiple of 8"),
        ({"wait_ms": 0}, "greater than or equal to 1"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_prepare_is_refused_saying_what_is_wrong(
    changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(BadMessage, match=problem):
        _decode(_prepare(**changes))


def test_sealed_parts_must_match_the_keys_they_carry() -> None:
    body = _prepare()
    body["sealed"]["pad_key_ids"] = _ids(2)
    with pytest.raises(BadMessage, match="number of pad keys"):
        _decode(body)
    body = _prepare()
    body["sealed"]["ciphertext"] = base64.b64encode(os.urandom(63)).decode()
    with pytest.raises(BadMessage, match="ciphertext's length"):
        _decode(body)
    body = _prepare()
    body["sealed"]["pad_key_ids"][0] = body["key_ids"][0]
    with pytest.raises(BadMessage, match="also a relayed key ID"):
        _decode(body)


def test_a_relay_carries_a_bounded_amount_of_key_material() -> None:
    n = MAX_RELAY_BYTES // 4096 + 1
    with pytest.raises(BadMessage, match="at most"):
        _decode(_prepare(hop=1, sealed=None, size_bits=32768, key_ids=_ids(n)))


def test_a_commit_names_each_key_once() -> None:
    key = str(uuid.uuid4())
    body = {
        "relay_id": key,
        "request_id": key,
        "master_sae": "alice",
        "slave_sae": "carol",
        "size_bits": 256,
        "key_ids": [key, key],
        "hand_over": True,
    }
    with pytest.raises(BadMessage, match="more than once"):
        decode(RelayCommit, json.dumps(body).encode())


# -- the plan from a route -----------------------------------------------------------------------


def _delivery(routes: FixedRoutes, *, relay: bool = True) -> NodeKeyDelivery:
    saes = KnownSaes()
    saes.ids.add("alice")
    directory = SaeDirectory(local_node_id="node-a", local=saes)
    directory.record("node-c", ["carol"], 1)
    directory.record("node-b", ["bob"], 1)
    topology = Topology(node_id="node-a")
    topology.update_link({"metadata": {"name": "ab"}, "spec": {"peerNodeID": "node-b"}})
    topology.update_stream(
        {"metadata": {"name": "a-b"}, "spec": {"link": "ab"}, "status": {"state": "Up"}}
    )
    settings = DeliverySettings()
    return NodeKeyDelivery(
        node_id="node-a",
        store=None,  # type: ignore[arg-type]  # route() reads no store
        topology=topology,
        local_saes=saes,
        directory=directory,
        pools=Pools.__new__(Pools),
        settings=settings,
        kick=lambda: None,  # route() queues nothing
        routes=routes,
        relay=object() if relay else None,  # type: ignore[arg-type]  # route() only asks if set
    )


def test_an_sae_on_a_neighbour_is_served_from_the_link_to_it_without_a_path() -> None:
    pool = _delivery(FixedRoutes("node-a")).route(master_sae_id="alice", slave_sae_id="bob")
    assert pool == PoolKey(
        stream="a-b", peer="node-b", master_sae_id="alice", slave_sae_id="bob", size_bits=0
    )
    assert pool.path == ()


def test_an_sae_beyond_the_neighbours_is_served_from_the_first_link_of_its_route() -> None:
    routes = FixedRoutes("node-a", paths={"carol": ("node-a", "node-b", "node-c")})
    pool = _delivery(routes).route(master_sae_id="alice", slave_sae_id="carol")
    assert (pool.stream, pool.peer, pool.path) == ("a-b", "node-b", ("node-a", "node-b", "node-c"))


def test_no_route_or_no_relay_means_NoRoute() -> None:
    with pytest.raises(NoRoute, match="node node-c"):
        _delivery(FixedRoutes("node-a")).route(master_sae_id="alice", slave_sae_id="carol")
    routes = FixedRoutes("node-a", paths={"carol": ("node-a", "node-b", "node-c")})
    with pytest.raises(NoRoute):
        _delivery(routes, relay=False).route(master_sae_id="alice", slave_sae_id="carol")
    # A route whose first hop has no stream here (the table is behind the links).
    routes = FixedRoutes("node-a", paths={"carol": ("node-a", "node-x", "node-c")})
    with pytest.raises(NoRoute):
        _delivery(routes).route(master_sae_id="alice", slave_sae_id="carol")
