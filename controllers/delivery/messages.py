"""The key reservation protocol (KRP) between neighbour nodes: every message and every error,
defined once, read by both sides with ``qss_api.wire.decode``.

The master node of a (master SAE, slave SAE) pair posts to the slave SAE's node:

- ``ReserveBlock`` (``RESERVE_PATH``): hold these keys of a pool block for the pair, for
  ``lease_ms``. Answer ``BlockHeld``, or a ``Refusal``: 409 ``Refused`` saying per chunk
  ``never`` (its ingest passed that device index without storing it: drop it at once),
  ``not_yet`` (beyond its ingest cursor: try again soon) or ``taken`` (held for another block:
  a conflict, fail now); 409 ``HeldBound`` (too many keys wait for slave SAEs there), 409
  ``Conflict`` (the block ID names another block, or a key ID its chunks do not compose);
- ``ReleaseBlock`` (``RELEASE_PATH``): the master gives back keys of a block it never served;
  answer ``Released``: which went back to the buffer there, which are gone;
- ``HandOver`` (``HANDOVER_PATH``): keys delivered to the master SAE by a KeyRequest, for the
  slave SAE's automatic KeyRequest; answer ``HandedOver``, or 409 ``KeysNotHeld``, or 503
  ``Unavailable`` (its API server is down: try again);
- ``DropIndices`` (``DROP_PATH``): device index ranges of one device key stream (``ksid``) the
  sender's ingest passed over without storing; the receiver never stores them either. Answer
  ``Dropped``, or 409 ``Conflict`` if the KSID is not of the stream's sequence there.

A chunk's device index counts within one device key stream (KSID): when the QKDMs move a
KeyStream to the next KSID of its sequence, indices start again at 0 (``docs/key-streams.md``).
So every index on the wire travels with its key stream: a block's chunks with the *epoch* of
theirs (its place in the sequence, which both nodes compute from the KSID), a drop notice with
the KSID itself.

Every node may be either side. Any request may also get 400 ``BadMessage`` (with the problems),
403 ``Forbidden`` (the stream does not lead to the caller), 404 ``UnknownStream`` or
``UnknownSae``. Error bodies are ``{"message", "details": [Refusal]}`` as on every channel route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from controllers.keystore import MAX_BLOCK_CHUNKS, MAX_BLOCK_KEYS
from qss_api.wire import KeyBits, SaeId, Uuid, WireModel

RESERVE_PATH: Final = "/qss/v1/krp/reserve"
RELEASE_PATH: Final = "/qss/v1/krp/release"
HANDOVER_PATH: Final = "/qss/v1/krp/handover"
DROP_PATH: Final = "/qss/v1/krp/drop"

# One hand-over is one KeyRequest's keys (the CRD's bound).
MAX_HANDOVER_KEYS: Final = 1000
# A drop message's ranges, and how wide one may be (a device's buffer is far smaller).
MAX_RANGES: Final = 64
MAX_RANGE_SPAN: Final = 10**9
# Leases between a second and a week: shorter cannot outlive a round trip, longer is a bug.
MIN_LEASE_MS: Final = 1_000
MAX_LEASE_MS: Final = 7 * 24 * 3600 * 1000

StreamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,253}$")]
# A device index, or -1 where the sender's store has none (chunks added without an index).
DeviceIndex = Annotated[int, Field(ge=-1, le=2**62)]
# A KSID's place in its KeyStream's sequence (controllers/qkdm/ids.py: 32 bits of the KSID).
Epoch = Annotated[int, Field(ge=0, le=2**32 - 1)]
LeaseMs = Annotated[int, Field(ge=MIN_LEASE_MS, le=MAX_LEASE_MS)]

Reason = Literal[
    "BadMessage",
    "Forbidden",
    "UnknownStream",
    "UnknownSae",
    "Refused",
    "HeldBound",
    "Conflict",
    "KeysNotHeld",
    "Unavailable",
    # the key relay's (``relay_messages``)
    "BadTag",
    "InsufficientKeys",
    "NoRoute",
    "PeerUnreachable",
    "Aborted",
]


def _unique(what: str, values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"the same {what} appears more than once")


class ChunkRef(WireModel):
    id: Uuid
    index: DeviceIndex
    epoch: Epoch  # of the device key stream ``index`` counts in


class BlockKeyRef(WireModel):
    key_id: Uuid
    chunks: tuple[ChunkRef, ...] = Field(min_length=1, max_length=MAX_BLOCK_CHUNKS)


class ReserveBlock(WireModel):
    block_id: Uuid
    stream: StreamName
    master_sae: SaeId
    slave_sae: SaeId
    size_bits: KeyBits
    lease_ms: LeaseMs
    keys: tuple[BlockKeyRef, ...] = Field(min_length=1, max_length=MAX_BLOCK_KEYS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique("key_id", [k.key_id for k in self.keys])
        chunks = [c.id for k in self.keys for c in k.chunks]
        if len(chunks) > MAX_BLOCK_CHUNKS:
            raise ValueError(f"a block has at most {MAX_BLOCK_CHUNKS} chunks")
        _unique("chunk id", chunks)
        if len({len(k.chunks) for k in self.keys}) != 1:
            raise ValueError("every key of a block has the same number of chunks")
        return self


class BlockHeld(WireModel):
    held: int
    again: bool  # a retry of a block held already


class ReleaseKey(WireModel):
    key_id: Uuid
    chunk_ids: tuple[Uuid, ...] = Field(min_length=1, max_length=MAX_BLOCK_CHUNKS)


class ReleaseBlock(WireModel):
    block_id: Uuid
    stream: StreamName
    master_sae: SaeId
    slave_sae: SaeId
    keys: tuple[ReleaseKey, ...] = Field(min_length=1, max_length=MAX_BLOCK_KEYS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique("key_id", [k.key_id for k in self.keys])
        chunks = [c for k in self.keys for c in k.chunk_ids]
        if len(chunks) > MAX_BLOCK_CHUNKS:
            raise ValueError(f"a release names at most {MAX_BLOCK_CHUNKS} chunks")
        _unique("chunk id", chunks)
        return self


class Released(WireModel):
    returned: tuple[Uuid, ...]
    gone: tuple[Uuid, ...]


class HandOver(WireModel):
    request_id: Uuid
    stream: StreamName
    master_sae: SaeId
    slave_sae: SaeId
    size_bits: KeyBits
    key_ids: tuple[Uuid, ...] = Field(min_length=1, max_length=MAX_HANDOVER_KEYS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique("key_id", list(self.key_ids))
        return self


class HandedOver(WireModel):
    accepted: int


# What receives a hand-over on the slave SAE's node (``controllers.delivery.handover``): (the
# hand-over, whether this node holds its keys for the pair, the node it came from) -> True once
# the slave SAE's request exists (created now or before), False if it does not and the keys are
# not here. The KRP hand-over route and the relay's commit call it.
HandOverSink = Callable[[HandOver, bool, str], Awaitable[bool]]


class IndexRange(WireModel):
    start: Annotated[int, Field(ge=0, le=2**62)]
    # None: every index from start on (the sender left that key stream there).
    end: Annotated[int, Field(ge=1, le=2**62)] | None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.end is not None and not self.start < self.end <= self.start + MAX_RANGE_SPAN:
            raise ValueError(f"a range needs start < end <= start + {MAX_RANGE_SPAN}")
        return self


class DropIndices(WireModel):
    stream: StreamName
    ksid: Uuid  # the device key stream the ranges' indices count in
    ranges: tuple[IndexRange, ...] = Field(min_length=1, max_length=MAX_RANGES)


class Dropped(WireModel):
    dropped: int


class Refusal(WireModel):
    """One entry of an error's ``details``: why, and for a refused block, which chunks."""

    reason: Reason
    never: tuple[Uuid, ...] = ()
    not_yet: tuple[Uuid, ...] = ()
    taken: tuple[Uuid, ...] = ()
    problems: tuple[dict[str, str], ...] = ()
