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

    meta      hash: capacity, chunk_bytes, added, reserved, consumed (chunks); head (below);
              cursor (the next device index the stream's QKDM fetches)
    incoming  list: newly added chunk IDs in arrival order, numbered head, head + 1, ...
              except where ``gaps`` says (the n-th chunk ever added has number n); the ingest
              path appends here because a list append is far cheaper than a sorted set.
              Reservations pop from either end.
    gaps      sorted set: where the list's numbering jumps (chunks were popped from its end and
              more added after them): the number after each jump, scored by the number before
              it; one at the list's end (member added + 1) marks where the list ends
    avail     sorted set: the other available chunk IDs, scored by their arrival number
              (released chunks, and chunks moved out of the list when the peer reserved some
              behind them); they may lie anywhere in the order, so reservations merge the two
              by number
    data      hash: chunk ID -> material (available and reserved chunks)
    rsv       set: reserved chunk IDs
    keys      hash: reserved key ID -> JSON {reservation, owner, size, chunk IDs, numbers}
    res       hash: reservation ID -> JSON {owner, size, key IDs, keys not yet consumed}
    gone      sets per time bucket: IDs of consumed chunks, so a retried add cannot revive them
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
    def incoming(self) -> str:
        return f"{self._base}:incoming"

    @property
    def gaps(self) -> str:
        return f"{self._base}:gaps"

    @property
    def rsv(self) -> str:
        return f"{self._base}:rsv"

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
