"""ETSI GS QKD 014 enc_keys over mutual TLS: requests/s and p99 with 1 and with 16 clients.

Starts its own two-node network (``bench_keyrequest.bench_network``: a fast link, SAE
``bench-sae-a`` on node-a and ``bench-sae-b`` on node-b) and waits until both key stores hold a
full buffer. Each client is the SAE's own 014 client (``tests.etsi014_client``, its client
certificate from the Sae's Secret) on a kept-alive HTTPS connection to node-a's KME, sending one
request after the other; 1 client, then 16 at once, for a fixed number of requests after a
warm-up:

- ours: enc_keys of one 256-bit key: authentication, one atomic take from the pair's key pool
  on node-a (keys agreed with node-b ahead of demand, so no peer round trip while the pool
  lasts), and the key container back;
- the baseline, on the same server and connections: the 014 status call (mTLS and HTTP, the
  SAE's authentication, the store's counts, no key work).

The two alternate in halves so that load from elsewhere on the machine falls on both alike.
The pool is warm when measuring starts: both controllers run with ``POOL_MIN_KEYS`` keys as the
pools' floor (``QSS_DELIVERY_POOL_MIN_KEYS``), and the warm-up's enc_keys created the pool; the
pool's level on node-a is sampled every 0.1 s while enc_keys is measured, and the notes say how
often it was found empty (a request then waits for a block to be agreed with node-b).
The keys taken are fetched by ID on node-b afterwards (dec_keys, untimed), which checks that
they are shared and keeps node-b's buffer from filling with reservations.

``python -m tests.benchmarks.bench_etsi014 [--scale F]`` (F scales the request counts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from controllers.delivery.pools import pair_owner
from controllers.keystore import KeyStore
from tests.benchmarks.bench_keyrequest import (
    CAPACITY,
    CHUNK_BITS,
    LINK,
    NS_A,
    NS_B,
    RATE_BPS,
    SAE_A,
    SAE_B,
    A,
    B,
    Fill,
    bench_network,
    fill_buffers,
    percentile,
)
from tests.benchmarks.report import Result, machine_load, table
from tests.cluster.network import QssNetwork
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map

KEY_BITS = 256
# Clients at once -> requests measured (per kind of call), after the warm-up.
REQUESTS = {1: 300, 16: 1600}
WARM_UP_PER_CLIENT = 10
# Warm pools: each pair's pool holds at least this many keys (an operator setting, see
# docs/key-delivery.md), enough for a burst of the 16 clients while a refill is agreed with
# node-b on this loaded machine. With the default (32) the pool ran dry in about one sample in
# six at 16 clients, and requests then waited for a KRP round trip.
POOL_MIN_KEYS = 1024
POOL_ENV = {"QSS_DELIVERY_POOL_MIN_KEYS": str(POOL_MIN_KEYS)}
CLIENT_TIMEOUT = 60.0
FIRST_KEY_TIMEOUT = 90.0
DEC_KEYS_BATCH = 1000  # the KME's max_key_per_request

Call = Callable[[Etsi014Client], Awaitable[None]]


@dataclass(frozen=True)
class Phase:
    """Per-request latencies (s) and the wall time (s) of one measured batch."""

    latencies: list[float]
    seconds: float


@dataclass
class PoolSamples:
    """The pool's level (keys) on node-a, sampled while enc_keys was measured."""

    levels: list[int] = field(default_factory=list)

    def describe(self) -> str:
        if not self.levels:
            return "pool not sampled"
        empty = sum(1 for level in self.levels if level == 0)
        return (
            f"pool on node-a while measuring: median {statistics.median(self.levels):.0f} keys,"
            f" min {min(self.levels)}, empty in {empty} of {len(self.levels)} samples"
        )


@dataclass
class Measured:
    enc: list[Phase]
    status: list[Phase]
    pool: PoolSamples = field(default_factory=PoolSamples)
    load: list[str] = field(default_factory=list)

    @staticmethod
    def _rate(phases: list[Phase]) -> float:
        return sum(len(p.latencies) for p in phases) / sum(p.seconds for p in phases)

    @staticmethod
    def _p(phases: list[Phase], q: float) -> float:
        return percentile([x for p in phases for x in p.latencies], q)

    def enc_rate(self) -> float:
        return self._rate(self.enc)

    def status_rate(self) -> float:
        return self._rate(self.status)

    def enc_ms(self, q: float) -> float:
        return self._p(self.enc, q) * 1000

    def status_ms(self, q: float) -> float:
        return self._p(self.status, q) * 1000


async def run_phase(clients: Sequence[Etsi014Client], call: Call, total: int) -> Phase:
    """``total`` calls spread over ``clients``, each client one call after the other."""
    per_client = [total // len(clients)] * len(clients)
    per_client[0] += total - sum(per_client)
    latencies: list[float] = []

    async def worker(client: Etsi014Client, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await call(client)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, n) for c, n in zip(clients, per_client, strict=True)))
    return Phase(latencies=latencies, seconds=time.perf_counter() - started)


@dataclass
class Keys:
    """The keys enc_keys handed out, to be fetched on node-b afterwards."""

    taken: dict[str, bytes]

    def enc_keys(self) -> Call:
        async def call(client: Etsi014Client) -> None:
            self.taken.update(key_map(await client.enc_keys(SAE_B, number=1, size=KEY_BITS)))

        return call

    async def drain(self, slave: Etsi014Client) -> int:
        """Fetch every key taken so far on node-b and check the bytes; the count fetched."""
        ids = list(self.taken)
        for i in range(0, len(ids), DEC_KEYS_BATCH):
            batch = ids[i : i + DEC_KEYS_BATCH]
            got = key_map(await slave.dec_keys(SAE_A, batch))
            if got != {k: self.taken[k] for k in batch}:
                raise RuntimeError("dec_keys on node-b did not return the bytes enc_keys gave")
        self.taken.clear()
        return len(ids)


async def sample_pool(store: KeyStore, samples: PoolSamples) -> None:
    """Append the bench pair's pool level on node-a every 0.1 s (until cancelled)."""
    while True:
        level = await store.pool_level(
            stream=LINK, owner=pair_owner(SAE_A, SAE_B), size_bits=KEY_BITS
        )
        samples.levels.append(level.keys)
        await asyncio.sleep(0.1)


async def sampled(store: KeyStore, samples: PoolSamples, phase: Awaitable[Phase]) -> Phase:
    sampler = asyncio.create_task(sample_pool(store, samples))
    try:
        return await phase
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


async def status_call(client: Etsi014Client) -> None:
    await client.status(SAE_B)


async def first_key(client: Etsi014Client, keys: Keys) -> None:
    """Retry the first enc_keys until node-a knows bench-sae-b (the announcements travel)."""
    deadline = time.monotonic() + FIRST_KEY_TIMEOUT
    while True:
        try:
            await keys.enc_keys()(client)
            return
        except Etsi014Error as exc:
            if exc.status not in (400, 503) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def measure(network: QssNetwork, scale: float) -> tuple[dict[int, Measured], Fill, int]:
    fill = await fill_buffers(network)
    creds_a = network.sae_credentials(A, NS_A, SAE_A)
    creds_b = network.sae_credentials(B, NS_B, SAE_B)

    def master() -> Etsi014Client:
        return Etsi014Client(
            network.nodes[A].key_api_url,
            ca_pem=creds_a["ca.crt"],
            cert_pem=creds_a["tls.crt"],
            key_pem=creds_a["tls.key"],
            timeout=CLIENT_TIMEOUT,
        )

    keys = Keys(taken={})
    figures: dict[int, Measured] = {}
    drained = 0
    async with AsyncExitStack() as stack:
        store_a = KeyStore.from_url(network.nodes[A].redis_url)
        stack.push_async_callback(store_a.aclose)
        slave = await stack.enter_async_context(
            Etsi014Client(
                network.nodes[B].key_api_url,
                ca_pem=creds_b["ca.crt"],
                cert_pem=creds_b["tls.crt"],
                key_pem=creds_b["tls.key"],
                timeout=CLIENT_TIMEOUT,
            )
        )
        for concurrency, requests in REQUESTS.items():
            total = max(concurrency, int(requests * scale))
            clients = [await stack.enter_async_context(master()) for _ in range(concurrency)]
            await first_key(clients[0], keys)
            # Warm up every client's connection (TLS handshake) and the server's code paths.
            await run_phase(clients, status_call, WARM_UP_PER_CLIENT * concurrency)
            await run_phase(clients, keys.enc_keys(), WARM_UP_PER_CLIENT * concurrency)
            drained += await keys.drain(slave)
            measured = Measured(enc=[], status=[])
            measured.load.append(machine_load())
            halves = (total // 2, total - total // 2)
            for half in halves:
                measured.status.append(await run_phase(clients, status_call, half))
                measured.enc.append(
                    await sampled(store_a, measured.pool, run_phase(clients, keys.enc_keys(), half))
                )
                drained += await keys.drain(slave)
            measured.load.append(machine_load())
            figures[concurrency] = measured
            for client in clients:
                await client.close()
    return figures, fill, drained


_LAST_NOTES: list[str] = []


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def rows(m: Measured, *, clients: str, by: str = "") -> list[Result]:
    """enc_keys' rate, p50 and p99 beside status's, for one number of ``clients``; ``by`` names
    the load generator in the rows (empty: this benchmark's in-process clients)."""
    what = f"014 enc_keys 1 x {KEY_BITS} bit{by}, {clients}"
    found = [
        Result(
            what=what,
            unit="requests/s",
            ours=m.enc_rate(),
            baseline=m.status_rate(),
            baseline_is=f"014 status on the same server and connections{by}, {clients}",
        )
    ]
    for q in (50, 99):
        found.append(
            Result(
                what=f"{what}, p{q}",
                unit="ms",
                ours=m.enc_ms(q),
                baseline=m.status_ms(q),
                baseline_is=f"014 status p{q}{by}, {clients}",
            )
        )
    return found


def summary(m: Measured, *, clients: str) -> str:
    """One note: both calls' figures, the targets met or not, the pool and the machine's load."""
    count = sum(len(p.latencies) for p in m.enc)
    return (
        f"{clients}: enc_keys {m.enc_rate():,.0f} requests/s, p50 {m.enc_ms(50):.1f} ms,"
        f" p99 {m.enc_ms(99):.1f} ms; status {m.status_rate():,.0f} requests/s, p50"
        f" {m.status_ms(50):.1f} ms, p99 {m.status_ms(99):.1f} ms ({count} requests of"
        f" enc_keys); targets: rate >= 0.7x status"
        f" {met(m.enc_rate() >= 0.7 * m.status_rate())}"
        f" ({m.enc_rate() / m.status_rate():.2f}x), p99 <= 2x status p99"
        f" {met(m.enc_ms(99) <= 2 * m.status_ms(99))} ({m.enc_ms(99) / m.status_ms(99):.1f}x);"
        f" {m.pool.describe()}; machine at start / end: {' -> '.join(m.load)};"
    )


def results(figures: dict[int, Measured], fill: Fill, drained: int) -> list[Result]:
    found: list[Result] = []
    _LAST_NOTES.clear()
    for concurrency, m in figures.items():
        clients = f"{concurrency} client{'s' if concurrency > 1 else ''}"
        found.extend(rows(m, clients=clients))
        _LAST_NOTES.append(summary(m, clients=clients))
    _LAST_NOTES.append(
        f"{fill.describe()}; {drained:,} keys fetched on node-b with dec_keys afterwards, same"
        " bytes;"
    )
    return found


def run(*, scale: float = 1.0) -> list[Result]:
    with bench_network("bench-etsi014-", controller_env=POOL_ENV) as network:
        figures, fill, drained = asyncio.run(measure(network, scale))
    return results(figures, fill, drained)


def notes(*, scale: float = 1.0) -> list[str]:
    counts = ", ".join(f"{int(n * scale):,} with {c}" for c, n in REQUESTS.items())
    return [
        *_LAST_NOTES,
        f"requests measured: {counts} client(s), after {WARM_UP_PER_CLIENT} per client of each"
        f" kind; pools' floor QSS_DELIVERY_POOL_MIN_KEYS={POOL_MIN_KEYS};"
        " each client one kept-alive mTLS connection, one request at a time; clients in"
        f" the benchmark's process; link {RATE_BPS / 1e6:g} Mbit/s, {CHUNK_BITS}-bit chunks,"
        f" buffer {CAPACITY:,} chunks; two nodes on one machine ({os.cpu_count()} CPUs); for"
        " the p99 rows lower is better and x = ours / baseline.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_etsi014", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="scale the request counts")
    args = parser.parse_args(argv)
    print(table(run(scale=args.scale), notes=notes(scale=args.scale)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
