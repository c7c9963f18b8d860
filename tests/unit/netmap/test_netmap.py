"""The network picture: what the map holds, how DOT draws it, and that Graphviz renders it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from controllers.netmap.dot import GREEN, GREY, ORANGE, RED, fill_colour, render
from controllers.netmap.main import to_svg
from controllers.netmap.model import build_map


def link(name: str, peer: str, *, cost: float, state: str = "Up") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"peerNodeID": peer},
        "status": {"cost": cost, "state": state},
    }


def stream(
    name: str, link_name: str, *, available: int, capacity: int, rate: float
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"link": link_name},
        "status": {"availableKeys": available, "capacity": capacity, "rateBps": rate},
    }


def route(sae: str, path: list[str], cost: float) -> dict[str, Any]:
    return {
        "metadata": {"name": sae},
        "spec": {
            "saeID": sae,
            "destinationNodeID": path[-1],
            "nextHopNodeID": path[1] if len(path) > 1 else "",
            "cost": cost,
            "length": len(path) - 1,
            "path": path,
        },
    }


def diamond() -> Any:
    return build_map(
        node_id="node-a",
        links=[link("node-b", "node-b", cost=60.0), link("node-c", "node-c", cost=95.5)],
        streams=[
            stream("a-b", "node-b", available=800, capacity=1000, rate=2_500_000),
            stream("a-c", "node-c", available=100, capacity=1000, rate=900),
        ],
        saes=[{"metadata": {"name": "alice"}, "spec": {"saeID": "alice"}}],
        routes=[
            route("dave", ["node-a", "node-b", "node-d"], 130.0),
            route("bob", ["node-a", "node-b"], 60.0),
        ],
    )


def test_the_map_holds_local_links_with_their_numbers_and_remote_links_from_route_paths() -> None:
    network = diamond()
    assert network.nodes == ("node-a", "node-b", "node-c", "node-d")
    local = {ln.b: ln for ln in network.links if ln.local}
    assert local["node-b"].fill == pytest.approx(0.8)
    assert local["node-b"].rate_bps == 2_500_000
    assert local["node-c"].cost == 95.5
    (remote,) = [ln for ln in network.links if not ln.local]
    assert remote.ends == {"node-b", "node-d"}
    assert network.saes == {"node-a": ("alice",), "node-b": ("bob",), "node-d": ("dave",)}


def test_links_are_coloured_by_buffer_fill() -> None:
    assert [fill_colour(f) for f in (0.9, 0.5, 0.3, 0.1, None)] == [
        GREEN,
        GREEN,
        ORANGE,
        RED,
        GREY,
    ]


def test_dot_labels_local_links_with_cost_rate_and_fill_and_dashes_remote_ones() -> None:
    dot = render(diamond())
    assert '"node-a" -- "node-b" [label="cost 60.0\\n2.5 Mbit/s\\n80% full"' in dot
    assert f'color="{GREEN}"' in dot
    assert f'color="{RED}"' in dot
    assert '"node-b" -- "node-d" [style="dashed"' in dot
    assert '"sae:node-d:dave" [label="dave"' in dot
    assert '"node-a" [shape=box, style=rounded, peripheries=2]' in dot


def test_a_highlighted_route_draws_its_path_bold_and_says_its_cost() -> None:
    dot = render(diamond(), highlight="dave")
    assert "route to dave (cost 130.0, 2 hops)" in dot
    bold = [line for line in dot.splitlines() if 'penwidth="4"' in line]
    assert len(bold) == 2
    assert any('"node-a" -- "node-b"' in line for line in bold)
    assert any('"node-b" -- "node-d"' in line for line in bold)
    with pytest.raises(KeyError, match="no Route to SAE 'carol'"):
        render(diamond(), highlight="carol")


def test_names_with_quotes_cannot_break_out_of_the_dot_syntax() -> None:
    network = build_map(
        node_id="node-a",
        links=[],
        streams=[],
        saes=[{"metadata": {"name": "x"}, "spec": {"saeID": 'evil" ]; x [label="pwn'}}],
        routes=[],
    )
    svg = to_svg(render(network))
    texts = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert 'evil" ]; x [label="pwn' in texts


def test_graphviz_renders_the_dot_as_svg_with_every_node() -> None:
    svg = to_svg(render(diamond(), highlight="dave"))
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"node-a", "node-b", "node-c", "node-d", "alice", "bob", "dave"} <= texts
