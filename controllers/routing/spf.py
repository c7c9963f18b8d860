"""Dijkstra over the link-state database, with the paper's path cost (equation 1: the sum of
the link costs K_i(t) along the path) and ties broken the same way on every node.

``shortest_paths`` computes, from one node, the cheapest path to every node it can reach over
the links the K packets advertise, using a link only when both of its ends list it (a one-sided
claim, or a link whose other end has gone, carries nothing). The cost of u -> v is what u
advertises. Costs are integers (thousandths of a cost unit, as K packets carry them), so sums
are exact and never depend on the order of additions.

Ties: among paths of equal cost the one whose node list is lexicographically smallest wins.
That makes every table a pure function of the database (no dict or hash order leaks in), and
it keeps the tables of different nodes consistent: if A's path to D runs through B, B's own
path to D is exactly the rest of A's path (a path's suffixes are themselves the smallest).

Called by ``controllers.routing.engine.Router`` whenever its database changed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

# node -> {neighbour: cost of the link towards it, in thousandths}, as each K packet claims.
Claims = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class NodePath:
    """The chosen path from this node to ``destination``: its nodes (both ends included) and
    its cost in thousandths."""

    nodes: tuple[str, ...]
    cost: int

    @property
    def destination(self) -> str:
        return self.nodes[-1]

    @property
    def next_hop(self) -> str | None:
        """The neighbour to send to first; None for this node itself."""
        return self.nodes[1] if len(self.nodes) > 1 else None

    @property
    def hops(self) -> int:
        return len(self.nodes) - 1


_NONE: Mapping[str, int] = {}


def shortest_paths(source: str, claims: Claims) -> dict[str, NodePath]:
    """The cheapest path from ``source`` to every node reachable over two-way links in
    ``claims`` (and the empty path to itself); equal costs go to the lexicographically smallest
    list of nodes."""
    best: dict[str, tuple[int, tuple[str, ...]]] = {source: (0, (source,))}
    heap: list[tuple[int, tuple[str, ...]]] = [(0, (source,))]
    done: dict[str, NodePath] = {}
    while heap:
        cost, path = heapq.heappop(heap)
        node = path[-1]
        if node in done:
            continue
        done[node] = NodePath(nodes=path, cost=cost)
        for peer, weight in claims.get(node, _NONE).items():
            if peer in done or weight <= 0 or node not in claims.get(peer, _NONE):
                continue
            total = cost + weight
            current = best.get(peer)
            if current is not None and total > current[0]:
                continue
            candidate = (*path, peer)
            if current is None or total < current[0] or candidate < current[1]:
                label = (total, candidate)
                best[peer] = label
                heapq.heappush(heap, label)
    return done
