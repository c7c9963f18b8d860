"""metav1.Condition bookkeeping, as pure functions.

Reconcilers build their status conditions with ``condition(...)`` and merge them into what the
object already has with ``merge_conditions``, which keeps ``lastTransitionTime`` when a
condition's status did not change (so `kubectl describe` shows when a link really went down).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

Status = Literal["True", "False", "Unknown"]


class Condition(TypedDict):
    type: str
    status: Status
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, UTC)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(
    type_: str,
    *,
    ok: bool | None,
    reason: str,
    message: str,
    generation: int = 0,
    at: str | None = None,
) -> Condition:
    """One condition; ``ok`` None means Unknown."""
    status: Status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=at or now_rfc3339(),
        observedGeneration=generation,
    )


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None, updates: Iterable[Condition]
) -> list[Condition]:
    """Replace conditions by type, keeping the old transition time where the status is unchanged.

    Conditions of types not in ``updates`` are kept as they are (another writer may own them).
    """
    merged: dict[str, Condition] = {}
    for old in existing or ():
        merged[str(old["type"])] = Condition(
            type=str(old["type"]),
            status=old["status"],
            reason=str(old.get("reason", "")),
            message=str(old.get("message", "")),
            lastTransitionTime=str(old.get("lastTransitionTime", now_rfc3339())),
            observedGeneration=int(old.get("observedGeneration", 0)),
        )
    for new in updates:
        old_one = merged.get(new["type"])
        if old_one is not None and old_one["status"] == new["status"]:
            new = Condition(**{**new, "lastTransitionTime": old_one["lastTransitionTime"]})
        merged[new["type"]] = new
    return list(merged.values())


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, if the object has one."""
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None
