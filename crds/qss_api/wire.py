"""How every kube-qss wire message is defined and read: one pydantic model per message type.

Each protocol (the QKD device's, KRP and hand-over on the inter-node channel, SAE announcements,
LSAs, AdmissionReview) keeps its messages in one module of ``WireModel`` subclasses that both
sides import. A receiver calls ``decode(Model, body)`` on the raw bytes before any logic runs:
it either gets a typed, frozen, fully checked message or a ``BadMessage`` whose ``problems``
name each wrong field and say what is wrong, never echoing the value (a body may carry key
material). Strict mode means no coercion: ``true`` is not an integer, ``"5"`` is not a number,
unknown fields are refused. The JSON parser underneath refuses nesting deeper than a few
hundred levels and numbers beyond 64 bits with an error, not a crash.

Used by every component (this module is part of ``qss_api``, the one package they share).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# A lower-case UUID, as key IDs, chunk IDs, reservation and request IDs are written on the wire.
UUID_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# An SAE ID, as the Sae CRD's spec.saeID allows.
SAE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A node ID is a DNS label (the QKDLink CRD's peerNodeID).
NODE_ID_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
SaeId = Annotated[str, StringConstraints(pattern=SAE_ID_PATTERN)]
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
# A key size in bits, as requests may ask for (whole bytes, within the delivery bounds).
KeyBits = Annotated[int, Field(ge=8, le=32768, multiple_of=8)]


class WireModel(BaseModel):
    """Base of every wire message: strict types, no unknown fields, immutable once read."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Problem(TypedDict):
    """One thing wrong with a message: where (a dotted path, '' for the whole body) and what."""

    parameter: str
    error: str


class BadMessage(ValueError):
    """A message that is not what its protocol says; ``message`` and ``problems`` are safe to
    send back and to log (they never quote the offending values)."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.problems = problems
        listed = "; ".join(
            f"{p['parameter']}: {p['error']}" if p["parameter"] else p["error"] for p in problems
        )
        self.message = f"malformed {what}: {listed}"
        super().__init__(self.message)


M = TypeVar("M", bound=BaseModel)

# At most this many problems are reported; a junk body should not produce a junk-sized answer.
_MAX_PROBLEMS: Final = 10


def problems_of(exc: ValidationError) -> list[Problem]:
    """The problems pydantic found, without the input values it would otherwise quote."""
    out: list[Problem] = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        path = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "json_invalid":
            # pydantic's wording includes the parser's position, which is fine to show.
            message = f"the body is not valid JSON ({message.removeprefix('Invalid JSON: ')})"
        out.append({"parameter": path, "error": message})
        if len(out) == _MAX_PROBLEMS:
            break
    return out


def decode(model: type[M], body: bytes | str, *, what: str | None = None) -> M:
    """Parse and check one JSON message; ``BadMessage`` if it is anything else."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise BadMessage(what or model.__name__, problems_of(exc)) from None


def check(model: type[M], value: Any, *, what: str | None = None) -> M:
    """Check an already parsed JSON value (e.g. part of a larger document) against ``model``,
    with exactly the rules ``decode`` applies to the same value as bytes."""
    try:
        body = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise BadMessage(
            what or model.__name__, [{"parameter": "", "error": "the value is not plain JSON"}]
        ) from None
    return decode(model, body, what=what)


def encode(message: BaseModel) -> bytes:
    """A message as the JSON bytes its receiver's ``decode`` reads back."""
    return message.model_dump_json().encode()
