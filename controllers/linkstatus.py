"""What the controller writes into QKDLink and KeyStream status, as pure functions of the objects.

``link_status`` turns a link and its streams into the link's status (k_i(t), k_i(t-1), the cost of
equation (2), state, Ready condition); ``stream_link_status`` gives a KeyStream the fields that
come from its link (peer, capacity) or a condition saying the link is missing. The handlers in
``controllers.handlers.links`` call these and apply the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controllers.conditions import Condition, condition, merge_conditions, now_rfc3339
from controllers.linkcost import CostWeights, State, link_cost, link_state

DEFAULT_CAPACITY = 100_000


@dataclass(frozen=True)
class LinkSample:
    status: dict[str, Any]
    state: State
    previous_state: str | None

    @property
    def changed(self) -> bool:
        return self.state != self.previous_state


def _weights(spec: Mapping[str, Any]) -> CostWeights:
    cost = spec.get("cost") or {}
    defaults = CostWeights()
    return CostWeights(
        c0=float(cost.get("c0", defaults.c0)),
        w1=float(cost.get("w1", defaults.w1)),
        w2=float(cost.get("w2", defaults.w2)),
    )


def streams_of(link_name: str, streams: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [s for s in streams if (s.get("spec") or {}).get("link") == link_name]


def peer_condition(
    *,
    problem: tuple[str, str] | None,
    refusal: tuple[str, str] | None,
    rejected: str | None = None,
    generation: int = 0,
) -> Condition:
    """PeerTrusted: whether the channel to the link's peer is set up and trusted both ways.
    ``problem`` is a configuration problem of the link (reason, message); ``refusal`` the
    latest refusal of a client claiming to be the peer; ``rejected`` why the peer's server
    certificate did not verify when this node last called it."""
    if problem is not None:
        reason, message = problem
        return condition(
            "PeerTrusted", ok=False, reason=reason, message=message, generation=generation
        )
    if refusal is not None:
        reason, message = refusal
        return condition(
            "PeerTrusted",
            ok=False,
            reason=reason,
            message=f"a client was refused on this link: {message}",
            generation=generation,
        )
    if rejected is not None:
        return condition(
            "PeerTrusted",
            ok=False,
            reason="PeerCertificateRejected",
            message=rejected,
            generation=generation,
        )
    return condition(
        "PeerTrusted",
        ok=True,
        reason="PeerCAConfigured",
        message="the channel trusts the peer's CA and no client was refused",
        generation=generation,
    )


def link_status(
    link: Mapping[str, Any],
    streams: Sequence[Mapping[str, Any]],
    *,
    extra: Sequence[Condition] = (),
    at: str | None = None,
) -> LinkSample:
    """The link's next status from its spec, its current status and its streams' statuses."""
    spec = link.get("spec") or {}
    status = link.get("status") or {}
    generation = int((link.get("metadata") or {}).get("generation", 0))
    capacity_per_stream = int(spec.get("keyBufferCapacity", DEFAULT_CAPACITY))
    stream_statuses = [s.get("status") or {} for s in streams]
    available = sum(int(s.get("availableKeys", 0)) for s in stream_statuses)
    previous = int(status.get("availableKeys", available))
    capacity = capacity_per_stream * max(1, len(streams))
    state = link_state(str(s.get("state", "Unknown")) for s in stream_statuses)
    cost = link_cost(
        available=available, previous=previous, capacity=capacity, weights=_weights(spec)
    )
    if not streams:
        ready = condition(
            "Ready",
            ok=False,
            reason="NoKeyStreams",
            message="no KeyStream names this link in spec.link; create one to start key flow",
            generation=generation,
            at=at,
        )
    elif state == "Up":
        ready = condition(
            "Ready",
            ok=True,
            reason="StreamsUp",
            message=f"all {len(streams)} key streams are up",
            generation=generation,
            at=at,
        )
    else:
        down = [
            str((s.get("metadata") or {}).get("name"))
            for s, st in zip(streams, stream_statuses, strict=True)
            if st.get("state") != "Up"
        ]
        ready = condition(
            "Ready",
            ok=False,
            reason=f"Streams{state}",
            message=f"key streams not up: {', '.join(sorted(down))}",
            generation=generation,
            at=at,
        )
    new_status = {
        "observedGeneration": generation,
        "state": state,
        "availableKeys": available,
        "previousAvailableKeys": previous,
        "cost": cost,
        "streams": len(streams),
        "lastSampleTime": at or now_rfc3339(),
        "conditions": merge_conditions(status.get("conditions"), [ready, *extra]),
    }
    return LinkSample(status=new_status, state=state, previous_state=status.get("state"))


def stream_link_status(stream: Mapping[str, Any], link: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of a KeyStream's status that the controller owns."""
    generation = int((stream.get("metadata") or {}).get("generation", 0))
    link_name = (stream.get("spec") or {}).get("link", "")
    existing = (stream.get("status") or {}).get("conditions")
    if link is None:
        found = condition(
            "LinkFound",
            ok=False,
            reason="LinkNotFound",
            message=f"QKDLink {link_name!r} does not exist; create it or correct spec.link",
            generation=generation,
        )
        return {"conditions": [_only(merge_conditions(existing, [found]), "LinkFound")]}
    spec = link.get("spec") or {}
    found = condition(
        "LinkFound",
        ok=True,
        reason="LinkFound",
        message=f"flows over QKDLink {link_name!r} to node {spec.get('peerNodeID')!r}",
        generation=generation,
    )
    return {
        "peerNodeID": spec.get("peerNodeID"),
        "capacity": int(spec.get("keyBufferCapacity", DEFAULT_CAPACITY)),
        "conditions": [_only(merge_conditions(existing, [found]), "LinkFound")],
    }


def _only(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any]:
    return next(c for c in conditions if c["type"] == type_)
