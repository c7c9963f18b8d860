"""When an LSA may be originated again: triggered updates, rate-limited with a growing hold.

The routing engine keeps one ``Throttle`` per own LSA (S and K). A change ``request``s an
origination; it fires at once if the last one is at least ``initial`` seconds old, otherwise
when that hold has passed (so a burst of changes costs one LSA). Every origination that follows
the previous one within the current hold doubles the hold, up to ``maximum``: a link flapping
without end costs one LSA per ``maximum`` seconds, not one per flap. A slower change halves the
hold again, and a quiet spell of twice the maximum resets it. (IS-IS and OSPF implementations
throttle LSA generation the same way.)
"""

from __future__ import annotations

import math


class Throttle:
    def __init__(self, *, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._hold = initial
        self._last = -math.inf
        self.pending = False

    def request(self) -> None:
        self.pending = True

    def due_at(self) -> float | None:
        """When the pending origination may happen, or None if none is pending."""
        return self._last + self._hold if self.pending else None

    def fire(self, now: float) -> None:
        """An origination happened at ``now``; the hold for the next one follows."""
        since = now - self._last
        if since >= 2 * self._maximum:
            self._hold = self._initial
        elif since <= self._hold + self._initial:
            # Changes keep coming about as fast as we let them out: back off.
            self._hold = min(self._maximum, max(self._initial, self._hold * 2))
        else:
            self._hold = max(self._initial, self._hold / 2)
        self._last = now
        self.pending = False
