"""Dijkstra with equation (1): the cheapest path to every node over two-way links, ties broken
by the smallest list of nodes, the same answer whatever order the database is in, and tables of
different nodes that agree with each other."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.routing.spf import NodePath, shortest_paths

Claims = dict[str, dict[str, int]]


def _brute_force(source: str, claims: Claims) -> dict[str, NodePath]:
    """Every simple path, the cheapest (then smallest) per destination: slow and obviously
    right, for small graphs."""
    best: dict[str, NodePath] = {}

    def walk(path: tuple[str, ...], cost: int) -> None:
        node = path[-1]
        current = best.get(node)
        if current is None or (cost, path) < (current.cost, current.nodes):
            best[node] = NodePath(nodes=path, cost=cost)
        for peer, weight in claims.get(node, {}).items():
            if peer not in path and node in claims.get(peer, {}):
                walk((*path, peer), cost + weight)

    walk((source,), 0)
    return best


@st.composite
def graphs(draw: st.DrawFn) -> Claims:
    n = draw(st.integers(min_value=1, max_value=6))
    nodes = [f"n{i}" for i in range(n)]
    claims: Claims = {node: {} for node in nodes}
    for a, b in itertools.permutations(nodes, 2):
        if draw(st.booleans()):
            # Few distinct costs, so that ties are common.
            claims[a][b] = draw(st.sampled_from([1000, 2000, 3000]))
    return claims


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_dijkstra_finds_what_trying_every_path_finds(claims: Claims) -> None:
    for source in claims:
        assert shortest_paths(source, claims) == _brute_force(source, claims)


def test_a_link_counts_only_when_both_ends_list_it() -> None:
    claims = {"a": {"b": 1000}, "b": {}, "c": {"a": 1000}}
    assert set(shortest_paths("a", claims)) == {"a"}
    claims["b"]["a"] = 5000
    paths = shortest_paths("a", claims)
    assert paths["b"] == NodePath(nodes=("a", "b"), cost=1000)  # the cost a advertises
    assert shortest_paths("b", claims)["a"].cost == 5000


def test_equal_costs_go_to_the_smallest_list_of_nodes_in_any_database_order() -> None:
    # A diamond whose two sides cost the same.
    links = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    for seed in range(20):
        shuffled = links[:]
        random.Random(seed).shuffle(shuffled)
        claims: Claims = {}
        for x, y in shuffled:
            claims.setdefault(x, {})[y] = 50_000
            claims.setdefault(y, {})[x] = 50_000
        assert shortest_paths("a", claims)["d"].nodes == ("a", "b", "d")
        assert shortest_paths("d", claims)["a"].nodes == ("d", "b", "a")


def test_the_path_a_node_chooses_continues_as_its_next_hop_would_choose() -> None:
    rng = random.Random(3)
    nodes = [f"n{i:02d}" for i in range(40)]
    claims: Claims = {n: {} for n in nodes}
    for i, node in enumerate(nodes):
        for peer in {nodes[(i + 1) % 40], rng.choice(nodes)} - {node}:
            cost = rng.choice([1000, 2000])  # many ties
            claims[node][peer] = claims[peer][node] = cost
    tables = {node: shortest_paths(node, claims) for node in nodes}
    for table in tables.values():
        for destination, path in table.items():
            if path.next_hop is not None:
                assert tables[path.next_hop][destination].nodes == path.nodes[1:]


def test_unreachable_nodes_have_no_path_and_the_source_has_the_empty_one() -> None:
    claims = {"a": {"b": 1000}, "b": {"a": 1000}, "c": {"d": 1000}, "d": {"c": 1000}}
    paths = shortest_paths("a", claims)
    assert set(paths) == {"a", "b"}
    assert paths["a"] == NodePath(nodes=("a",), cost=0)
    assert paths["a"].next_hop is None
    assert paths["a"].hops == 0
    assert paths["b"].next_hop == "b"
    assert paths["b"].hops == 1
