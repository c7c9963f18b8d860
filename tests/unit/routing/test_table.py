"""The routing table per SAE and the Route objects made of it: names every node derives alike,
specs the CRD accepts, unreachable SAEs left out."""

from __future__ import annotations

import re

import pytest

from controllers.routing.spf import NodePath
from controllers.routing.table import SaeRoute, route_name, route_objects, route_spec, sae_routes

PATHS = {
    "node-a": NodePath(nodes=("node-a",), cost=0),
    "node-b": NodePath(nodes=("node-a", "node-b"), cost=62_500),
    "node-c": NodePath(nodes=("node-a", "node-b", "node-c"), cost=112_750),
}
WHERE = {"alice": "node-a", "bob": "node-b", "carol": "node-c", "dave": "node-d"}


def test_every_sae_on_a_reachable_node_gets_its_nodes_path() -> None:
    routes = sae_routes(paths=PATHS, sae_ids=[*sorted(WHERE), "nobody"], node_of=WHERE.get)
    assert set(routes) == {"alice", "bob", "carol"}  # dave's node is unreachable
    carol = routes["carol"]
    assert carol == SaeRoute(
        sae_id="carol", destination="node-c", path=("node-a", "node-b", "node-c"), cost=112_750
    )
    assert (carol.next_hop, carol.hops, carol.cost_units) == ("node-b", 2, 112.75)
    assert routes["alice"].next_hop is None
    assert routes["alice"].hops == 0


def test_specs_are_what_the_route_crd_describes() -> None:
    routes = sae_routes(paths=PATHS, sae_ids=WHERE, node_of=WHERE.get)
    assert route_spec(routes["bob"]) == {
        "saeID": "bob",
        "destinationNodeID": "node-b",
        "nextHopNodeID": "node-b",
        "path": ["node-a", "node-b"],
        "cost": 62.5,
        "length": 1,
    }
    assert route_spec(routes["alice"])["nextHopNodeID"] == ""


@pytest.mark.parametrize(
    ("sae_id", "name"),
    [
        ("bob", "bob"),
        ("app.team-1", "app.team-1"),
        ("Bob", None),
        ("bob_1", None),
        ("a..b", None),
        ("-x", None),
        ("X" * 64, None),
    ],
)
def test_route_names_are_object_names_and_keep_the_sae_id_where_they_can(
    sae_id: str, name: str | None
) -> None:
    made = route_name(sae_id)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", made)
    assert len(made) <= 63
    if name is not None:
        assert made == name
    else:
        assert made != sae_id
        assert made.startswith(sae_id.lower()[:3].strip("-_.") or "sae")
    assert route_name(sae_id) == made  # the same on every node, every time


def test_ids_differing_in_case_get_different_routes() -> None:
    assert route_name("Bob") != route_name("bob") != route_name("BOB")


def test_a_name_two_saes_would_share_goes_to_the_smaller_id() -> None:
    clash = route_name("Bob")
    where = {"Bob": "node-b", clash: "node-c"}
    objects = route_objects(sae_routes(paths=PATHS, sae_ids=where, node_of=where.get))
    assert objects == {
        clash: route_spec(sae_routes(paths=PATHS, sae_ids=["Bob"], node_of=where.get)["Bob"])
    }
