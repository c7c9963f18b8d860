"""A record of the clients the channel refused, so that refusals show on the QKDLinks.

The channel server's middleware records every refusal here; the QKDLink reconciler asks
``latest_for_link(name)`` and turns the answer into a condition (and may ``subscribe`` to hear
of new refusals at once). A refusal is attributed to the links it concerns: those whose peer
the certificate claimed to be, and those whose CA signed it. Repeats of one refusal (same
reason, claimed node and certificate) replace each other, and only the first is logged, so a
peer retrying with a bad certificate cannot flood the log or this record.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# More distinct refusals than this are old news; the oldest are dropped first.
DEFAULT_KEEP = 256


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Refusal:
    """One refused client: why, which links it concerns, who it claimed to be."""

    reason: str
    message: str
    links: tuple[str, ...] = ()
    claimed_node_id: str | None = None
    fingerprint: str | None = None
    remote: str | None = None
    at: dt.datetime = field(default_factory=_now)

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        return (self.reason, self.claimed_node_id, self.fingerprint)


class PeerRefusals:
    """Recent refusals, bounded, plus when each peer node last got in."""

    def __init__(self, *, keep: int = DEFAULT_KEEP) -> None:
        self._keep = keep
        self._refusals: OrderedDict[tuple[str, str | None, str | None], Refusal] = OrderedDict()
        self._accepted: dict[str, dt.datetime] = {}
        self._listeners: list[Callable[[Refusal], None]] = []

    def subscribe(self, listener: Callable[[Refusal], None]) -> Callable[[], None]:
        """Call ``listener(refusal)`` on every refusal; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, refusal: Refusal) -> None:
        if refusal.key not in self._refusals:
            log.warning(
                "channel refused a client from %s (links: %s): %s: %s",
                refusal.remote or "unknown address",
                ", ".join(refusal.links) or "none",
                refusal.reason,
                refusal.message,
            )
        self._refusals.pop(refusal.key, None)
        self._refusals[refusal.key] = refusal
        while len(self._refusals) > self._keep:
            self._refusals.popitem(last=False)
        for listener in list(self._listeners):
            listener(refusal)

    def accepted(self, node_id: str) -> None:
        """Note that ``node_id`` authenticated; its earlier refusals are resolved."""
        if node_id not in self._accepted:
            log.info("channel accepted peer node %s", node_id)
        self._accepted[node_id] = _now()
        for key in [k for k, r in self._refusals.items() if r.claimed_node_id == node_id]:
            del self._refusals[key]

    def accepted_at(self, node_id: str) -> dt.datetime | None:
        """When ``node_id`` last authenticated on the channel, if ever."""
        return self._accepted.get(node_id)

    def recent(self) -> list[Refusal]:
        """Every remembered refusal, oldest first."""
        return list(self._refusals.values())

    def latest_for_link(self, link: str, *, since: dt.datetime | None = None) -> Refusal | None:
        """The newest refusal concerning QKDLink ``link`` (at or after ``since``), if any."""
        for refusal in reversed(self._refusals.values()):
            if link in refusal.links and (since is None or refusal.at >= since):
                return refusal
        return None
