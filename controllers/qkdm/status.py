"""The QKDM's share of a KeyStream's status, as a pure function of what the pump observed.

``stream_status`` decides the state (Up, Degraded, Down) and its Ready condition from the store's
counts, the measured rate and the last fault, and formats the monitoring columns (fill, rate).
The reporter applies the result under the ``qss-qkdm`` field manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controllers.conditions import condition, now_rfc3339
from controllers.keystore import StreamCounts
from controllers.linkcost import State
from controllers.qkdm.ratemeter import human_rate


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Why the stream is not flowing: a CamelCase reason and a sentence for people."""

    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Observation:
    ksid: str
    counts: StreamCounts | None  # None until the store has answered once
    capacity: int
    rate_bps: float
    min_bps: int | None
    fault: Fault | None
    warming_up: bool  # the rate window has not filled since the stream opened
    opened: bool = True  # False until the device has opened the stream at this end
    flowing: bool = True  # False until the first key of the (re)opened stream arrived
    generation: int = 0


def decide_state(obs: Observation) -> tuple[State, str, str]:
    """(state, reason, message) for an observation."""
    if obs.fault is not None:
        return "Down", obs.fault.reason, obs.fault.message
    if not obs.opened:
        return "Unknown", "Starting", "opening the key stream on the QKD device"
    if obs.counts is not None and obs.counts.free == 0:
        return "Up", "BufferFull", "the key buffer is full; pulling resumes as keys are consumed"
    if not obs.flowing:
        return "Unknown", "WaitingForKey", f"key stream {obs.ksid} is open; no key has arrived yet"
    if not obs.warming_up and obs.rate_bps <= 0:
        return (
            "Degraded",
            "NoKeyFlowing",
            "no key has arrived for a while; the device generates none (rate 0?)",
        )
    if obs.min_bps and not obs.warming_up and obs.rate_bps < obs.min_bps:
        return (
            "Degraded",
            "BelowMinimumRate",
            f"measured {human_rate(obs.rate_bps)} is below qos.minBps ({human_rate(obs.min_bps)})",
        )
    return "Up", "KeysFlowing", f"keys flowing at {human_rate(obs.rate_bps)}"


def stream_status(obs: Observation, *, at: str | None = None) -> dict[str, Any]:
    state, reason, message = decide_state(obs)
    status: dict[str, Any] = {
        "ksid": obs.ksid,
        "state": state,
        "rateBps": round(obs.rate_bps),
        "rate": human_rate(obs.rate_bps),
        "lastUpdateTime": at or now_rfc3339(),
        "conditions": [
            condition(
                "Ready",
                ok=None if state == "Unknown" else state == "Up",
                reason=reason,
                message=message,
                generation=obs.generation,
                at=at,
            )
        ],
    }
    if obs.counts is not None:
        status.update(
            availableKeys=obs.counts.available,
            reservedKeys=obs.counts.reserved,
            consumedKeys=obs.counts.consumed,
            fill=f"{100 * obs.counts.available // max(1, obs.capacity)}%",
        )
    return status
