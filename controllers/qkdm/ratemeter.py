"""The measured secret key rate of a stream: bits stored per second over a sliding window.

The pump records every batch it stores; the status reports ``bps()``. A window of a few seconds
smooths the device's chunk granularity without hiding a link that went down.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateMeter:
    window: float = 5.0  # seconds of history the rate is measured over
    clock: Callable[[], float] = time.monotonic
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _started: float | None = None

    def record(self, bits: int) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        self._samples.append((now, bits))
        self._trim(now)

    def start(self) -> None:
        """Mark when measuring began (the stream opened), so a slow start reads as slow."""
        self._started = self.clock()
        self._samples.clear()

    def warming_up(self) -> bool:
        """True until a whole window has passed since measuring began."""
        return self._started is None or self.clock() - self._started < self.window

    def bps(self) -> float:
        now = self.clock()
        self._trim(now)
        if self._started is None:
            return 0.0
        span = min(self.window, now - self._started)
        if span <= 0:
            return 0.0
        return sum(bits for _t, bits in self._samples) / span

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()


def human_rate(bps: float) -> str:
    """A rate for people: "950 bit/s", "12.5 kbit/s", "1.2 Mbit/s"."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} bit/s"
