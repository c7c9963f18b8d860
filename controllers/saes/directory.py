"""Which node each SAE is registered with, as far as this node knows: its own SAEs, and those
of every node whose S packet (the routing protocol's list of a node's SAEs) it holds.

The routing engine (``controllers.routing.engine``) calls ``record`` with a node's full list of
SAEs whenever it accepts a newer S packet of that node, and ``forget`` when the packet expires
(the node has been gone for an LSA lifetime); key delivery asks ``node_of`` where the peer SAE
of a request lives, and the routing table is built from it. Pure and synchronous: no I/O, no
clock, no event loop.

``record`` takes a generation (the S packet's sequence number) that grows with every
origination, and ignores one that is not newer than the last recorded from that node. The
highest generation seen from a node is kept after ``forget``, so an old list replayed after
the node left cannot bring it back.

Not finding an SAE means one of two things, and ``is_known_absent`` tells which: while some
neighbour has not told us what it knows (this node just started, or the neighbour is down), the
SAE may well be there, so the answer is "not known yet" (the 014 API's 503, retryable). A
neighbour has told us once this node completed a full database exchange with it
(``synchronised``, called by the routing engine): the exchange carries every S packet the
neighbour holds, its own included. Once every current neighbour has (``heard_from``) and none
knows the SAE, nor this node, it is unknown for good (400, not retryable) until someone
registers it. The neighbours are the peers of this node's QKDLinks (``set_neighbours``, kept
current by the routing service).

An SAE ID is meant to be unique in the network. If several nodes claim the same one anyway,
the local SAE wins, then the remote node whose ID sorts first, so every node resolves the
conflict the same way; ``claimants`` lists them all for diagnostics.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping


class SaeDirectory:
    """SAE ID -> node ID for this node's SAEs (``local``) and other nodes' (from S packets)."""

    def __init__(self, *, local_node_id: str, local: Container[str]) -> None:
        self.local_node_id = local_node_id
        self._local = local
        self._saes: dict[str, frozenset[str]] = {}  # node -> its SAE IDs
        self._generations: dict[str, int] = {}  # node -> highest generation seen
        self._nodes: dict[str, set[str]] = {}  # SAE ID -> nodes claiming it
        self._neighbours: frozenset[str] = frozenset()
        self._synchronised: set[str] = set()  # neighbours we completed an exchange with

    def set_neighbours(self, node_ids: Iterable[str]) -> None:
        """The nodes whose knowledge this node waits for (the peers of its QKDLinks)."""
        self._neighbours = frozenset(node_ids) - {self.local_node_id}

    def synchronised(self, node_id: str) -> None:
        """A full database exchange with neighbour ``node_id`` completed: it has told us every
        SAE it knows of."""
        self._synchronised.add(node_id)

    def heard_from(self, node_id: str) -> bool:
        """Whether ``node_id`` has told us its SAEs since this node started."""
        return node_id in self._synchronised or node_id in self._generations

    def is_known_absent(self, sae_id: str) -> bool:
        """True when ``sae_id`` is on no node we could ask: not local, and every neighbour has
        told us what it knows without it. False while it is known, or may still become known."""
        if self.node_of(sae_id) is not None:
            return False
        return all(self.heard_from(node) for node in self._neighbours)

    def record(self, node_id: str, sae_ids: Iterable[str], generation: int) -> bool:
        """Make ``sae_ids`` the SAEs of remote node ``node_id``, unless ``generation`` is not
        newer than the last one recorded from that node; True if recorded."""
        if node_id == self.local_node_id:
            return False  # this node's SAEs are ``local``'s business, not anyone's claim
        if generation <= self._generations.get(node_id, -1):
            return False
        self._generations[node_id] = generation
        self._replace(node_id, frozenset(sae_ids))
        return True

    def forget(self, node_id: str) -> bool:
        """Drop every SAE of ``node_id`` (its generation mark stays); True if it had any."""
        had = node_id in self._saes
        self._replace(node_id, frozenset())
        return had

    def node_of(self, sae_id: str) -> str | None:
        """The node ``sae_id`` is registered with: this node if it is local, else the remote
        node that lists it (the first by ID if several), else None."""
        if sae_id in self._local:
            return self.local_node_id
        nodes = self._nodes.get(sae_id)
        return min(nodes) if nodes else None

    def claimants(self, sae_id: str) -> list[str]:
        """Every remote node listing ``sae_id``, sorted (more than one is a conflict)."""
        return sorted(self._nodes.get(sae_id, ()))

    def remote(self) -> Mapping[str, frozenset[str]]:
        """Remote node -> its SAE IDs (a copy)."""
        return dict(self._saes)

    def generation(self, node_id: str) -> int | None:
        """The newest generation recorded from ``node_id``, if any."""
        return self._generations.get(node_id)

    def _replace(self, node_id: str, sae_ids: frozenset[str]) -> None:
        old = self._saes.get(node_id, frozenset())
        for sae_id in old - sae_ids:
            nodes = self._nodes[sae_id]
            nodes.discard(node_id)
            if not nodes:
                del self._nodes[sae_id]
        for sae_id in sae_ids - old:
            self._nodes.setdefault(sae_id, set()).add(node_id)
        if sae_ids:
            self._saes[node_id] = sae_ids
        else:
            self._saes.pop(node_id, None)
