"""Small JSON Patch (RFC 6902) builders for the webhook's mutations.

``webhooks.mutate`` describes each change against the pod it was given; these functions turn it
into operations that apply cleanly to that pod:

- a list that is absent or empty is created whole (``add /spec/volumes [...]``), because
  ``/-`` only appends to a list that exists; later items go to its end with ``/-``;
- an annotation goes into ``/metadata/annotations`` (created if absent) under its key escaped as
  RFC 6901 asks (``~`` as ``~0``, ``/`` as ``~1``): ``qss.dev/inject-status`` is
  ``/metadata/annotations/qss.dev~1inject-status``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypedDict

OP_ADD: Final = "add"
OP_REPLACE: Final = "replace"


class Operation(TypedDict):
    op: str
    path: str
    value: Any


def escape(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` first, then ``/``."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def append(path: str, current: Sequence[Any] | None, items: Iterable[Any]) -> list[Operation]:
    """Add ``items`` at the end of the list at ``path`` (``current`` is what is there now)."""
    items = list(items)
    if not items:
        return []
    if not current:
        return [{"op": OP_ADD, "path": path, "value": items}]
    return [{"op": OP_ADD, "path": f"{path}/-", "value": item} for item in items]


def insert_first(path: str, current: Sequence[Any] | None, item: Any) -> list[Operation]:
    """Put ``item`` first in the list at ``path`` (created if absent)."""
    if not current:
        return [{"op": OP_ADD, "path": path, "value": [item]}]
    return [{"op": OP_ADD, "path": f"{path}/0", "value": item}]


def replace(path: str, value: Any) -> Operation:
    return {"op": OP_REPLACE, "path": path, "value": value}


def set_annotation(current: dict[str, str] | None, key: str, value: str) -> list[Operation]:
    """Set one annotation (``add`` replaces an existing member, as RFC 6902 says)."""
    if current is None:
        return [{"op": OP_ADD, "path": "/metadata/annotations", "value": {key: value}}]
    if current.get(key) == value:
        return []
    return [{"op": OP_ADD, "path": pointer("metadata", "annotations", key), "value": value}]


def encode(operations: Sequence[Operation]) -> str:
    """The patch as the AdmissionResponse carries it: base64 of its JSON."""
    return base64.b64encode(json.dumps(list(operations)).encode()).decode("ascii")
