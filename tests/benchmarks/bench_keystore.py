"""Key ingest into the key store.

Starts its own redis-server (``tests.fixtures.redis.RedisServer``: AOF on, fsync always, as the
tests run it). Figure: ingest of 128-bit keys with ``KeyStore.add_chunks`` in batches, a few
batches in flight, beside the same call with one key per call (one Redis round trip per key, the
way QSS stored each key in Vault). The device -> store path with the real QKDM is measured by
``bench_qkdm``.

``python -m tests.benchmarks.bench_keystore [--keys N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from controllers.keystore import Chunk, KeyStore
from tests.benchmarks.report import Result, machine_load, table
from tests.fixtures.redis import RedisServer

KEY_BYTES = 16  # 128-bit keys, as the paper measured
BATCH = 2_000
IN_FLIGHT = 4
# Each figure is the median of this many runs: the machine may be shared.
REPEATS = 3


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="bench-redis-"))
    server = RedisServer(data_dir=directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def make_chunks(n: int) -> list[Chunk]:
    return [Chunk(chunk_id=str(uuid.uuid4()), material=os.urandom(KEY_BYTES)) for _ in range(n)]


async def fresh_stream(store: KeyStore, name: str) -> str:
    await store.drop_stream(stream=name)
    await store.configure_stream(stream=name, capacity=10**9, chunk_bytes=KEY_BYTES)
    return name


# -- ingest ------------------------------------------------------------------------------------


async def ingest_batched(store: KeyStore, chunks: Sequence[Chunk]) -> float:
    stream = await fresh_stream(store, "bench-batched")
    batches = [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]
    queue = iter(batches)

    async def worker() -> None:
        for batch in queue:
            result = await store.add_chunks(stream=stream, chunks=batch)
            assert result.accepted == len(batch)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    assert (await store.counts(stream=stream)).available == len(chunks)
    await store.drop_stream(stream=stream)
    return len(chunks) / elapsed


async def ingest_one_by_one(store: KeyStore, chunks: Sequence[Chunk]) -> float:
    stream = await fresh_stream(store, "bench-naive")
    started = time.perf_counter()
    for chunk in chunks:
        await store.add_chunks(stream=stream, chunks=[chunk])
    elapsed = time.perf_counter() - started
    assert (await store.counts(stream=stream)).available == len(chunks)
    await store.drop_stream(stream=stream)
    return len(chunks) / elapsed


# -- entry points ------------------------------------------------------------------------------


async def _run(keys: int, naive_keys: int) -> list[Result]:
    chunks = make_chunks(keys)
    figures: dict[str, list[float]] = {"ours": [], "naive": []}
    with redis_server() as server:
        async with KeyStore.from_url(server.url) as store:
            # Warm up: connections, script cache.
            await ingest_batched(store, chunks[:BATCH])
            _LOAD[:] = [machine_load()]
            for _ in range(REPEATS):
                figures["ours"].append(await ingest_batched(store, chunks))
                figures["naive"].append(await ingest_one_by_one(store, chunks[:naive_keys]))
            _LOAD.append(machine_load())
    ours, naive = (statistics.median(figures[k]) for k in figures)
    return [
        Result(
            what="key ingest, 128-bit keys",
            unit="keys/s",
            ours=ours,
            baseline=naive,
            baseline_is="the same add_chunks with one key per call (a Redis round trip per key)",
        ),
    ]


DEFAULT_KEYS = 300_000
# The machine's load at the start and the end of measuring, for the notes.
_LOAD: list[str] = []


def run(*, keys: int = DEFAULT_KEYS, naive_keys: int = 10_000) -> list[Result]:
    return asyncio.run(_run(keys, naive_keys))


def notes(*, keys: int = DEFAULT_KEYS) -> list[str]:
    return [
        f"ingest: {keys:,} keys in batches of {BATCH:,}, {IN_FLIGHT} in flight; redis-server"
        f" with AOF, appendfsync always; each figure the median of {REPEATS} runs;"
        f" {os.cpu_count()} CPUs; machine at start / end: {' -> '.join(_LOAD)}.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_keystore", description=__doc__)
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS, help="keys, batched ingest")
    args = parser.parse_args(argv)
    print(table(run(keys=args.keys), notes=notes(keys=args.keys)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
