"""Key ingest into the key store, and device -> store end to end.

Starts its own redis-server (``tests.fixtures.redis.RedisServer``: AOF on, fsync always, as the
tests run it) and, for the end-to-end figure, its own simulated device pair process. Figures:

- ingest of 128-bit keys with ``KeyStore.add_chunks`` in batches, a few batches in flight,
  beside the same call with one key per call (one Redis round trip per key, the way QSS stored
  each key in Vault);
- key material moved from the device into the store, in bits/s: large device chunks read with
  pipelined GET_KEYs and split into 128-bit store chunks, beside one GET_KEY of 128 bits and
  one store round trip per key.

``python -m tests.benchmarks.bench_keystore [--keys N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from controllers.keystore import Chunk, KeyStore
from device_plugin.simdevice.client import DeviceClient
from tests.benchmarks.report import Result, table
from tests.fixtures.redis import RedisServer

KEY_BYTES = 16  # 128-bit keys, as the paper measured
BATCH = 2_000
IN_FLIGHT = 4
DEVICE_CHUNK_BYTES = 4096
DEVICE_PIPELINE = 8
E2E_SECONDS = 2.0
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


@contextmanager
def device_pair(*, rate_bps: int) -> Iterator[tuple[Path, Path]]:
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="bench-qkd-"))
    secret = directory / "secret"
    secret.write_bytes(os.urandom(32))
    a, b = directory / "a.sock", directory / "b.sock"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "device_plugin.simdevice", "pair",
            "--socket-a", str(a), "--socket-b", str(b), "--rate-bps", str(rate_bps),
            "--secret-file", str(secret), "--buffer-bits", str(10**15), "--log-level", "WARNING",
        ],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not (a.exists() and b.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulated device did not start")
            time.sleep(0.02)
        yield a, b
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
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
    await store.drop_stream(stream=stream)
    return len(chunks) / elapsed


# -- device -> store ---------------------------------------------------------------------------


async def open_stream(
    a: Path, b: Path, *, chunk_bytes: int
) -> tuple[DeviceClient, DeviceClient, str]:
    end_a, end_b = await DeviceClient.connect(a), await DeviceClient.connect(b)
    qos = {"key_chunk_size": chunk_bytes, "timeout": 1000}
    first = await end_a.open_connect(qos=qos)
    ksid: str = first["key_stream_ID"]
    second = await end_b.open_connect(key_stream_id=ksid, qos=qos)
    assert second["status"] == 0, second
    return end_a, end_b, ksid


def id_prefix(ksid: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, ksid))[:24]


def chunk_ids(prefix: str, first: int, count: int) -> list[str]:
    # Deterministic IDs both ends can derive from (KSID, position); UUID-shaped for the store.
    return [f"{prefix}{n:012x}" for n in range(first, first + count)]


async def device_to_store(store: KeyStore, a: Path, b: Path, *, naive: bool) -> float:
    chunk_bytes = KEY_BYTES if naive else DEVICE_CHUNK_BYTES
    end_a, end_b, ksid = await open_stream(a, b, chunk_bytes=chunk_bytes)
    stream = await fresh_stream(store, "bench-e2e-naive" if naive else "bench-e2e")
    per_device_chunk = chunk_bytes // KEY_BYTES
    prefix = id_prefix(ksid)
    stored = 0
    index = 0
    try:
        deadline = time.perf_counter() + E2E_SECONDS
        started = time.perf_counter()
        if naive:
            while time.perf_counter() < deadline:
                answer = await end_a.get_key(key_stream_id=ksid, index=index)
                [chunk_id] = chunk_ids(prefix, index, 1)
                chunk = Chunk(chunk_id=chunk_id, material=base64.b64decode(answer["key_buffer"]))
                await store.add_chunks(stream=stream, chunks=[chunk])
                index += 1
                stored += 1
        else:
            queue: asyncio.Queue[list[Chunk] | None] = asyncio.Queue(maxsize=IN_FLIGHT)

            async def read() -> None:
                nonlocal index
                while time.perf_counter() < deadline:
                    answers = await end_a.pipeline(
                        [
                            {"op": "GET_KEY", "key_stream_ID": ksid, "index": index + i}
                            for i in range(DEVICE_PIPELINE)
                        ]
                    )
                    batch: list[Chunk] = []
                    for answer in answers:
                        assert answer["status"] == 0, answer
                        material = base64.b64decode(answer["key_buffer"])
                        ids = chunk_ids(
                            prefix, answer["index"] * per_device_chunk, per_device_chunk
                        )
                        batch.extend(
                            Chunk(
                                chunk_id=cid, material=material[j * KEY_BYTES : (j + 1) * KEY_BYTES]
                            )
                            for j, cid in enumerate(ids)
                        )
                    index += DEVICE_PIPELINE
                    await queue.put(batch)
                for _ in range(IN_FLIGHT):
                    await queue.put(None)

            async def write() -> None:
                nonlocal stored
                while (batch := await queue.get()) is not None:
                    result = await store.add_chunks(stream=stream, chunks=batch)
                    stored += result.accepted

            await asyncio.gather(read(), *(write() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
    finally:
        await end_a.close_stream(key_stream_id=ksid)
        await end_b.close_stream(key_stream_id=ksid)
        await end_a.aclose()
        await end_b.aclose()
    await store.drop_stream(stream=stream)
    return stored * KEY_BYTES * 8 / elapsed


# -- entry points ------------------------------------------------------------------------------


async def _run(keys: int, naive_keys: int) -> list[Result]:
    chunks = make_chunks(keys)
    figures: dict[str, list[float]] = {"ours": [], "naive": [], "e2e": [], "e2e_naive": []}
    with redis_server() as server, device_pair(rate_bps=2_000_000_000) as (a, b):
        async with KeyStore.from_url(server.url) as store:
            # Warm up: connections, script cache.
            await ingest_batched(store, chunks[:BATCH])
            for _ in range(REPEATS):
                figures["ours"].append(await ingest_batched(store, chunks))
                figures["naive"].append(await ingest_one_by_one(store, chunks[:naive_keys]))
                figures["e2e"].append(await device_to_store(store, a, b, naive=False))
                figures["e2e_naive"].append(await device_to_store(store, a, b, naive=True))
    ours, naive, e2e, e2e_naive = (statistics.median(figures[k]) for k in figures)
    return [
        Result(
            what="key ingest, 128-bit keys",
            unit="keys/s",
            ours=ours,
            baseline=naive,
            baseline_is="the same add_chunks with one key per call (a Redis round trip per key)",
        ),
        Result(
            what="device -> store, end to end",
            unit="bits/s",
            ours=e2e,
            baseline=e2e_naive,
            baseline_is="one 128-bit GET_KEY and one store round trip per key",
        ),
    ]


DEFAULT_KEYS = 300_000


def run(*, keys: int = DEFAULT_KEYS, naive_keys: int = 10_000) -> list[Result]:
    return asyncio.run(_run(keys, naive_keys))


def notes(*, keys: int = DEFAULT_KEYS) -> list[str]:
    return [
        f"ingest: {keys:,} keys in batches of {BATCH:,}, {IN_FLIGHT} in flight; redis-server"
        f" with AOF, appendfsync always; each figure the median of {REPEATS} runs;",
        f"end to end: device chunks of {DEVICE_CHUNK_BYTES} bytes, {DEVICE_PIPELINE} GET_KEYs"
        f" per round trip, device rate 2 Gbit/s (so the pipeline is the limit), {E2E_SECONDS:.0f}"
        f" s; {os.cpu_count()} CPUs.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_keystore", description=__doc__)
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS, help="keys, batched ingest")
    args = parser.parse_args(argv)
    print(table(run(keys=args.keys), notes=notes(keys=args.keys)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
