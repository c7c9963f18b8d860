"""How a key gets its ID, the same on both nodes of a link.

A key of one chunk has the chunk's ID (the QKDMs agreed it). A key composed of several chunks
has ``uuid5(COMPOSED_KEY_NAMESPACE, "id1,id2,...")``: deterministic, so the peer node derives
the same ID from the same chunks, and different for every composition, so a released and
re-composed chunk never revives an old key ID. The Lua scripts compute the same function
(``common.lua``); the tests check that both agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

COMPOSED_KEY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://qss.dev/keystore/composed-key")


def composed_key_id(chunk_ids: Sequence[str]) -> str:
    """The ID of the key made of ``chunk_ids`` in this order."""
    if not chunk_ids:
        raise ValueError("a key needs at least one chunk")
    if len(chunk_ids) == 1:
        return chunk_ids[0]
    return str(uuid.uuid5(COMPOSED_KEY_NAMESPACE, ",".join(chunk_ids)))
