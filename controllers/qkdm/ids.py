"""Identifiers both ends of a key stream derive alike, without talking to each other.

The two QKDMs of a stream agree on its KSID (``default_ksid``, unless the KeyStream names one)
and on the ID of every chunk: chunk ``i`` of a stream is the same key material at both ends
(ETSI GS QKD 004 GET_KEY by index), so its ID is a name-based UUID of (KSID, i). Called by the
pump for every chunk it stores.
"""

from __future__ import annotations

import uuid

# Namespace of kube-qss's KSIDs: uuid5(NAMESPACE_URL, "https://qss.dev/ksid").
KSID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://qss.dev/ksid")


def default_ksid(*, node_a: str, node_b: str, stream: str) -> str:
    """The KSID of a KeyStream named ``stream`` on the link between two nodes (order-free)."""
    first, second = sorted((node_a, node_b))
    return str(uuid.uuid5(KSID_NAMESPACE, f"{first}/{second}/{stream}"))


def chunk_id(ksid: str, index: int) -> str:
    """The ID of chunk ``index`` of key stream ``ksid``, the same on both nodes."""
    if index < 0:
        raise ValueError(f"chunk index must not be negative, got {index}")
    return str(uuid.uuid5(uuid.UUID(ksid), str(index)))
