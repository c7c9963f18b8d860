"""The key store's exceptions: one class per way an operation can fail.

Raised by ``controllers.keystore.store``; callers (key request, relay, QKDM) catch them to set a
condition or to retry. Messages name streams, reservations and key IDs, never key material.
"""

from __future__ import annotations

from collections.abc import Sequence


class KeyStoreError(Exception):
    """Base class of every key-store failure."""


class UnknownStreamError(KeyStoreError):
    def __init__(self, *, stream: str) -> None:
        super().__init__(
            f"key stream {stream!r} does not exist in the key store; configure it first"
        )
        self.stream = stream


class ChunkSizeChangeError(KeyStoreError):
    def __init__(self, *, stream: str, current: int, requested: int) -> None:
        super().__init__(
            f"key stream {stream!r} holds chunks of {current} bytes and cannot switch to"
            f" {requested}; drop the stream or use a new one"
        )
        self.stream = stream


class InvalidChunkError(KeyStoreError, ValueError):
    def __init__(self, *, stream: str, index: int, reason: str) -> None:
        super().__init__(f"chunk {index} of the batch for key stream {stream!r}: {reason}")
        self.stream = stream
        self.index = index


class InsufficientKeysError(KeyStoreError):
    """Not enough available chunks to reserve; nothing was reserved."""

    def __init__(self, *, stream: str, needed: int, available: int) -> None:
        super().__init__(
            f"key stream {stream!r} has {available} chunks available, {needed} needed;"
            " nothing was reserved, retry when the stream has filled"
        )
        self.stream = stream
        self.needed = needed
        self.available = available


class KeysUnavailableError(InsufficientKeysError):
    """The peer side of a reservation named chunks this store does not hold as available."""

    def __init__(self, *, stream: str, missing: int, examples: Sequence[str]) -> None:
        KeyStoreError.__init__(
            self,
            f"key stream {stream!r}: {missing} of the requested chunks are not available"
            f" (e.g. {', '.join(examples)}); nothing was reserved",
        )
        self.stream = stream
        self.needed = missing
        self.available = 0
        self.missing = missing
        self.examples = tuple(examples)


class KeyIdMismatchError(KeyStoreError, ValueError):
    def __init__(self, *, stream: str, key_id: str, chunks_per_key: int) -> None:
        super().__init__(
            f"key {key_id!r} for key stream {stream!r} is not made of {chunks_per_key} distinct"
            " chunks whose derived ID it is; pass the keys exactly as the peer reserved them"
        )
        self.stream = stream
        self.key_id = key_id


class ReservationConflictError(KeyStoreError):
    def __init__(self, *, stream: str, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id!r} on key stream {stream!r} already exists with a"
            " different owner, size or keys; use a new reservation ID"
        )
        self.stream = stream
        self.reservation_id = reservation_id


class UnknownReservationError(KeyStoreError):
    def __init__(self, *, stream: str, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id!r} does not exist on key stream {stream!r}"
            " (never made, released, or fully consumed)"
        )
        self.stream = stream
        self.reservation_id = reservation_id


class UnknownKeysError(KeyStoreError):
    """Some requested keys are not reserved for this owner; nothing was read or deleted."""

    def __init__(self, *, stream: str, owner: str, missing: int, examples: Sequence[str]) -> None:
        super().__init__(
            f"{missing} keys on key stream {stream!r} are not reserved for {owner!r}"
            f" (unknown, released or already consumed; e.g. {', '.join(examples)});"
            " nothing was taken"
        )
        self.stream = stream
        self.owner = owner
        self.missing = missing
        self.examples = tuple(examples)


class KeyStoreCorruptError(KeyStoreError):
    def __init__(self, *, stream: str, key_id: str) -> None:
        super().__init__(
            f"key {key_id!r} on key stream {stream!r} is reserved but its chunks are missing;"
            " the store was changed outside this package"
        )
        self.stream = stream
        self.key_id = key_id
