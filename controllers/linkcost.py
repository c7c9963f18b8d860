"""The paper's link cost and a link's state, as pure functions.

``link_cost`` is equation (2) of the paper: K_i(t) = c0 - w1*k_i(t)/K - w2*(k_i(t)-k_i(t-1))/K,
reported never below 1 so that Dijkstra's edge weights stay positive; the QKDLink reconciler
calls it on every sample and the routing controller sums it along paths (equation 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

State = Literal["Unknown", "Up", "Degraded", "Down"]

MIN_COST = 1.0


@dataclass(frozen=True, kw_only=True)
class CostWeights:
    c0: float = 100.0  # cost of a link with no key at all (the original QSS's value)
    w1: float = 50.0  # weight of the buffer fill
    w2: float = 25.0  # weight of the buffer's change since the last sample


def link_cost(*, available: int, previous: int, capacity: int, weights: CostWeights) -> float:
    """K_i(t) for a link with ``available`` keys now, ``previous`` at t-1, buffer ``capacity``."""
    if capacity <= 0:
        raise ValueError(f"link capacity must be positive, got {capacity}")
    fill = available / capacity
    trend = (available - previous) / capacity
    cost = weights.c0 - weights.w1 * fill - weights.w2 * trend
    return max(MIN_COST, round(cost, 3))


def link_state(stream_states: Iterable[str]) -> State:
    """Up when every stream is Up, Down when none is Up or Degraded, Degraded otherwise."""
    states = list(stream_states)
    if not states:
        return "Down"
    if all(s == "Up" for s in states):
        return "Up"
    if any(s in ("Up", "Degraded") for s in states):
        return "Degraded"
    return "Down"
