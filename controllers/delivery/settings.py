"""Settings of key delivery: pool sizes, leases and bounds. A frozen dataclass that
``controllers.main`` builds once (``from_env`` reads the ``QSS_DELIVERY_*`` variables of the
mapping it is given) and hands to the node; ``docs/key-delivery.md`` explains each for users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields


class DeliverySettingsError(ValueError):
    """A delivery setting has a value the node cannot run with; the message says which."""


@dataclass(frozen=True, kw_only=True)
class DeliverySettings:
    # A pair's pool may hold at most this share of its stream's capacity, so one busy pair
    # cannot starve the others (a single request larger than that still gets its keys).
    pool_share: float = 0.25
    # A pool is refilled to cover this many seconds of its recent demand...
    pool_horizon_seconds: float = 2.0
    # ...and to at least this many keys, so a new or quiet pair's next request is served at
    # once; a block agrees at most pool_block_keys keys in one message.
    pool_min_keys: int = 32
    pool_block_keys: int = 2048
    # A pool nobody took from for this long gives its keys back to the stream.
    pool_idle_seconds: float = 30.0
    # A block is served for this long after it was reserved; what is left then goes back.
    serve_seconds: float = 60.0
    # A block the peer has not answered within this long is given back (through the peer).
    agree_seconds: float = 10.0
    # A KeyRequest's keys stay set aside this long at most while its Secret is written.
    hold_seconds: float = 60.0
    # A slave SAE can fetch a key for at least this long after its master got it; then it is
    # dropped. The peer's lease is serve_seconds + hold_seconds + fetch_window_seconds.
    fetch_window_seconds: float = 300.0
    # Keys waiting for slave SAEs on a stream end may reach this multiple of its capacity; a
    # master's new blocks are refused beyond it (its requests then fail, saying why).
    held_factor: float = 2.0
    # How often deadlines are checked, and the longest wait between tries of a message.
    sweep_seconds: float = 0.5
    retry_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise DeliverySettingsError(f"{f.name} must be a positive number, got {value}")
        if self.pool_share > 1:
            raise DeliverySettingsError(f"pool_share {self.pool_share} must be at most 1")
        if self.pool_min_keys > self.pool_block_keys:
            raise DeliverySettingsError("pool_min_keys must not exceed pool_block_keys")

    @property
    def lease_ms(self) -> int:
        """How long the peer holds its copies of a block (from when it receives it)."""
        return int(1000 * (self.serve_seconds + self.hold_seconds + self.fetch_window_seconds))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DeliverySettings:
        """Settings from ``QSS_DELIVERY_<FIELD>`` (e.g. ``QSS_DELIVERY_POOL_SHARE``); unset ones
        keep their defaults."""
        values: dict[str, float | int] = {}
        for f in fields(cls):
            var = f"QSS_DELIVERY_{f.name.upper()}"
            if var not in environ:
                continue
            kind = int if f.type in ("int", int) else float
            try:
                values[f.name] = kind(environ[var])
            except ValueError:
                raise DeliverySettingsError(f"{var}={environ[var]!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]
