"""The routing table per destination SAE (the paper's Table 1, plus the path), the one question
key relay asks of routing, and the Route objects that show the table in the cluster.

- ``SaeRoute``: how to reach one SAE: destination node, path, next hop, cost, hops.
- ``RouteFinder``: ``route_to(sae_id)``, what delivery and relay ask (implemented by
  ``controllers.routing.channel.RoutingService``); None when the SAE is unknown or unreachable.
- ``sae_routes``: the table from Dijkstra's paths and where each SAE is registered.
- ``route_objects``: the table as Route specs by object name, which
  ``controllers.routing.writer.RouteWriter`` keeps the cluster's Route objects equal to.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from controllers.routing.spf import NodePath

log = logging.getLogger(__name__)

# A Route's name: the SAE ID itself when it is a valid object name, else a readable part and a
# digest of the ID (SAE IDs may hold capitals and '_', object names may not).
_OBJECT_NAME: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_NOT_NAME: Final = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class SaeRoute:
    sae_id: str
    destination: str  # the node the SAE is registered with
    path: tuple[str, ...]  # node IDs from this node to the destination, both included
    cost: int  # equation (1), in thousandths

    @property
    def next_hop(self) -> str | None:
        """The neighbour to send to first; None when the SAE is on this node."""
        return self.path[1] if len(self.path) > 1 else None

    @property
    def hops(self) -> int:
        return len(self.path) - 1

    @property
    def cost_units(self) -> float:
        return self.cost / 1000


class RouteFinder(Protocol):
    def route_to(self, sae_id: str) -> SaeRoute | None:
        """The cheapest path to the node ``sae_id`` is registered with; None if that SAE is
        unknown or its node is unreachable."""
        ...


def sae_routes(
    *,
    paths: Mapping[str, NodePath],
    sae_ids: Iterable[str],
    node_of: Callable[[str], str | None],
) -> dict[str, SaeRoute]:
    """A route for every SAE in ``sae_ids`` whose node (``node_of``) is reachable."""
    routes = {}
    for sae_id in sae_ids:
        node = node_of(sae_id)
        path = paths.get(node) if node is not None else None
        if path is not None:
            routes[sae_id] = SaeRoute(
                sae_id=sae_id, destination=path.destination, path=path.nodes, cost=path.cost
            )
    return routes


def route_name(sae_id: str) -> str:
    """The name of the Route object for ``sae_id`` (the same on every node)."""
    if _OBJECT_NAME.match(sae_id):
        return sae_id
    readable = _NOT_NAME.sub("-", sae_id.lower()).strip("-")[:40].rstrip("-") or "sae"
    digest = hashlib.sha256(sae_id.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def route_spec(route: SaeRoute) -> dict[str, Any]:
    """A Route's spec (the CRD's fields), as the routing controller writes it."""
    return {
        "saeID": route.sae_id,
        "destinationNodeID": route.destination,
        "nextHopNodeID": route.next_hop or "",
        "path": list(route.path),
        "cost": round(route.cost_units, 3),
        "length": route.hops,
    }


def route_objects(routes: Mapping[str, SaeRoute]) -> dict[str, dict[str, Any]]:
    """Object name -> spec for every route. Should two SAE IDs ever map to one name, the
    smaller ID keeps it (the same choice on every node) and the other goes without a Route."""
    objects: dict[str, dict[str, Any]] = {}
    for sae_id in sorted(routes):
        name = route_name(sae_id)
        if name in objects:
            log.warning(
                "SAE IDs %r and %r both map to Route name %s; only the first gets a Route",
                objects[name]["saeID"],
                sae_id,
                name,
            )
            continue
        objects[name] = route_spec(routes[sae_id])
    return objects
