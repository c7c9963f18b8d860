"""Topology files for the local network: the shipped examples load, and a file that cannot be
built is refused with the place and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster.localcluster import REPO_ROOT
from tests.cluster.topology import (
    TopologyError,
    TopologyLink,
    load_topology,
    parse_topology,
    sae_object_name,
)

EXAMPLES = REPO_ROOT / "examples" / "topologies"


def test_the_line_of_three_loads() -> None:
    line = load_topology(EXAMPLES / "line3.yaml")
    assert line.nodes == {"node-a": ("alice",), "node-b": (), "node-c": ("carol",)}
    assert [link.stream for link in line.links] == ["node-a-node-b", "node-b-node-c"]
    assert line.links[0] == TopologyLink(
        a="node-a", b="node-b", key_rate_bps=200_000, buffer_capacity=2000
    )
    assert line.node_of("carol") == "node-c"


def test_the_diamond_loads() -> None:
    diamond = load_topology(EXAMPLES / "diamond.yaml")
    assert sorted(diamond.nodes) == ["node-a", "node-b", "node-c", "node-d"]
    assert {(link.a, link.b) for link in diamond.links} == {
        ("node-a", "node-b"),
        ("node-b", "node-d"),
        ("node-a", "node-c"),
        ("node-c", "node-d"),
    }


def test_renaming_keeps_the_shape_and_names_everything() -> None:
    line = load_topology(EXAMPLES / "line3.yaml").renamed(link_prefix="t-", sae_prefix="t-")
    assert line.nodes["node-a"] == ("t-alice",)
    assert [link.stream for link in line.links] == ["t-node-a-node-b", "t-node-b-node-c"]


GOOD: dict[str, Any] = {
    "nodes": [{"id": "node-a", "saes": ["alice"]}, {"id": "node-b"}],
    "links": [{"between": ["node-a", "node-b"], "keyRateBps": 1000}],
}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"nodes": []}, "nodes: "),
        ({"nodes": [{"id": "Node_A"}, {"id": "node-b"}]}, "nodes.0.id"),
        ({"nodes": [{"id": "node-a"}, {"id": "node-a"}]}, "every node id must appear once"),
        (
            {"nodes": [{"id": "node-a", "saes": ["x"]}, {"id": "node-b", "saes": ["x"]}]},
            "one node only",
        ),
        ({"nodes": [{"id": "node-a", "saes": ["bad id!"]}, {"id": "node-b"}]}, "nodes.0.saes.0"),
        ({"links": [{"between": ["node-a", "node-x"], "keyRateBps": 1}]}, "no node node-x"),
        ({"links": [{"between": ["node-a", "node-a"], "keyRateBps": 1}]}, "not node-a with itself"),
        ({"links": [{"between": ["node-a", "node-b"]}]}, "links.0.keyRateBps"),
        ({"links": [{"between": ["node-a", "node-b"], "keyRateBps": 0}]}, "links.0.keyRateBps"),
        (
            {"links": [{"between": ["node-a", "node-b"], "keyRateBps": 1, "bufferCapacity": -5}]},
            "links.0.bufferCapacity",
        ),
        (
            {"links": [{"between": ["node-a", "node-b"], "keyRateBps": 1, "chunkBits": 12}]},
            "links.0.chunkBits",
        ),
        (
            {
                "links": [
                    {"between": ["node-a", "node-b"], "keyRateBps": 1},
                    {"between": ["node-b", "node-a"], "keyRateBps": 1},
                ]
            },
            "give parallel links a name",
        ),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_file_that_cannot_be_built_says_where_and_what(
    change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(TopologyError, match="^topology: .*" + complaint.replace(".", r"\.")):
        parse_topology({**GOOD, **change})


def test_a_missing_or_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed")
    with pytest.raises(TopologyError, match="is not YAML"):
        load_topology(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(TopologyError, match=r"empty\.yaml: "):
        load_topology(empty)


@pytest.mark.parametrize(
    ("sae_id", "name"), [("alice", "alice"), ("Bob_2", "bob-2"), ("app.one", "app-one")]
)
def test_sae_objects_get_names_kubernetes_accepts(sae_id: str, name: str) -> None:
    assert sae_object_name(sae_id) == name
