"""What the routing counters say on a QKDLink: a condition, and an Event when LSAs were dropped.

The QKDLink reconciler (``controllers.handlers.links``) samples every link on a timer; it asks
``lsa_condition`` for the link's ``LsasVerified`` condition from the drops of LSAs the link's
peer sent (``RoutingStats.drops_from``) and ``drop_event`` whether to post an Event since its
last sample. Drops are attributed to the neighbour that sent the LSA: the one the channel
authenticated, whichever node the LSA claims to come from.
"""

from __future__ import annotations

from typing import Final

from controllers.conditions import Condition, condition
from controllers.routing.stats import DROP_REASONS, PeerDrops

CONDITION: Final = "LsasVerified"
# A drop keeps the condition False this long (seconds), so that it is seen, then it clears.
DROP_MEMORY: Final = 600.0

_REASONS: Final = {
    "bad_signature": ("BadSignature", "bad signature"),
    "unknown_originator": ("UnknownOriginator", "unknown originator"),
    "not_newer": ("NotNewer", "not newer than held (replay)"),
    "malformed": ("Malformed", "malformed"),
}


def _counts(drops: PeerDrops) -> str:
    return ", ".join(f"{drops.counts[r]} {_REASONS[r][1]}" for r in DROP_REASONS if drops.counts[r])


def lsa_condition(drops: PeerDrops, *, peer: str, now: float, generation: int = 0) -> Condition:
    """``LsasVerified``: False while an LSA from ``peer`` was dropped in the last ten minutes."""
    last = drops.last
    if last is None or now - last.at > DROP_MEMORY:
        return condition(
            CONDITION,
            ok=True,
            reason="Verified",
            message=f"no routing message from node {peer} was dropped in the last "
            f"{DROP_MEMORY / 60:.0f} minutes",
            generation=generation,
        )
    reason, words = _REASONS[last.reason]
    origin = f", originated by node {last.source}" if last.source else ""
    return condition(
        CONDITION,
        ok=False,
        reason=reason,
        message=f"dropped LSAs received from node {peer} since the controller started: "
        f"{_counts(drops)}; the latest {_seconds(now - last.at)} ago ({words}{origin})",
        generation=generation,
    )


def drop_event(drops: PeerDrops, *, peer: str, seen: int) -> str | None:
    """The message of a Warning Event if ``peer`` had drops since ``seen`` were counted."""
    if drops.total <= seen or drops.last is None:
        return None
    reason = _REASONS[drops.last.reason][1]
    origin = f" originated by node {drops.last.source}" if drops.last.source else ""
    return (
        f"dropped {drops.total - seen} routing message(s) from node {peer}; the latest: "
        f"{reason}{origin} (so far: {_counts(drops)})"
    )


def _seconds(value: float) -> str:
    return f"{max(0, round(value))} s"
