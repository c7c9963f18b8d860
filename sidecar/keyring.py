"""The keys a sidecar holds, as a pure value: what the next snapshot of the key volume contains.

``sidecar.agent`` adds each delivered batch with ``Ring.add`` and publishes ``Ring.files()`` and
``Ring.links()`` with ``sidecar.volume.KeyVolume``; after a restart it rebuilds the ring from the
current snapshot with ``Ring.from_files``. The ring is bounded (the oldest keys go first) and
remembers which KeyRequests it took keys from, so a request seen again after a restart is
recognised and never delivered twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from qss_api.wire import BadMessage, decode, encode
from sidecar.files import CURRENT_LINK, INDEX_FILE, STATE_FILE, Index, IndexEntry, State

log = logging.getLogger(__name__)

# How many delivered KeyRequests the ring remembers: a request is deleted right after its keys
# are written, so only the last few can still be listed after a restart.
DELIVERED_MEMORY: Final = 64


class RingError(ValueError):
    """A snapshot the ring cannot be rebuilt from; the message says what is wrong."""


@dataclass(frozen=True)
class HeldKey:
    key_id: str
    material: bytes = field(repr=False)
    master_sae_id: str
    slave_sae_id: str
    issued_at: str

    @property
    def size_bits(self) -> int:
        return len(self.material) * 8


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Ring:
    keys: tuple[HeldKey, ...] = ()  # oldest first
    delivered: tuple[str, ...] = ()  # KeyRequest UIDs, newest last
    generation: int = 0

    def add(self, batch: Sequence[HeldKey], *, request_uid: str, max_keys: int) -> Ring:
        """The ring with ``batch`` (one KeyRequest's keys) added and the oldest beyond
        ``max_keys`` dropped."""
        held = {k.key_id for k in self.keys}
        fresh = [k for k in batch if k.key_id not in held]
        if len(fresh) != len(batch):
            # The node delivers each key once; a repeat would be a bug there. Never twice here.
            log.warning(
                "KeyRequest %s repeated %d held keys; ignored them",
                request_uid,
                len(batch) - len(fresh),
            )
        keys = (*self.keys, *fresh)[-max_keys:]
        delivered = (*self.delivered, request_uid)[-DELIVERED_MEMORY:]
        return replace(self, keys=keys, delivered=delivered, generation=self.generation + 1)

    @property
    def current(self) -> HeldKey | None:
        return self.keys[-1] if self.keys else None

    def index(self) -> Index:
        return Index(
            generation=self.generation,
            current=self.current.key_id if self.current else None,
            keys=[
                IndexEntry(
                    key_ID=k.key_id,
                    size=k.size_bits,
                    master_SAE_ID=k.master_sae_id,
                    slave_SAE_ID=k.slave_sae_id,
                    issued_at=k.issued_at,
                )
                for k in self.keys
            ],
        )

    def files(self) -> dict[str, bytes]:
        """The snapshot's files: one per key (raw bytes), the index and the state."""
        files = {k.key_id: k.material for k in self.keys}
        files[INDEX_FILE] = encode(self.index())
        files[STATE_FILE] = encode(State(delivered=list(self.delivered)))
        return files

    def links(self) -> dict[str, str]:
        return {CURRENT_LINK: self.current.key_id} if self.current else {}

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Ring:
        """The ring a snapshot was written from; ``RingError`` if it is not one of ours."""
        try:
            index = decode(Index, files[INDEX_FILE])
            state = decode(State, files[STATE_FILE])
        except KeyError as exc:
            raise RingError(f"the snapshot has no {exc.args[0]}") from None
        except BadMessage as exc:
            raise RingError(exc.message) from None
        keys = []
        for entry in index.keys:
            material = files.get(entry.key_ID)
            if material is None or len(material) * 8 != entry.size:
                raise RingError(f"key file {entry.key_ID} is missing or not {entry.size} bits")
            keys.append(
                HeldKey(
                    key_id=entry.key_ID,
                    material=material,
                    master_sae_id=entry.master_SAE_ID,
                    slave_sae_id=entry.slave_SAE_ID,
                    issued_at=entry.issued_at,
                )
            )
        return cls(keys=tuple(keys), delivered=tuple(state.delivered), generation=index.generation)
