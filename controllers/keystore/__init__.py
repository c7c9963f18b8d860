"""The node's key store: key material of every key stream, held in the node's Redis.

The QKDM adds the chunks it reads from its QKD device (``KeyStore.add_chunks``); the key request
and relay handlers reserve, fetch and consume keys (``reserve``, ``reserve_ids``, ``fetch``,
``consume``, ``release``); the KeyStream reconciler reads ``counts``. Every operation that
changes more than one Redis key runs as one Lua script, so it is atomic. Key material never
leaves this package except as the return value of ``fetch`` and ``consume``.
"""

from controllers.keystore.errors import (
    ChunkSizeChangeError,
    InsufficientKeysError,
    InvalidChunkError,
    KeyIdMismatchError,
    KeyStoreCorruptError,
    KeyStoreError,
    KeysUnavailableError,
    ReservationConflictError,
    UnknownKeysError,
    UnknownReservationError,
    UnknownStreamError,
)
from controllers.keystore.keyids import COMPOSED_KEY_NAMESPACE, composed_key_id
from controllers.keystore.model import (
    AddResult,
    Chunk,
    Key,
    Reservation,
    ReservedKey,
    StreamCounts,
)
from controllers.keystore.store import KeyStore

__all__ = [
    "COMPOSED_KEY_NAMESPACE",
    "AddResult",
    "Chunk",
    "ChunkSizeChangeError",
    "InsufficientKeysError",
    "InvalidChunkError",
    "Key",
    "KeyIdMismatchError",
    "KeyStore",
    "KeyStoreCorruptError",
    "KeyStoreError",
    "KeysUnavailableError",
    "Reservation",
    "ReservationConflictError",
    "ReservedKey",
    "StreamCounts",
    "UnknownKeysError",
    "UnknownReservationError",
    "UnknownStreamError",
    "composed_key_id",
]
