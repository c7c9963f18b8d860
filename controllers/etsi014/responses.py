"""The JSON documents the ETSI GS QKD 014 API answers with, under the standard's field names.

Pure builders called by the 014 handlers (``controllers.etsi014.app``): the Status document and
the Key container (the Error document is ``qss_api.http_errors``'s, shared by every server).
Optional members the standard marks as extensions (``status_extension``, ``key_ID_extension``,
``key_extension``, ``key_container_extension``) are left out, since this KME implements none.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypedDict

from controllers.delivery.api import (
    MAX_KEY_SIZE,
    MAX_KEYS_PER_REQUEST,
    MIN_KEY_SIZE,
    DeliveredKey,
    PairStatus,
)


# Status member names are the standard's, mixed case included (source_KME_ID, master_SAE_ID).
class StatusDocument(TypedDict):
    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int


class KeyDocument(TypedDict):
    key_ID: str
    key: str


class KeyContainer(TypedDict):
    keys: list[KeyDocument]


def status_document(status: PairStatus, *, master_sae_id: str, slave_sae_id: str) -> StatusDocument:
    """The Status of the key supply from ``master_sae_id`` (the caller) to ``slave_sae_id``."""
    return {
        "source_KME_ID": status.source_node,
        "target_KME_ID": status.target_node,
        "master_SAE_ID": master_sae_id,
        "slave_SAE_ID": slave_sae_id,
        "key_size": status.key_size,
        "stored_key_count": status.stored_key_count,
        "max_key_count": status.max_key_count,
        "max_key_per_request": MAX_KEYS_PER_REQUEST,
        "max_key_size": MAX_KEY_SIZE,
        "min_key_size": MIN_KEY_SIZE,
        # No additional slave SAEs (multicast keys) are supported.
        "max_SAE_ID_count": 0,
    }


def key_container(keys: Sequence[DeliveredKey]) -> KeyContainer:
    """The Key container: each key's ID and its material in standard base64 with padding."""
    return {
        "keys": [
            {"key_ID": key.key_id, "key": base64.b64encode(key.material).decode("ascii")}
            for key in keys
        ]
    }
