"""Multi-hop key relay: ETSI 014 enc_keys p50 for a slave SAE 1, 2 and 3 hops away, and the
time each hop adds, on four local clusters in a line.

Starts its own network (``tests.cluster.network.running_network``): node-a - node-b - node-c -
node-d, each with its kube-apiserver, redis-server and qss-controller, fast links between
neighbours, and an SAE on every node (``relay-a`` ... ``relay-d``). Once routing has found every
path and a first key went to each SAE (so every link's pool for each pair is agreed), each
round, sequentially and interleaved so that load from elsewhere falls on all alike:

- the channel's round trip: node-a's ping of node-b over the inter-node channel (mutual TLS,
  a kept-alive connection; the benchmark presents a node-a certificate from node-a's CA);
- enc_keys of one 256-bit key by ``relay-a`` (its own 014 client, kept-alive) for ``relay-b``
  (1 hop: served from the pool, no call to a peer), ``relay-c`` (2 hops: one relay through
  node-b) and ``relay-d`` (3 hops: through node-b and node-c).

The extra time per hop is the 2-hop and 3-hop p50s less the 1-hop p50, per added hop. A hop
costs one channel round trip plus, on each of its two nodes, one store read and one fsync'd
store write: the repeater reads what came in, checks the tag and decrypts, then holds the next
link's pads and claims what came in (one batch) and seals; the next node reads its pads, checks
the tag and decrypts, then claims its pads and opens them into the relayed keys (one batch).
The notes give the round trip and a write beside the per-hop figure; the rest is CPU (message
checks, TLS, and waiting for a core). The keys taken are fetched on the far nodes afterwards
(dec_keys, untimed): that checks they arrived alike.

``python -m tests.benchmarks.bench_relay [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from controllers import pki
from controllers.channel import PING_PATH
from controllers.identity import NodeIdentity
from controllers.keystore import KeyStore, UnknownStreamError
from tests.benchmarks.bench_keyrequest import percentile
from tests.benchmarks.report import Result, table
from tests.cluster.network import QssNetwork, running_network
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map

NODES = ("node-a", "node-b", "node-c", "node-d")
SAES = {node: f"relay-{node[-1]}" for node in NODES}
NS = "bench-relay"
RATE_BPS = 20_000_000
CHUNK_BITS = 256
CAPACITY = 20_000
DEVICE_BUFFER_BITS = 10**15  # as bench_keyrequest: the device keeps all it generated
KEY_BITS = 256
DEFAULT_ROUNDS = 100
WARM_UP = 10
FILL_CHUNKS = 4_000  # every stream end holds this many before measuring
FILL_TIMEOUT = 120.0
FIRST_KEY_TIMEOUT = 120.0
PROBE_KEY = "bench-relay:probe"  # outside the key store's prefix
QSS2_MS_PER_HOP = 170.0
TARGET_MS_PER_HOP = 5.0


@contextmanager
def line_network() -> Iterator[QssNetwork]:
    state_dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="bench-relay-"))
    try:
        with running_network(state_dir, nodes=NODES) as network:
            for a, b in itertools.pairwise(NODES):
                network.add_link(
                    a,
                    b,
                    name=f"relay-{a[-1]}{b[-1]}",
                    rate_bps=RATE_BPS,
                    capacity=CAPACITY,
                    chunk_bits=CHUNK_BITS,
                    buffer_bits=DEVICE_BUFFER_BITS,
                )
            for node, sae in SAES.items():
                network.register_sae(node, NS, sae, sae)
            yield network
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def fill(network: QssNetwork) -> float:
    """Wait (bounded) until every stream end holds ``FILL_CHUNKS``; the seconds it took."""
    started = time.monotonic()
    stores = {n: KeyStore.from_url(network.nodes[n].redis_url) for n in NODES}
    try:
        while time.monotonic() - started < FILL_TIMEOUT:
            levels = []
            for node, store in stores.items():
                for stream, link in network.links.items():
                    if node not in (link.a, link.b):
                        continue
                    try:
                        levels.append((await store.counts(stream=stream)).held)
                    except UnknownStreamError:
                        levels.append(0)
            if levels and min(levels) >= FILL_CHUNKS:
                break
            await asyncio.sleep(0.5)
    finally:
        for store in stores.values():
            await store.aclose()
    return time.monotonic() - started


def client(network: QssNetwork, node: str) -> Etsi014Client:
    creds = network.sae_credentials(node, NS, SAES[node])
    return Etsi014Client(
        network.nodes[node].key_api_url,
        ca_pem=creds["ca.crt"],
        cert_pem=creds["tls.crt"],
        key_pem=creds["tls.key"],
        timeout=60,
    )


def node_a_identity(network: QssNetwork) -> NodeIdentity:
    ca = network.nodes["node-a"].ca
    cert = pki.issue_node_certificate(ca, "node-a", ip_addresses=["127.0.0.1"])
    return NodeIdentity(
        node_id="node-a",
        ca_cert_pem=ca.cert_pem,
        cert_pem=cert.cert_pem,
        key_pem=cert.key_pem,
        ca_key_pem=ca.key_pem,
    )


async def first_keys(master: Etsi014Client) -> None:
    """One key for each far SAE, retried while routes and pools come up."""
    deadline = time.monotonic() + FIRST_KEY_TIMEOUT
    for node in NODES[1:]:
        while True:
            try:
                await master.enc_keys(SAES[node], number=1, size=KEY_BITS)
                break
            except Etsi014Error:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def measure(network: QssNetwork, rounds: int) -> tuple[dict[str, list[float]], float]:
    filled = await fill(network)
    timings: dict[str, list[float]] = {"ping": [], "write": [], **{n: [] for n in NODES[1:]}}
    taken: dict[str, list[str]] = {n: [] for n in NODES[1:]}
    identity = node_a_identity(network)
    context = identity.client_ssl_context(server_ca_pem=network.nodes["node-b"].ca.cert_pem)
    async with AsyncExitStack() as stack:
        master = await stack.enter_async_context(client(network, "node-a"))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1))
        )
        ping_url = network.nodes["node-b"].channel_url + PING_PATH
        probe = Redis.from_url(network.nodes["node-b"].redis_url)
        stack.push_async_callback(probe.aclose)
        await first_keys(master)
        for i in range(WARM_UP + rounds):
            started = time.perf_counter()
            await probe.set(PROBE_KEY, i)  # a write: one fsync, as every key-store step
            if i >= WARM_UP:
                timings["write"].append(time.perf_counter() - started)
            started = time.perf_counter()
            async with session.get(ping_url, server_hostname="node-b") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"ping of node-b answered {response.status}")
            if i >= WARM_UP:
                timings["ping"].append(time.perf_counter() - started)
            for node in NODES[1:]:
                started = time.perf_counter()
                keys = key_map(await master.enc_keys(SAES[node], number=1, size=KEY_BITS))
                if i >= WARM_UP:
                    timings[node].append(time.perf_counter() - started)
                taken[node].extend(keys)
        await probe.delete(PROBE_KEY)
        # Untimed: each far SAE gets the same keys by ID.
        for node in NODES[1:]:
            slave = await stack.enter_async_context(client(network, node))
            ids = taken[node]
            for start in range(0, len(ids), 100):
                await fetch(slave, ids[start : start + 100])
    return timings, filled


async def fetch(slave: Etsi014Client, ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await slave.dec_keys(SAES["node-a"], ids)
            return
        except Etsi014Error:
            if time.monotonic() > deadline:  # the last commits may still be on their way
                raise
            await asyncio.sleep(0.2)


_NOTES: list[str] = []


def results(timings: dict[str, list[float]], filled: float, rounds: int) -> list[Result]:
    ms = {k: [s * 1000 for s in v] for k, v in timings.items()}
    p50 = {k: percentile(v, 50) for k, v in ms.items()}
    one, two, three = p50["node-b"], p50["node-c"], p50["node-d"]
    per_hop = (three - one) / 2
    rows = [
        Result(
            what="014 enc_keys 1 x 256 bit, 1 hop, p50",
            unit="ms",
            ours=one,
            baseline=p50["ping"],
            baseline_is="node-a's ping of node-b over the inter-node channel (mTLS), p50",
        ),
        Result(
            what="014 enc_keys 1 x 256 bit, 2 hops, p50",
            unit="ms",
            ours=two,
            baseline=one,
            baseline_is="the 1-hop enc_keys of the same run, p50",
        ),
        Result(
            what="014 enc_keys 1 x 256 bit, 3 hops, p50",
            unit="ms",
            ours=three,
            baseline=one,
            baseline_is="the 1-hop enc_keys of the same run, p50",
        ),
        Result(
            what="extra time per relay hop ((3 hops - 1 hop) / 2), p50s",
            unit="ms",
            ours=per_hop,
            baseline=p50["ping"],
            baseline_is="one channel round trip (ping node-a -> node-b), p50",
        ),
    ]
    _NOTES.clear()
    _NOTES.append(
        f"relay: 1/2/3 hops p50 {one:.1f} / {two:.1f} / {three:.1f} ms, p95"
        f" {percentile(ms['node-b'], 95):.1f} / {percentile(ms['node-c'], 95):.1f} /"
        f" {percentile(ms['node-d'], 95):.1f} ms; per hop {two - one:.1f} ms (2nd),"
        f" {three - two:.1f} ms (3rd), {per_hop:.1f} ms averaged (target <= "
        f"{TARGET_MS_PER_HOP:.0f} ms: {'met' if per_hop <= TARGET_MS_PER_HOP else 'NOT met'};"
        f" QSS 2.0 about {QSS2_MS_PER_HOP:.0f} ms). Where a hop's time goes: one channel round"
        f" trip ({p50['ping']:.1f} ms p50 here) and, in sequence, two key-store writes (one"
        " batch per node: the repeater holds the next link's pads and claims what came in, the"
        " next node claims its pads and turns them into the relayed keys), each an fsync'd"
        f" Redis write ({p50['write']:.1f} ms p50 here: node-b's Redis, appendfsync always),"
        " plus a read on each node and message checks;"
    )
    _NOTES.append(
        f"{rounds} rounds after {WARM_UP} warm-up, sequential; four nodes in a line on one machine"
        f" ({os.cpu_count()} CPUs), links {RATE_BPS / 1e6:g} Mbit/s, {CHUNK_BITS}-bit chunks,"
        f" buffers filled to {FILL_CHUNKS:,} chunks in {filled:.0f} s; load average at the end"
        f" {os.getloadavg()[0]:.1f}; lower is better, x = ours / baseline."
    )
    return rows


def run(*, rounds: int = DEFAULT_ROUNDS) -> list[Result]:
    with line_network() as network:
        timings, filled = asyncio.run(measure(network, rounds))
    return results(timings, filled, rounds)


def notes() -> list[str]:
    return list(_NOTES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_relay", description=__doc__)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timed rounds")
    args = parser.parse_args(argv)
    print(table(run(rounds=args.rounds), notes=notes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
