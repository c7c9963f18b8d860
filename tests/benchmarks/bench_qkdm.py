"""The QKDM measured for real: device -> store through the ``qss-qkdm`` processes.

Starts its own two-node network (``tests.cluster.network.running_network``: per node a
kube-apiserver, Redis with AOF and fsync always, and the controller), one simulated device pair
at a secret key rate far above what the pipeline can take, and the real ``qss-qkdm`` at each end
of the stream, as the tests and the demo run them. Figure: key material stored per second into
node-a's Redis (Mbit/s, from the store's own ``added`` counter over a window after the stream is
flowing), beside the device's configured rate. Each chunk size is its own link, since a chunk is
the store's unit of work: small chunks cost per-chunk work in the QKDM and in Redis. The notes
add what the pipeline's processes spent over the same window, in CPU milliseconds per MB stored
(both ends together): unlike the rate, that hardly moves with the machine's load, so runs at
different loads (and code before and after a change) can be compared by it.

``python -m tests.benchmarks qkdm``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from controllers.keystore import KeyStore
from tests.benchmarks.report import Result, machine_load
from tests.cluster.network import running_network

A, B = "node-a", "node-b"
DEVICE_RATE_BPS = 2_000_000_000  # the device is never the limit
# How much unfetched key the device keeps (it derives key material, so this costs no memory):
# a minute of its rate, so the QKDM is never overtaken by expiry while it catches up.
DEVICE_BUFFER_BITS = 60 * DEVICE_RATE_BPS
CHUNK_SIZES_BITS = (256, 1024, 8192)
WARM_UP_SECONDS = 3.0
WINDOW_SECONDS = 5.0
# Room for the whole run at the rates seen (up to about 400 Mbit/s at 8192-bit chunks), so the
# buffer never fills while measuring.
CAPACITY_BYTES = 6_000_000_000 // 8


@dataclass(frozen=True)
class Rates:
    """Key material stored per second (bit/s) at each stream end, the CPU milliseconds each
    kind of process spent per MB stored at both ends, and the machine's load."""

    a_bps: float
    b_bps: float
    cpu_ms_per_mb: dict[str, float]
    load: str


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {kind: sum(_cpu_seconds(p) for p in group) for kind, group in pids.items()}


async def _measure(
    redis_urls: dict[str, str], stream: str, chunk_bits: int, pids: dict[str, list[int]]
) -> Rates:
    stores = {node: KeyStore.from_url(url) for node, url in redis_urls.items()}
    try:
        deadline = time.monotonic() + 120
        for node, store in stores.items():
            while (await _added(store, stream)) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no key reached {node}'s store on stream {stream}")
                await asyncio.sleep(0.1)
        await asyncio.sleep(WARM_UP_SECONDS)
        first = {node: await _added(store, stream) for node, store in stores.items()}
        cpu_first = _cpu(pids)
        started = time.monotonic()
        await asyncio.sleep(WINDOW_SECONDS)
        last = {node: await _added(store, stream) for node, store in stores.items()}
        cpu_last = _cpu(pids)
        ended = time.monotonic()
        load = machine_load()
        for node, store in stores.items():
            if (await store.counts(stream=stream)).free == 0:
                raise RuntimeError(f"{node}'s buffer filled while measuring; raise CAPACITY_BYTES")
            if last[node] <= first[node]:
                raise RuntimeError(f"the QKDM of {node} stored nothing while measuring")
    finally:
        for store in stores.values():
            await store.aclose()
    rate = {node: (last[node] - first[node]) * chunk_bits / (ended - started) for node in stores}
    stored_mb = sum(last[node] - first[node] for node in stores) * chunk_bits / 8e6
    cpu_ms_per_mb = {kind: (cpu_last[kind] - cpu_first[kind]) * 1000 / stored_mb for kind in pids}
    return Rates(a_bps=rate[A], b_bps=rate[B], cpu_ms_per_mb=cpu_ms_per_mb, load=load)


async def _added(store: KeyStore, stream: str) -> int:
    try:
        return (await store.counts(stream=stream)).added
    except Exception:  # the QKDM has not configured the stream yet
        return 0


def _run_one(chunk_bits: int) -> Rates:
    state_dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="bench-qkdm-"))
    try:
        with running_network(state_dir) as network:
            stream = f"bench-{chunk_bits}"
            network.add_link(
                A,
                B,
                name=stream,
                rate_bps=DEVICE_RATE_BPS,
                capacity=CAPACITY_BYTES * 8 // chunk_bits,
                chunk_bits=chunk_bits,
                buffer_bits=DEVICE_BUFFER_BITS,
            )
            try:
                nodes = [network.nodes[node] for node in (A, B)]
                urls = {node.name: node.redis_url for node in nodes}
                device = network.links[stream].device
                assert device is not None
                pids = {
                    "QKDMs": [node.qkdms[stream].pid for node in nodes],
                    "device pair": [device.pid],
                    "Redis": [node.redis.pid for node in nodes if node.redis is not None],
                }
                return asyncio.run(_measure(urls, stream, chunk_bits, pids))
            finally:
                network.stop_link(stream)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


_LAST_NOTES: list[str] = []


def run() -> list[Result]:
    rows: list[Result] = []
    _LAST_NOTES.clear()
    for bits in CHUNK_SIZES_BITS:
        rates = _run_one(bits)
        rows.append(
            Result(
                what=f"QKDM device -> store, {bits}-bit chunks",
                unit="Mbit/s",
                ours=rates.a_bps / 1e6,
                baseline=DEVICE_RATE_BPS / 1e6,
                baseline_is="the simulated device's configured secret key rate",
            )
        )
        _LAST_NOTES.append(
            f"QKDM {bits}-bit chunks: node-a {rates.a_bps / 1e6:.1f} Mbit/s"
            f" ({rates.a_bps / bits:,.0f} chunks/s), node-b {rates.b_bps / 1e6:.1f} Mbit/s;"
            f" target >= 100 Mbit/s per stream end"
            f" {'met' if min(rates.a_bps, rates.b_bps) >= 100e6 else 'NOT met'}; CPU per MB"
            " stored at both ends: "
            + ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in rates.cpu_ms_per_mb.items())
            + f"; machine: {rates.load};"
        )
    return rows


def notes() -> list[str]:
    return [
        *_LAST_NOTES,
        f"QKDM: real qss-qkdm processes at both ends, device pair at {DEVICE_RATE_BPS / 1e9:.0f}"
        f" Gbit/s, rate into node-a's Redis over {WINDOW_SECONDS:.0f} s after"
        f" {WARM_UP_SECONDS:.0f} s of flow; target >= 100 Mbit/s per stream end;"
        f" {os.cpu_count()} CPUs shared by both QKDMs, both Redis, the device and the control"
        " planes.",
    ]


if __name__ == "__main__":
    from tests.benchmarks.report import table

    print(table(run(), notes=notes()))
