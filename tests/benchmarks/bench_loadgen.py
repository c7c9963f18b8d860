"""ETSI GS QKD 014 enc_keys against status, driven by a real load generator over mutual TLS.

The ``etsi014`` benchmark's measurement, with the clients moved out of the benchmark's own
process into vegeta (``tests.benchmarks.vegeta``, a Go HTTP load generator, built once into the
kube-qss cache; needs Go the first time). A separate topic, not part of ``etsi014``, so that
``etsi014`` needs nothing but Python and the two can be run and compared on their own.

Same network and warm-up as ``etsi014`` (its ``bench_network``, pool floor and first key), then
vegeta GETs node-a's 014 API with bench-sae-a's client certificate, at 1 and at 16 connections
(one worker per kept-alive connection, one request in flight per connection, as fast as answers
come), for a fixed time per batch:

- ours: ``enc_keys?number=1&size=256`` for bench-sae-b;
- the baseline: ``status`` for bench-sae-b, on the same server.

The two alternate (status, enc_keys, status, enc_keys) so that load from elsewhere on the
machine falls on both alike. Every answer timed is checked: status 200, enc_keys 200 with one
256-bit key and a key ID no other answer had; after each batch every key taken is fetched by ID
on node-b with dec_keys (untimed) and compared byte for byte, and the counts are noted.

``python -m tests.benchmarks.bench_loadgen [--seconds S]`` (S: seconds per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from controllers.keystore import KeyStore
from tests.benchmarks import vegeta
from tests.benchmarks.bench_etsi014 import (
    CLIENT_TIMEOUT,
    KEY_BITS,
    POOL_ENV,
    POOL_MIN_KEYS,
    Keys,
    Measured,
    Phase,
    first_key,
    rows,
    sampled,
    summary,
)
from tests.benchmarks.bench_keyrequest import (
    NS_A,
    NS_B,
    SAE_A,
    SAE_B,
    A,
    B,
    Fill,
    bench_network,
    fill_buffers,
)
from tests.benchmarks.report import Result, machine_load, table
from tests.cluster.network import QssNetwork
from tests.etsi014_client import API_PREFIX, Etsi014Client, key_map

CONNECTIONS = (1, 16)
SECONDS = 5.0  # per batch; each kind of call gets ROUNDS batches per number of connections
ROUNDS = 2
WARM_UP_SECONDS = 1.0
BY = ", vegeta"


@dataclass
class Audit:
    """How full the buffers were, and what the checks saw, for the notes."""

    fill: Fill
    status_answers: int = 0
    enc_answers: int = 0
    fetched: int = 0


def phase(answers: list[vegeta.Answer]) -> Phase:
    """The answers as a measured batch: latencies, and the wall time from the first request
    sent to the last answer received."""
    if not answers:
        raise RuntimeError("vegeta sent no request in its batch")
    first = min(a.started for a in answers)
    last = max(a.started + a.latency for a in answers)
    return Phase(latencies=[a.latency for a in answers], seconds=last - first)


def check_status(answers: list[vegeta.Answer]) -> None:
    failed = [a for a in answers if a.code != 200]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(answers)} status answers were not 200; the first:"
            f" code {failed[0].code}, error {failed[0].error!r}, body {failed[0].body[:300]!r}"
        )


def take_keys(answers: list[vegeta.Answer], keys: Keys) -> None:
    """Check every enc_keys answer (200, one key of KEY_BITS, an ID not seen before) and add its
    key to ``keys``. The error names the answer's status and message, never key material."""
    for answer in answers:
        if answer.code != 200:
            raise RuntimeError(
                f"an enc_keys answer was {answer.code} (error {answer.error!r}): its body"
                f" {answer.body[:300]!r}"
            )
        got = key_map(json.loads(answer.body))
        if len(got) != 1 or any(len(k) * 8 != KEY_BITS for k in got.values()):
            raise RuntimeError(f"an enc_keys answer did not hold one {KEY_BITS}-bit key")
        if not got.keys().isdisjoint(keys.taken):
            raise RuntimeError("two enc_keys answers handed out the same key ID")
        keys.taken.update(got)


def write_tls(directory: Path, creds: dict[str, bytes]) -> vegeta.ClientTls:
    """The SAE's credentials as the files vegeta reads (owner-only)."""
    paths = vegeta.ClientTls(
        cert=directory / "sae.crt", key=directory / "sae.key", ca=directory / "ca.crt"
    )
    for path, name in ((paths.cert, "tls.crt"), (paths.key, "tls.key"), (paths.ca, "ca.crt")):
        path.touch(mode=0o600)
        path.write_bytes(creds[name])
    return paths


async def measure(
    network: QssNetwork, binary: Path, seconds: float
) -> tuple[dict[int, Measured], Audit]:
    audit = Audit(fill=await fill_buffers(network))
    creds_a = network.sae_credentials(A, NS_A, SAE_A)
    creds_b = network.sae_credentials(B, NS_B, SAE_B)
    base = f"{network.nodes[A].key_api_url}{API_PREFIX}/{SAE_B}"
    status_url = f"{base}/status"
    enc_url = f"{base}/enc_keys?number=1&size={KEY_BITS}"
    keys = Keys(taken={})
    figures: dict[int, Measured] = {}
    async with AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="kqss-loadgen-"))
        tls = write_tls(Path(tmp), creds_a)
        store_a = KeyStore.from_url(network.nodes[A].redis_url)
        stack.push_async_callback(store_a.aclose)

        def client(node: str, creds: dict[str, bytes]) -> Etsi014Client:
            return Etsi014Client(
                network.nodes[node].key_api_url,
                ca_pem=creds["ca.crt"],
                cert_pem=creds["tls.crt"],
                key_pem=creds["tls.key"],
                timeout=CLIENT_TIMEOUT,
            )

        slave = await stack.enter_async_context(client(B, creds_b))
        master = await stack.enter_async_context(client(A, creds_a))
        # As etsi014: wait for node-a to know bench-sae-b; the first take creates the pool.
        await first_key(master, keys)

        async def status(connections: int, duration: float) -> Phase:
            answers = await vegeta.attack(
                binary, status_url, connections=connections, seconds=duration, tls=tls
            )
            check_status(answers)
            audit.status_answers += len(answers)
            return phase(answers)

        async def enc_keys(connections: int, duration: float) -> Phase:
            answers = await vegeta.attack(
                binary, enc_url, connections=connections, seconds=duration, tls=tls
            )
            take_keys(answers, keys)
            audit.enc_answers += len(answers)
            return phase(answers)

        async def drain() -> None:
            audit.fetched += await keys.drain(slave)

        for connections in CONNECTIONS:
            # Warm up: the server's code paths and the pool's refills at this rate.
            await status(connections, WARM_UP_SECONDS)
            await enc_keys(connections, WARM_UP_SECONDS)
            await drain()
            measured = Measured(enc=[], status=[])
            measured.load.append(machine_load())
            for _ in range(ROUNDS):
                measured.status.append(await status(connections, seconds))
                measured.enc.append(
                    await sampled(store_a, measured.pool, enc_keys(connections, seconds))
                )
                await drain()
            measured.load.append(machine_load())
            figures[connections] = measured
    return figures, audit


_LAST_NOTES: list[str] = []


def named(connections: int) -> str:
    return f"{connections} connection{'s' if connections > 1 else ''}"


def results(figures: dict[int, Measured], audit: Audit) -> list[Result]:
    found: list[Result] = []
    _LAST_NOTES.clear()
    for connections, m in figures.items():
        found.extend(rows(m, clients=named(connections), by=BY))
        _LAST_NOTES.append(f"vegeta, {summary(m, clients=named(connections))}")
    _LAST_NOTES.append(
        f"vegeta: {audit.fill.describe()}; {audit.status_answers:,} status answers, all 200;"
        f" {audit.enc_answers:,} enc_keys answers (warm-up included), all 200 with one"
        f" {KEY_BITS}-bit key, no key ID twice; {audit.fetched:,} keys fetched on node-b with"
        " dec_keys afterwards (these and the first key, taken in-process), same bytes;"
    )
    return found


def run(*, seconds: float = SECONDS) -> list[Result]:
    # Build (or find) vegeta before minutes of network set-up, so a missing Go fails at once.
    binary = vegeta.binary()
    with bench_network("bench-loadgen-", controller_env=POOL_ENV) as network:
        figures, audit = asyncio.run(measure(network, binary, seconds))
    return results(figures, audit)


def notes(*, seconds: float = SECONDS) -> list[str]:
    return [
        *_LAST_NOTES,
        f"vegeta {vegeta.VERSION} (its own process; -rate=0, workers = max-workers ="
        " connections = max-connections, HTTP/1.1 keep-alive, the SAE's client certificate):"
        f" {ROUNDS} batches of {seconds:g} s of each call per number of connections,"
        f" alternating, after {WARM_UP_SECONDS:g} s of each; pools' floor"
        f" QSS_DELIVERY_POOL_MIN_KEYS={POOL_MIN_KEYS}; two nodes on one machine"
        f" ({os.cpu_count()} CPUs), vegeta on the same CPUs.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_loadgen", description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="seconds per batch")
    args = parser.parse_args(argv)
    print(table(run(seconds=args.seconds), notes=notes(seconds=args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
