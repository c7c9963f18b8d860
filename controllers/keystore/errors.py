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
    """Not enough available chunks (or pooled keys) to take; nothing was taken."""

    def __init__(self, *, stream: str, needed: int, available: int, what: str = "chunks") -> None:
        super().__init__(
            f"key stream {stream!r} has {available} {what} available, {needed} needed;"
            " nothing was taken, retry when the stream has filled"
        )
        self.stream = stream
        self.needed = needed
        self.available = available


class KeyIdMismatchError(KeyStoreError, ValueError):
    def __init__(self, *, stream: str, key_id: str, chunks_per_key: int) -> None:
        super().__init__(
            f"key {key_id!r} for key stream {stream!r} is not made of {chunks_per_key} distinct"
            " chunks whose derived ID it is; pass the keys exactly as the peer reserved them"
        )
        self.stream = stream
        self.key_id = key_id


class BlockConflictError(KeyStoreError):
    def __init__(self, *, stream: str, block_id: str) -> None:
        super().__init__(
            f"block {block_id!r} on key stream {stream!r} already exists with another role,"
            " owner, size or number of keys; use a new block ID"
        )
        self.stream = stream
        self.block_id = block_id


class UnknownBlockError(KeyStoreError):
    def __init__(self, *, stream: str, block_id: str) -> None:
        super().__init__(
            f"block {block_id!r} does not exist on key stream {stream!r} in the state asked for"
            " (never made, given back, or expired)"
        )
        self.stream = stream
        self.block_id = block_id


class BlockRefusedError(KeyStoreError):
    """The peer side of a block cannot hold it; nothing was changed. ``never``: chunks its ingest
    passed without storing them (the master drops its copies); ``not_yet``: beyond its ingest
    cursor (try again later); ``taken``: held here in another block (a conflict)."""

    def __init__(
        self,
        *,
        stream: str,
        never: Sequence[str],
        not_yet: Sequence[str],
        taken: Sequence[str],
    ) -> None:
        parts = [
            f"{len(ids)} {what}"
            for ids, what in (
                (never, "never stored here"),
                (not_yet, "not stored yet"),
                (taken, "held for another block"),
            )
            if ids
        ]
        super().__init__(f"key stream {stream!r}: of the block's chunks, {', '.join(parts)}")
        self.stream = stream
        self.never = tuple(never)
        self.not_yet = tuple(not_yet)
        self.taken = tuple(taken)


class HeldBoundError(KeyStoreError):
    """Holding the block would put more chunks aside for slave SAEs than the bound allows."""

    def __init__(self, *, stream: str, mirrored: int, held_max: int) -> None:
        super().__init__(
            f"key stream {stream!r} holds {mirrored} chunks for slave SAEs that have not fetched"
            f" them (bound {held_max}); they expire unless fetched"
        )
        self.stream = stream
        self.mirrored = mirrored
        self.held_max = held_max


class UnknownKeysError(KeyStoreError):
    """Some requested keys are not held for this owner; nothing was read or deleted."""

    def __init__(self, *, stream: str, owner: str, missing: int, examples: Sequence[str]) -> None:
        super().__init__(
            f"{missing} keys on key stream {stream!r} are not held for {owner!r}"
            f" (unknown, given back, expired or already delivered; e.g. {', '.join(examples)});"
            " nothing was taken"
        )
        self.stream = stream
        self.owner = owner
        self.missing = missing
        self.examples = tuple(examples)


class KeyStoreCorruptError(KeyStoreError):
    def __init__(self, *, stream: str, key_id: str) -> None:
        super().__init__(
            f"key {key_id!r} on key stream {stream!r} is held but its chunks are missing;"
            " the store was changed outside this package"
        )
        self.stream = stream
        self.key_id = key_id
