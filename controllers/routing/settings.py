"""The routing protocol's timers and thresholds: one frozen dataclass, read once by
``controllers.main`` (``RoutingSettings.from_env``) and handed to the routing engine.

Defaults suit a QKD network of tens to hundreds of nodes over the inter-node channel; the
in-memory transport's tests and benchmarks pick their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from controllers.routing.messages import MAX_LIFETIME, MIN_LIFETIME


class RoutingSettingsError(ValueError):
    """A routing setting the controller cannot run with; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class RoutingSettings:
    # How often each neighbour is greeted; the hello is the channel's heartbeat, so it also
    # bounds how stale a QKDLink's PeerTrusted condition is.
    hello_interval: float = 2.0
    # A neighbour not heard from for this long is down: its link leaves our K packet.
    dead_interval: float = 8.0
    # How long an LSA is valid after its origination; a node that vanished is forgotten by then.
    lsa_lifetime: int = 300
    # Own LSAs are re-originated this often even without a change (well within the lifetime).
    refresh_interval: float = 100.0
    # Triggered updates of one LSA are at least this far apart; the hold doubles while changes
    # keep coming (a flapping link) up to ``max_origination_hold`` and resets after a quiet spell.
    min_origination_interval: float = 1.0
    max_origination_hold: float = 16.0
    # A link's cost change is advertised at once only beyond this fraction of the advertised
    # cost (and ``cost_hysteresis_floor`` in cost units); smaller drift waits for the refresh.
    cost_hysteresis: float = 0.1
    cost_hysteresis_floor: float = 2.0
    # After the database changes, Dijkstra runs this much later, so one burst costs one run.
    spf_delay: float = 0.05
    # An LSA whose originator's key is not vouched for yet waits this long for the K packet
    # that vouches for it (it may be a hop behind), then counts as from an unknown originator.
    pending_hold: float = 10.0
    # A request to a neighbour that takes longer than this has failed.
    request_timeout: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise RoutingSettingsError(f"routing setting {f.name} must be >= 0, got {value}")
        if self.hello_interval <= 0:
            raise RoutingSettingsError("the hello interval must be positive")
        if self.dead_interval <= self.hello_interval:
            raise RoutingSettingsError(
                f"the dead interval ({self.dead_interval} s) must exceed the hello interval "
                f"({self.hello_interval} s), or every neighbour would look dead between hellos"
            )
        if not MIN_LIFETIME <= self.lsa_lifetime <= MAX_LIFETIME:
            raise RoutingSettingsError(
                f"the LSA lifetime must be {MIN_LIFETIME} to {MAX_LIFETIME} s, "
                f"got {self.lsa_lifetime}"
            )
        if not 0 < self.refresh_interval < self.lsa_lifetime:
            raise RoutingSettingsError(
                f"the refresh interval ({self.refresh_interval} s) must be positive and shorter "
                f"than the LSA lifetime ({self.lsa_lifetime} s), or LSAs would expire"
            )
        if self.max_origination_hold < self.min_origination_interval:
            raise RoutingSettingsError("the maximum origination hold is below the minimum")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RoutingSettings:
        """Settings from ``QSS_ROUTING_<FIELD>`` variables (e.g. QSS_ROUTING_HELLO_INTERVAL)."""
        values: dict[str, float | int] = {}
        for f in fields(cls):
            var = f"QSS_ROUTING_{f.name.upper()}"
            if var not in environ:
                continue
            text = environ[var]
            try:
                values[f.name] = int(text) if f.type == "int" else float(text)
            except ValueError:
                raise RoutingSettingsError(f"{var}={text!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]
