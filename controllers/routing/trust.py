"""Which routing keys this node accepts for which originator, and why.

Trust starts at the inter-node channel and spreads outward one link at a time:

- this node's own key;
- a direct neighbour's key, from the hello it sent over the channel, whose mutual TLS has
  authenticated the neighbour through the CA its QKDLink names (``neighbour_key``);
- a distant node's key, when an LSA already accepted vouches for it: every K packet lists, per
  link, the neighbour's key as its originator learnt it over the channel (``k_packet``).

A forwarder that changes an LSA breaks its signature, and one that invents an LSA cannot sign
it with a key anybody vouched for. What this does not stop (a trusted node lying about its own
neighbours' keys) is discussed in ``docs/routing.md``. Used by ``controllers.routing.engine``.
"""

from __future__ import annotations

from controllers.routing.messages import Lsa


class KeyTrust:
    def __init__(self, *, node_id: str, own_key: str) -> None:
        self._own = (node_id, own_key)
        self._neighbours: dict[str, str] = {}
        self._vouched: dict[str, dict[str, int]] = {}  # node -> key -> K packets vouching

    def trusted(self, node: str, key: str) -> bool:
        if (node, key) == self._own:
            return True
        if self._neighbours.get(node) == key:
            return True
        vouched = self._vouched.get(node)
        return vouched is not None and key in vouched

    def neighbour_key(self, node: str, key: str | None) -> None:
        """``node`` (a neighbour) presented ``key`` over the channel; None forgets it."""
        if key is None:
            self._neighbours.pop(node, None)
        else:
            self._neighbours[node] = key

    def k_packet(self, old: Lsa | None, new: Lsa | None) -> list[str]:
        """An accepted K packet replaced ``old`` with ``new`` (either may be None); returns the
        nodes that gained a vouched key, whose held-back LSAs are worth another look."""
        if old is not None:
            for link in old.links:
                vouched = self._vouched[link.node]
                if vouched[link.key] > 1:
                    vouched[link.key] -= 1
                else:
                    del vouched[link.key]
                    if not vouched:
                        del self._vouched[link.node]
        gained = []
        if new is not None:
            for link in new.links:
                keys = self._vouched.get(link.node)
                if keys is None:
                    self._vouched[link.node] = {link.key: 1}
                    gained.append(link.node)
                elif link.key in keys:
                    keys[link.key] += 1
                else:
                    keys[link.key] = 1
                    gained.append(link.node)
        return gained
