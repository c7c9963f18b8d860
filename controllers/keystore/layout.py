"""Where a stream lives in Redis: the names of its keys, all under one hash tag.

Every key of a stream carries ``{stream}`` as a hash tag, so a stream's keys share one slot
and its scripts stay valid on Redis Cluster. Used by ``controllers.keystore.store`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "qss:ks"

_STREAM_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")


def check_stream_name(stream: str) -> None:
    if not _STREAM_NAME.match(stream):
        raise ValueError(
            f"key stream name {stream!r} must be 1-253 characters of letters, digits, '.', '_',"
            " ':' or '-'"
        )


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis keys of one stream.

    meta   hash: capacity, chunk_bytes, added, reserved, consumed (chunks)
    avail  sorted set: available chunk IDs, scored by arrival order
    data   hash: chunk ID -> material (available and reserved chunks)
    keys   hash: reserved key ID -> JSON {reservation, owner, size, chunk IDs, scores}
    res    hash: reservation ID -> JSON {owner, size, key IDs, keys not yet consumed}
    gone   sets per time bucket: IDs of consumed chunks, so a retried add cannot revive them
    """

    stream: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{{self.stream}}}"

    @property
    def meta(self) -> str:
        return f"{self._base}:meta"

    @property
    def avail(self) -> str:
        return f"{self._base}:avail"

    @property
    def data(self) -> str:
        return f"{self._base}:data"

    @property
    def keys(self) -> str:
        return f"{self._base}:keys"

    @property
    def res(self) -> str:
        return f"{self._base}:res"

    def gone(self, bucket: int) -> str:
        return f"{self._base}:gone:{bucket}"
