"""The routing engine's counters, in one place: what it originated, sent, accepted and dropped.

``controllers.routing.engine.Router`` counts into one ``RoutingStats``; the QKDLink reconciler
turns ``drops_from(peer)`` into a condition and Events (``controllers.routing.status``), the
benchmarks read the message counts, and ``controllers.metrics`` exports all of it when Prometheus
scrapes (``as_dict``, and the drops per neighbour).
Nothing here holds key material: an LSA is public routing information.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal

DropReason = Literal[
    # The signature does not verify with the key the LSA names, a key its originator holds.
    "bad_signature",
    # No authenticated node vouches for the key the LSA names (held, then given up on).
    "unknown_originator",
    # Not newer than what this node holds (or held) of that LSA: a replay, or a stale copy.
    "not_newer",
    # The message is not what the protocol says (refused at the channel with a 400).
    "malformed",
]
DROP_REASONS: Final[tuple[DropReason, ...]] = (
    "bad_signature",
    "unknown_originator",
    "not_newer",
    "malformed",
)


@dataclass(frozen=True, slots=True)
class Drop:
    """The latest drop of an LSA received from one neighbour."""

    reason: DropReason
    source: str  # the LSA's claimed originator ("" when the message did not parse)
    at: float  # on the engine's clock


@dataclass
class PeerDrops:
    """Drops of LSAs one neighbour sent us, by reason, and the latest."""

    counts: Counter[str] = field(default_factory=Counter)
    last: Drop | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class RoutingStats:
    originated: int = 0  # own LSAs signed
    lsas_sent: int = 0  # LSA transmissions to neighbours (one LSA to two neighbours: 2)
    messages_sent: int = 0  # hello, exchange and flood requests
    lsas_received: int = 0
    accepted: int = 0  # newer instances installed
    duplicates: int = 0  # the instance this node already holds (normal in flooding)
    expired: int = 0  # LSAs aged out of the database
    spf_runs: int = 0
    exchanges: int = 0  # full database exchanges completed
    drops: Counter[str] = field(default_factory=Counter)
    by_peer: dict[str, PeerDrops] = field(default_factory=dict)

    def drop(self, peer: str, reason: DropReason, source: str, at: float) -> None:
        self.drops[reason] += 1
        peer_drops = self.by_peer.setdefault(peer, PeerDrops())
        peer_drops.counts[reason] += 1
        peer_drops.last = Drop(reason=reason, source=source, at=at)

    def drops_from(self, peer: str) -> PeerDrops:
        return self.by_peer.get(peer) or PeerDrops()

    def as_dict(self) -> dict[str, int]:
        """Flat counters, e.g. for a metrics endpoint."""
        flat = {
            "originated": self.originated,
            "lsas_sent": self.lsas_sent,
            "messages_sent": self.messages_sent,
            "lsas_received": self.lsas_received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "expired": self.expired,
            "spf_runs": self.spf_runs,
            "exchanges": self.exchanges,
        }
        flat.update({f"dropped_{reason}": self.drops[reason] for reason in DROP_REASONS})
        return flat
