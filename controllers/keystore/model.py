"""The values the key store takes and returns. Key material is kept out of every ``repr``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of key material as the QKDM adds it; its ID is agreed with the peer QKDM."""

    chunk_id: str
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What became of a batch: the first ``accepted + duplicates`` chunks are in the store
    (or were already, or must never be), the last ``refused`` are not because the buffer is
    full."""

    accepted: int
    duplicates: int
    refused: int
    free: int = 0  # room left in the buffer after the batch, in chunks (as ``counts().free``)

    @property
    def stored(self) -> int:
        """How many leading chunks of the batch the caller need not send again."""
        return self.accepted + self.duplicates


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """A consistent snapshot of one stream, in chunks:
    added = available + pooled + mirrored + holding + consumed + dropped."""

    capacity: int
    chunk_bytes: int
    added: int
    available: int  # in the buffer, which capacity bounds (what stops ingest when full)
    pooled: int  # in this node's master pool blocks (agreed with the peer, or being agreed)
    mirrored: int  # held here for slave SAEs: the peer's pool blocks, outside the buffer
    holding: int  # in requests' holds, waiting to be written and committed
    consumed: int  # delivered
    dropped: int  # destroyed undelivered (expired, or the other end never had them)
    cursor: int = 0  # the next device index the stream's QKDM fetches
    epoch: int = 0  # the epoch of the device key stream (KSID) the cursor counts in

    @property
    def reserved(self) -> int:
        """Chunks out of the buffer, in blocks of any kind."""
        return self.pooled + self.mirrored + self.holding

    @property
    def held(self) -> int:
        """Chunks occupying the buffer; capacity bounds this."""
        return self.available

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.held)


@dataclass(frozen=True, slots=True)
class BlockChunk:
    """A chunk of a block's key: its ID, its device index (-1 when the store has none) and the
    epoch of the device key stream (KSID) that index counts in: an index means something only
    with its epoch, since each new KSID of a KeyStream counts from 0 again."""

    chunk_id: str
    index: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class BlockKey:
    """A key of a block: its ID and its chunks in order (its ID is composed of theirs)."""

    key_id: str
    chunks: tuple[BlockChunk, ...]

    @property
    def chunk_ids(self) -> tuple[str, ...]:
        return tuple(c.chunk_id for c in self.chunks)


@dataclass(frozen=True, slots=True)
class Block:
    """A master pool block as reserved here: what the peer must hold alike."""

    block_id: str
    owner: str
    size_bits: int
    state: str  # pending, active, releasing
    keys: tuple[BlockKey, ...]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)


@dataclass(frozen=True, slots=True)
class Key:
    """A key as served or held: ``size_bits // 8`` bytes of material."""

    key_id: str
    size_bits: int
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RelayView:
    """What a relay message finds in the store (``KeyStore.relay_view``): the relay was
    ``aborted`` here; or its hold exists (``held``), with ``tag`` once opened (at the
    destination) or else its ``keys``; or no hold yet, and ``keys`` are the keys the message
    names, all held here for the pair."""

    aborted: bool
    held: bool
    tag: str | None
    keys: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class Served:
    """Keys taken from a master pool, and how many keys the pool still holds."""

    keys: tuple[Key, ...]
    pool_left: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Keys set aside for one request until ``deadline_ms`` (the Redis clock)."""

    hold_id: str
    owner: str
    size_bits: int
    deadline_ms: int
    keys: tuple[Key, ...]
    # Keys the pool still held right after this hold was taken from it; -1 when unknown (a
    # hold read back or replayed, or one not taken from a pool).
    pool_left: int = -1

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)


@dataclass(frozen=True, slots=True)
class GiveBack:
    """The peer side's answer to a release: which keys went back, which are gone."""

    returned: tuple[str, ...]
    gone: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to the stream's peer node that must get there; ``body`` is its JSON."""

    message_id: str
    body: dict[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for the peer to queue with a commit: ``{"kind", "until_ms", "message"}`` in
    the outbox, ``until_ms`` being ``valid_ms`` after the commit on the Redis clock."""

    message_id: str
    kind: str
    payload: dict[str, Any] = field(repr=False)
    valid_ms: int


@dataclass(frozen=True, slots=True)
class SweepResult:
    handled: int  # blocks past their deadline acted on
    released: int  # master blocks that started giving their keys back
    dropped: int  # chunks dropped
    more: bool  # more blocks were due than one call handles
    expired_held: int = 0  # keys held for slave SAEs dropped unfetched


@dataclass(frozen=True, slots=True)
class PoolLevel:
    keys: int  # servable now
    chunks: int  # the chunks they are made of (what the pool share bounds)
