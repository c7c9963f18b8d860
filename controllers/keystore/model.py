"""The values the key store takes and returns. Key material is kept out of every ``repr``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of key material as the QKDM adds it; its ID is agreed with the peer QKDM."""

    chunk_id: str
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What became of a batch: the first ``accepted + duplicates`` chunks are in the store
    (or were already), the last ``refused`` are not because the stream is at capacity."""

    accepted: int
    duplicates: int
    refused: int

    @property
    def stored(self) -> int:
        """How many leading chunks of the batch the caller need not send again."""
        return self.accepted + self.duplicates


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """A consistent snapshot of one stream, in chunks: available + reserved + consumed = added."""

    capacity: int
    chunk_bytes: int
    added: int
    available: int
    reserved: int
    consumed: int

    @property
    def held(self) -> int:
        """Chunks occupying the buffer (available or reserved); capacity bounds this."""
        return self.available + self.reserved

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.held)


@dataclass(frozen=True, slots=True)
class ReservedKey:
    """A reserved key: its ID and the chunk IDs it is composed of, in order."""

    key_id: str
    chunk_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Keys set aside for one owner under one reservation ID (the same on both nodes)."""

    reservation_id: str
    owner: str
    size_bits: int
    keys: tuple[ReservedKey, ...]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)


@dataclass(frozen=True, slots=True)
class Key:
    """A key as fetched or consumed: ``size_bits // 8`` bytes of material."""

    key_id: str
    size_bits: int
    material: bytes = field(repr=False)
