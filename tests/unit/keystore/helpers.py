"""Helpers shared by the key-store tests: the stream name, chunk factory, invariant check, and
short forms of the block operations with the test's usual leases."""

from __future__ import annotations

import os
import uuid

from controllers.keystore import Block, Chunk, KeyStore

STREAM = "ks-a-b"
OWNER = "sae-a/sae-b"
LEASE_MS = 60_000  # long enough that no deadline passes during a test unless it wants one


def make_chunks(n: int, *, size: int = 16) -> list[Chunk]:
    return [Chunk(chunk_id=str(uuid.uuid4()), material=os.urandom(size)) for _ in range(n)]


def indexed_chunks(ksid: uuid.UUID, first: int, n: int, *, size: int = 16) -> list[Chunk]:
    """Chunks ``first`` .. ``first + n - 1`` of a stream, with the IDs both QKDMs derive."""
    return [
        Chunk(chunk_id=str(uuid.uuid5(ksid, str(i))), material=os.urandom(size))
        for i in range(first, first + n)
    ]


async def assert_counts_add_up(store: KeyStore, *, stream: str = STREAM) -> None:
    c = await store.counts(stream=stream)
    assert c.available + c.pooled + c.mirrored + c.holding + c.consumed + c.dropped == c.added, c


async def reserve(
    store: KeyStore,
    block_id: str,
    *,
    count: int,
    size_bits: int = 128,
    newest: bool = False,
    owner: str = OWNER,
    stream: str = STREAM,
) -> Block:
    return await store.reserve_block(
        stream=stream,
        block_id=block_id,
        owner=owner,
        size_bits=size_bits,
        count=count,
        from_newest=newest,
        lease_ms=LEASE_MS,
        pending_ms=LEASE_MS,
    )


async def accept(
    store: KeyStore, block: Block, *, held_max: int = 10**9, lease_ms: int = LEASE_MS
) -> bool:
    return await store.accept_block(
        stream=STREAM,
        block_id=block.block_id,
        owner=block.owner,
        size_bits=block.size_bits,
        keys=block.keys,
        lease_ms=lease_ms,
        held_max=held_max,
    )


async def agree(
    master: KeyStore,
    peer: KeyStore,
    block_id: str,
    *,
    count: int,
    size_bits: int = 128,
    newest: bool = False,
    owner: str = OWNER,
    serve_ms: int = LEASE_MS // 2,
) -> Block:
    """A block reserved on ``master``, held alike on ``peer``, and servable on ``master``."""
    block = await reserve(
        master, block_id, count=count, size_bits=size_bits, newest=newest, owner=owner
    )
    await accept(peer, block)
    assert await master.activate_block(stream=STREAM, block_id=block_id, serve_ms=serve_ms)
    return block


def chunk_ids_of(block: Block) -> list[str]:
    return [c for k in block.keys for c in k.chunk_ids]
