"""Which node each SAE is registered with, as far as this node knows: its own SAEs, and the
remote ones its neighbours announce.

The announcement route (``controllers.saes.announce``) calls ``record`` with each neighbour's
full list of SAEs, and the announcer calls ``forget`` when a neighbour stops being one; key
delivery asks ``node_of`` where the peer SAE of a request lives. Pure and synchronous: no I/O,
no clock, no event loop.

Announcements carry a generation that grows with every announcement of a node, so one that
arrives late (after a newer one) is ignored. The highest generation seen from a node is kept
after ``forget``, so a delayed announcement from a departed neighbour cannot bring it back.

Not finding an SAE means one of two things, and ``is_known_absent`` tells which: while some
neighbour has not told us its SAEs yet (this node just started, or the neighbour is down), the
SAE may well be there, so the answer is "not known yet" (the 014 API's 503, retryable). Once
every current neighbour has answered (``heard_from``) and none has it, nor this node, it is
unknown for good (400, not retryable) until someone registers it. The neighbours are the peers
of this node's QKDLinks (``set_neighbours``, kept current by the announcer).

An SAE ID is meant to be unique in the network. If several nodes announce the same one anyway,
the local SAE wins, then the remote node whose ID sorts first, so every node resolves the
conflict the same way; ``claimants`` lists them all for diagnostics.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping


class SaeDirectory:
    """SAE ID -> node ID for this node's SAEs (``local``) and its neighbours' (announced)."""

    def __init__(self, *, local_node_id: str, local: Container[str]) -> None:
        self.local_node_id = local_node_id
        self._local = local
        self._saes: dict[str, frozenset[str]] = {}  # node -> its announced SAE IDs
        self._generations: dict[str, int] = {}  # node -> highest generation seen
        self._nodes: dict[str, set[str]] = {}  # SAE ID -> nodes announcing it
        self._neighbours: frozenset[str] = frozenset()

    def set_neighbours(self, node_ids: Iterable[str]) -> None:
        """The nodes whose SAE lists this node expects (the peers of its QKDLinks)."""
        self._neighbours = frozenset(node_ids) - {self.local_node_id}

    def heard_from(self, node_id: str) -> bool:
        """Whether ``node_id`` has told us its SAEs since this node started."""
        return node_id in self._generations

    def is_known_absent(self, sae_id: str) -> bool:
        """True when ``sae_id`` is on no node we could ask: not local, and every neighbour has
        told us its SAEs without it. False while it is known, or may still become known."""
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
        """Drop everything ``node_id`` announced (its generation mark stays); True if it had
        announced anything."""
        had = node_id in self._saes
        self._replace(node_id, frozenset())
        return had

    def node_of(self, sae_id: str) -> str | None:
        """The node ``sae_id`` is registered with: this node if it is local, else the
        announcing neighbour (the first by ID if several), else None."""
        if sae_id in self._local:
            return self.local_node_id
        nodes = self._nodes.get(sae_id)
        return min(nodes) if nodes else None

    def claimants(self, sae_id: str) -> list[str]:
        """Every remote node announcing ``sae_id``, sorted (more than one is a conflict)."""
        return sorted(self._nodes.get(sae_id, ()))

    def remote(self) -> Mapping[str, frozenset[str]]:
        """Remote node -> the SAE IDs it announced (a copy)."""
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
