"""The status codes the key store's Lua scripts return as the first element of every reply.

This enum is the one definition: ``scripts.py`` writes it into the Lua prelude every script
starts with (``local OK = 0`` ...), so Python and Lua cannot drift apart, and the tests check
that every ``E_*`` name a script uses is defined here. Used by ``store.py`` and ``scripts.py``.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    OK = 0
    E_UNKNOWN_STREAM = -1
    E_CONFLICT = -2  # a block ID reused with another owner, size or keys
    E_INSUFFICIENT = -3  # not enough available chunks, or keys in a pool
    E_ID_MISMATCH = -4  # a key ID that is not the ID its chunks compose
    E_UNKNOWN_BLOCK = -5
    E_UNKNOWN_KEYS = -6  # keys not held for that owner (never, or delivered already)
    E_CORRUPT = -7  # counted chunks that are not there: the store was changed from outside
    E_CHUNK_SIZE_CHANGE = -8
    E_BAD_CHUNK = -9  # a chunk of the wrong size in a batch
    E_RETRY = -10  # the script moved part of a long search; call again (never seen by callers)
    E_REFUSED = -11  # the peer side of a block: some chunks are not, or never will be, here
    E_HELD_BOUND = -12  # the keys waiting for slave SAEs would exceed their bound


def lua_prelude() -> str:
    """The Lua lines that define every status code as a local of the script."""
    return "".join(f"local {status.name} = {status.value}\n" for status in Status)
