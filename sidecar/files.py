"""The file formats the sidecar writes into the key volume: ``index.json`` for the app, and
``.state.json``, what the sidecar needs to resume after a restart.

Both are ``WireModel``s: the sidecar reads them back with ``qss_api.wire.decode`` when it
restarts, and the tests read the app's view with the same models. Key material is in the key
files only, never in these.

``index.json`` (what ``docs/`` documents for application teams)::

    {"generation": 7, "current": "<newest key ID>",
     "keys": [{"key_ID": "...", "size": 256, "master_SAE_ID": "alice",
               "slave_SAE_ID": "bob", "issued_at": "2026-01-02T03:04:05.678Z"}, ...]}

Keys are listed oldest first; ``current`` is the last one (null when there is none).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from qss_api.wire import SaeId, Uuid, WireModel

INDEX_FILE: Final = "index.json"
STATE_FILE: Final = ".state.json"
CURRENT_LINK: Final = "current"


class IndexEntry(WireModel):
    key_ID: Uuid
    size: Annotated[int, Field(ge=8, multiple_of=8)]  # bits
    master_SAE_ID: SaeId
    slave_SAE_ID: SaeId
    issued_at: str  # RFC 3339, UTC, when the sidecar received the key


class Index(WireModel):
    generation: Annotated[int, Field(ge=0)]
    current: Uuid | None
    keys: list[IndexEntry]


class State(WireModel):
    """What a restarted sidecar must know that the index does not say."""

    version: Literal[1] = 1
    # UIDs of the KeyRequests whose keys went into this volume (newest last, bounded): a
    # request still listed after a restart had its keys written already and is only deleted.
    delivered: list[Uuid] = Field(default_factory=list)
