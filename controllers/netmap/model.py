"""The QKD network as one node sees it, built from that node's objects; pure functions only.

Called by ``controllers.netmap.main`` with the objects it listed. The local node's links come
from its QKDLinks (cost, state) and KeyStreams (buffer fill, rate); nodes and links further
away come from the paths of its Routes, whose costs this node does not know link by link.
SAEs sit at their node: local ones from the Saes, remote ones from the Routes' destinations.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Link:
    """A QKD link between two nodes; ``local`` when this node is one end and so knows its
    numbers (otherwise only that a Route goes over it)."""

    a: str
    b: str
    local: bool
    state: str = ""
    cost: float | None = None
    fill: float | None = None  # available / capacity of the link's streams, 0..1
    rate_bps: float | None = None  # sum of the link's streams' measured rates

    @property
    def ends(self) -> frozenset[str]:
        return frozenset((self.a, self.b))


@dataclass(frozen=True, slots=True)
class RoutePath:
    sae_id: str
    destination: str
    next_hop: str
    cost: float
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NetworkMap:
    node_id: str
    nodes: tuple[str, ...]
    links: tuple[Link, ...]
    saes: Mapping[str, tuple[str, ...]]  # node -> SAE IDs there
    routes: tuple[RoutePath, ...] = field(default=())


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _local_link(
    node_id: str, link: Mapping[str, Any], streams: Sequence[Mapping[str, Any]]
) -> Link:
    spec, status = _spec(link), _status(link)
    mine = [s for s in streams if _spec(s).get("link") == _name(link)]
    available = sum(int(_status(s).get("availableKeys") or 0) for s in mine)
    capacity = sum(int(_status(s).get("capacity") or 0) for s in mine)
    rates = [float(_status(s)["rateBps"]) for s in mine if _status(s).get("rateBps") is not None]
    cost = status.get("cost")
    return Link(
        a=node_id,
        b=str(spec["peerNodeID"]),
        local=True,
        state=str(status.get("state") or "Unknown"),
        cost=float(cost) if cost is not None else None,
        fill=available / capacity if capacity else None,
        rate_bps=sum(rates) if rates else None,
    )


def build_map(
    *,
    node_id: str,
    links: Sequence[Mapping[str, Any]],
    streams: Sequence[Mapping[str, Any]],
    saes: Sequence[Mapping[str, Any]],
    routes: Sequence[Mapping[str, Any]],
) -> NetworkMap:
    """The network as ``node_id`` sees it from its QKDLinks, KeyStreams, Saes and Routes."""
    nodes: dict[str, None] = {node_id: None}
    by_ends: dict[frozenset[str], Link] = {}
    for link in sorted(links, key=_name):
        drawn = _local_link(node_id, link, streams)
        nodes[drawn.b] = None
        by_ends.setdefault(drawn.ends, drawn)
    at: dict[str, list[str]] = {}
    for sae in saes:
        at.setdefault(node_id, []).append(str(_spec(sae).get("saeID", _name(sae))))
    paths: list[RoutePath] = []
    for route in sorted(routes, key=lambda r: str(_spec(r).get("saeID", ""))):
        spec = _spec(route)
        sae_id, destination = str(spec.get("saeID", "")), str(spec.get("destinationNodeID", ""))
        if not sae_id or not destination:
            continue
        path = tuple(str(p) for p in spec.get("path") or ()) or (
            (node_id,) if destination == node_id else (node_id, destination)
        )
        for hop in (*path, destination):
            nodes[hop] = None
        for a, b in itertools.pairwise(path):
            by_ends.setdefault(frozenset((a, b)), Link(a=a, b=b, local=False))
        if destination != node_id:
            at.setdefault(destination, []).append(sae_id)
        paths.append(
            RoutePath(
                sae_id=sae_id,
                destination=destination,
                next_hop=str(spec.get("nextHopNodeID") or ""),
                cost=float(spec.get("cost") or 0),
                path=path,
            )
        )
    return NetworkMap(
        node_id=node_id,
        nodes=tuple(nodes),
        links=tuple(by_ends.values()),
        saes={n: tuple(sorted(set(ids))) for n, ids in sorted(at.items())},
        routes=tuple(paths),
    )
