"""Helpers shared by the key-store tests: the stream name, chunk factory and invariant check."""

from __future__ import annotations

import os
import uuid

from controllers.keystore import Chunk, KeyStore

STREAM = "ks-a-b"


def make_chunks(n: int, *, size: int = 16) -> list[Chunk]:
    return [Chunk(chunk_id=str(uuid.uuid4()), material=os.urandom(size)) for _ in range(n)]


async def assert_counts_add_up(store: KeyStore, *, stream: str = STREAM) -> None:
    c = await store.counts(stream=stream)
    assert c.available + c.reserved + c.consumed == c.added, c
