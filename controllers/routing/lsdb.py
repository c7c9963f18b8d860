"""The link-state database: the newest instance of every LSA this node accepted, until it
expires, and the highest sequence number ever accepted per LSA (so that an old instance
replayed after its successor expired is still recognised as old).

Used only by ``controllers.routing.engine.Router``, which decides what to install; this module
only orders instances and keeps time. Pure: the engine passes its clock in.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from controllers.routing.messages import Lsa

Ident = tuple[str, str]  # (source node, type)
Newness = Literal["newer", "same", "older"]


@dataclass(slots=True)
class Entry:
    lsa: Lsa
    expires_at: float
    installed_at: float

    def age(self, now: float) -> int:
        """Seconds since origination, as this node reckons it (what it tells the next hop)."""
        return max(0, min(self.lsa.lifetime, round(self.lsa.lifetime - (self.expires_at - now))))


class LinkStateDatabase:
    def __init__(self) -> None:
        self._entries: dict[Ident, Entry] = {}
        self._highest: dict[Ident, int] = {}  # kept after expiry: the replay guard
        self._expiry: list[tuple[float, Ident, int]] = []  # (when, ident, seq); lazy deletion

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, ident: Ident) -> Entry | None:
        return self._entries.get(ident)

    def newness(self, lsa: Lsa) -> Newness:
        """How ``lsa`` compares with the instance held, or last held, of the same LSA. The same
        sequence number with a different signature is "same": the held one stays (an honest
        originator never signs two instances under one number)."""
        highest = self._highest.get(lsa.ident)
        if highest is None or lsa.seq > highest:
            return "newer"
        return "same" if lsa.seq == highest else "older"

    def install(self, lsa: Lsa, now: float) -> Entry | None:
        """Make ``lsa`` (newer than what is held) the current instance; the one it replaces."""
        ident = lsa.ident
        old = self._entries.get(ident)
        expires_at = now + lsa.lifetime - lsa.age
        self._entries[ident] = Entry(lsa=lsa, expires_at=expires_at, installed_at=now)
        self._highest[ident] = lsa.seq
        heapq.heappush(self._expiry, (expires_at, ident, lsa.seq))
        return old

    def expire(self, now: float) -> list[Entry]:
        """Remove and return every entry whose lifetime has run out."""
        gone = []
        while self._expiry and self._expiry[0][0] <= now:
            _, ident, seq = heapq.heappop(self._expiry)
            entry = self._entries.get(ident)
            if entry is not None and entry.lsa.seq == seq:
                del self._entries[ident]
                gone.append(entry)
        return gone

    def next_expiry(self) -> float | None:
        while self._expiry:
            when, ident, seq = self._expiry[0]
            entry = self._entries.get(ident)
            if entry is not None and entry.lsa.seq == seq:
                return when
            heapq.heappop(self._expiry)
        return None
