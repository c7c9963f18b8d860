"""Where a stream lives in Redis: the names of its keys, all under one hash tag.

Every key of a stream carries ``{stream}`` as a hash tag, so a stream's keys share one slot.
Every script gets the same list of keys (``StreamKeys.all``, in ``NAMES`` order); the prelude
names them (``local meta, avail, ... = unpack(KEYS)``), so the order is written in one place.
Used by ``controllers.keystore.store`` and ``scripts`` only.

The buffer (bounded by the stream's capacity, what the QKDM fills):

    meta      hash: capacity, chunk_bytes; counters in chunks: added, consumed (delivered),
              dropped (destroyed undelivered), pooled, mirrored, holding (out of the buffer,
              by block role); head (below); cursor (the next device index the QKDM fetches),
              cursor_ksid and epoch (the device key stream it counts in, and its place in the
              KeyStream's sequence of KSIDs: see common.lua); segoff ("offset:epoch" of the
              newest chunk, offset = index - number)
    incoming  list: newly added chunk IDs in arrival order, numbered head, head + 1, ...
              except where ``gaps`` says (the n-th chunk ever added has number n); the ingest
              path appends here because a list append is far cheaper than a sorted set
    gaps      sorted set: where the list's numbering jumps (chunks were popped from its end and
              more added after them): the number after each jump, scored by the number before
              it; one at the list's end (member added + 1) marks where the list ends
    avail     sorted set: the other available chunk IDs, scored by their arrival number
    data      hash: chunk ID -> material (every chunk held, in the buffer or out of it)
    segs      sorted set: "number:offset:epoch" scored by number, one per run of chunks whose
              device index is number + offset in that epoch ("number:x": added without an
              index)
    drops     sorted set: "epoch:start:end" scored by start: device index ranges of that epoch
              the peer dropped, never to be stored here (end '': to the end of that epoch);
              "epoch:start:end:k" for ranges of chunks held here already (an earlier epoch,
              or below the cursor): those are dropped if a refused block returns them;
              forgotten once no pending block and no buffered chunk can hold one

Out of the buffer, in blocks (see ``common.lua``):

    out       hash: chunk ID -> "block ID|arrival number"
    kc        hash: key ID -> "chunk ID,chunk ID,..." for keys of more than one chunk
    blk       hash: block ID -> JSON record (role, owner, size, state, deadline, lease, ...)
    bs:<id>   set: the block's keys (key IDs) still in it
    pool:<owner>|<size>  list: a master pool's active block IDs, oldest first
    pools     set: the names of the pool lists (so a dropped stream leaves none behind)
    exp       sorted set: block ID scored by its deadline (ms of the Redis clock)

Messages to the peer node, retried until acknowledged:

    ob        hash: message ID -> JSON message
    obq       sorted set: message ID scored by when it is next due
    done      sorted set: hand-over message IDs acknowledged, scored by when (kept a day)
"""

from __future__ import annotations

import re
from functools import lru_cache

PREFIX = "qss:ks"
# The set of stream names in this Redis (so a node finds its holds after a restart without
# waiting for its KeyStream watch).
STREAMS = f"{PREFIX}:streams"

NAMES = (
    "meta",
    "avail",
    "incoming",
    "gaps",
    "data",
    "segs",
    "drops",
    "out",
    "kc",
    "blk",
    "exp",
    "ob",
    "obq",
    "done",
    "pools",
)

_STREAM_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")


def check_stream_name(stream: str) -> None:
    if not _STREAM_NAME.match(stream):
        raise ValueError(
            f"key stream name {stream!r} must be 1-253 characters of letters, digits, '.', '_',"
            " ':' or '-'"
        )


@lru_cache(maxsize=1024)
def stream_keys(stream: str) -> list[str]:
    """Every key of ``stream`` in ``NAMES`` order: the KEYS of each script call."""
    check_stream_name(stream)
    base = f"{PREFIX}:{{{stream}}}"
    return [f"{base}:{name}" for name in NAMES]


def lua_key_names() -> str:
    """The prelude line that names the keys every script gets."""
    return f"local {', '.join(NAMES)} = unpack(KEYS)\n"
