"""The node's key store: key material of every key stream, held in the node's Redis.

The QKDM adds the chunks it reads from its QKD device (``KeyStore.add_run``); key delivery
(``controllers.delivery``) agrees pool blocks with the peer node, serves, holds, claims and gives
keys back; the KeyStream reconciler reads ``counts``. Every operation that changes more than one
Redis key runs as one Lua script, so it is atomic. Key material never leaves this package
except as the ``Key`` values serving and claiming return. ``store.py`` explains the model.
"""

from controllers.keystore.errors import (
    BlockConflictError,
    BlockRefusedError,
    ChunkSizeChangeError,
    HeldBoundError,
    InsufficientKeysError,
    InvalidChunkError,
    KeyIdMismatchError,
    KeyStoreCorruptError,
    KeyStoreError,
    UnknownBlockError,
    UnknownKeysError,
    UnknownStreamError,
)
from controllers.keystore.keyids import COMPOSED_KEY_NAMESPACE, composed_key_id
from controllers.keystore.model import (
    AddResult,
    Block,
    BlockChunk,
    BlockKey,
    Chunk,
    GiveBack,
    Hold,
    Key,
    Notice,
    OutboxMessage,
    PoolLevel,
    RelayView,
    Served,
    StreamCounts,
    SweepResult,
)
from controllers.keystore.store import (
    MAX_BATCH,
    MAX_BLOCK_CHUNKS,
    MAX_BLOCK_KEYS,
    Batch,
    KeyStore,
    Outcome,
)

__all__ = [
    "COMPOSED_KEY_NAMESPACE",
    "MAX_BATCH",
    "MAX_BLOCK_CHUNKS",
    "MAX_BLOCK_KEYS",
    "AddResult",
    "Batch",
    "Block",
    "BlockChunk",
    "BlockConflictError",
    "BlockKey",
    "BlockRefusedError",
    "Chunk",
    "ChunkSizeChangeError",
    "GiveBack",
    "HeldBoundError",
    "Hold",
    "InsufficientKeysError",
    "InvalidChunkError",
    "Key",
    "KeyIdMismatchError",
    "KeyStore",
    "KeyStoreCorruptError",
    "KeyStoreError",
    "Notice",
    "OutboxMessage",
    "Outcome",
    "PoolLevel",
    "RelayView",
    "Served",
    "StreamCounts",
    "SweepResult",
    "UnknownBlockError",
    "UnknownKeysError",
    "UnknownStreamError",
    "composed_key_id",
]
