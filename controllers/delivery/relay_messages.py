"""The key relay's messages between the nodes of a path (trusted repeaters), defined once and
read by both sides with ``qss_api.wire.decode``. ``controllers.delivery.relay`` sends and serves
them; ``docs/key-delivery.md`` ("Multi-hop relay") explains the protocol.

Along a path source -> repeater(s) -> destination, each node posts to the next:

- ``RelayPrepare`` (``PREPARE_PATH``): set the relay's keys aside under ``relay_id``. On the
  first hop it names the keys by ID (both ends of the first link hold them for the pair); on
  every later hop it also carries them ``sealed``: XORed with pad keys of that hop's link (named
  by ID, held by both its ends for the pair) and tagged with Poly1305 keyed by more of them.
  Answer ``RelayPrepared`` once every node up to the destination holds its part; else a
  ``Refusal`` (``controllers.delivery.messages``): 409 ``BadTag``, ``KeysNotHeld``,
  ``InsufficientKeys``, ``NoRoute``, ``PeerUnreachable`` (a node further on), ``Conflict``;
  400 ``BadMessage``, 403 ``Forbidden``, 404 ``UnknownStream``/``UnknownSae``, 503
  ``Unavailable``.
- ``RelayCommit`` (``COMMIT_PATH``): the source delivered the keys to its SAE: every node
  deletes what it set aside and the destination holds the keys for the slave SAE (and creates
  its automatic KeyRequest when ``hand_over``). Answer ``RelayCommitted``.
- ``RelayAbort`` (``ABORT_PATH``): the relay failed: every node drops what it set aside.
  Answer ``RelayAborted``.

Commit and abort are queued in the sender's store in the same step as its own change and
retried until acknowledged; both are idempotent, and neither undoes the other.
"""

from __future__ import annotations

from typing import Annotated, Final, Self

from pydantic import Field, StringConstraints, model_validator

from controllers.delivery.messages import MAX_HANDOVER_KEYS, StreamName
from controllers.delivery.relay_pad import TAG_BYTES, pad_count
from qss_api.wire import KeyBits, NodeId, SaeId, Uuid, WireModel

PREPARE_PATH: Final = "/qss/v1/relay/prepare"
COMMIT_PATH: Final = "/qss/v1/relay/commit"
ABORT_PATH: Final = "/qss/v1/relay/abort"

# A path of at most this many nodes (routing's paths are far shorter in any real network).
MAX_PATH_NODES: Final = 16
# Relayed key material per request, so one hop's message stays well inside the channel's
# 1 MiB body limit once base64-encoded.
MAX_RELAY_BYTES: Final = 512 * 1024
# How long a hop may wait for pad keys, at most.
MAX_WAIT_MS: Final = 120_000

Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


def _unique(what: str, values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"the same {what} appears more than once")


class Sealed(WireModel):
    """The relayed keys on a hop after the first: ciphertext and tag, and the pad keys used."""

    pad_key_ids: tuple[Uuid, ...] = Field(min_length=2, max_length=MAX_HANDOVER_KEYS + 32)
    ciphertext: Base64 = Field(max_length=4 * MAX_RELAY_BYTES // 3 + 4)
    tag: Base64 = Field(min_length=24, max_length=24)  # 16 bytes


class RelayPrepare(WireModel):
    relay_id: Uuid
    request_id: Uuid
    stream: StreamName  # the key stream of the link between sender and receiver
    master_sae: SaeId
    slave_sae: SaeId
    size_bits: KeyBits
    path: tuple[NodeId, ...] = Field(min_length=3, max_length=MAX_PATH_NODES)
    hop: Annotated[int, Field(ge=1, lt=MAX_PATH_NODES)]  # the receiver's place in the path
    wait_ms: Annotated[int, Field(ge=1, le=MAX_WAIT_MS)]
    key_ids: tuple[Uuid, ...] = Field(min_length=1, max_length=MAX_HANDOVER_KEYS)
    sealed: Sealed | None = None  # absent on the first hop only

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique("node", list(self.path))
        _unique("key_id", list(self.key_ids))
        if self.hop >= len(self.path):
            raise ValueError("hop must name a node of the path after the first")
        if len(self.key_ids) * self.size_bits // 8 > MAX_RELAY_BYTES:
            raise ValueError(f"a relay carries at most {MAX_RELAY_BYTES} bytes of keys")
        if (self.hop == 1) != (self.sealed is None):
            raise ValueError("the first hop carries no sealed keys; every later hop does")
        if self.sealed is not None:
            pads = self.sealed.pad_key_ids
            _unique("pad key ID", list(pads))
            if set(pads) & set(self.key_ids):
                raise ValueError("a pad key ID is also a relayed key ID")
            if len(pads) != pad_count(keys=len(self.key_ids), size_bits=self.size_bits):
                raise ValueError("the number of pad keys does not match the keys and their size")
            if _decoded_length(self.sealed.ciphertext) != len(self.key_ids) * self.size_bits // 8:
                raise ValueError("the ciphertext's length does not match the keys and their size")
            if _decoded_length(self.sealed.tag) != TAG_BYTES:
                raise ValueError(f"a tag is {TAG_BYTES} bytes")
        return self

    def tagged_fields(self) -> dict[str, object]:
        """What the tag covers besides the ciphertext: every field but ``sealed``'s ciphertext
        and tag (so a changed path, hop, stream, pair or key ID fails the tag too)."""
        fields = self.model_dump(mode="json", exclude={"sealed"})
        if self.sealed is not None:
            fields["pad_key_ids"] = list(self.sealed.pad_key_ids)
        return fields


class RelayPrepared(WireModel):
    relay_id: Uuid
    again: bool  # a retry of a relay prepared already (at the next node)


class RelayCommit(WireModel):
    relay_id: Uuid
    request_id: Uuid
    master_sae: SaeId
    slave_sae: SaeId
    size_bits: KeyBits
    key_ids: tuple[Uuid, ...] = Field(min_length=1, max_length=MAX_HANDOVER_KEYS)
    hand_over: bool  # create the slave SAE's automatic KeyRequest at the destination

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _unique("key_id", list(self.key_ids))
        return self


class RelayCommitted(WireModel):
    relay_id: Uuid


class RelayAbort(WireModel):
    relay_id: Uuid


class RelayAborted(WireModel):
    relay_id: Uuid
    dropped: int


def _decoded_length(text: str) -> int:
    if len(text) % 4:
        return -1
    return len(text) // 4 * 3 - text[-2:].count("=") if text else 0
