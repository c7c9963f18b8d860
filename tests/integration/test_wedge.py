"""The wedge of issue 10, as a new user met it: 150,000 keys taken with ETSI 014 enc_keys and
none fetched with dec_keys. Before, the slave's buffer filled with keys held for the slave SAE,
its ingest stopped while the master's went on, the two stores drifted apart and every enc_keys
answered 503. Now the held keys live outside the buffer under their own bound: service goes
on, the bound holds, and both stores agree chunk for chunk afterwards.

Its own link between node-a and node-b (``wedge``, 8 Mbit/s, a buffer of 100,000 chunks, a
device that keeps half a minute of keys) and two SAEs of its own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from controllers.keystore import KeyStore, UnknownStreamError
from controllers.keystore.layout import NAMES, stream_keys
from tests.cluster.network import QssNetwork
from tests.etsi014_client import Etsi014Client, Etsi014Error, key_map
from tests.integration.helpers import eventually_async

A, B = "node-a", "node-b"
NS_A, NS_B = "wedge-a", "wedge-b"
SAE_A, SAE_B = "wedge-alice", "wedge-bob"
LINK = "wedge"
RATE_BPS = 8_000_000
CAPACITY = 100_000
KEYS = 150_000
PER_REQUEST = 1000
# The controllers' default bound on keys held for slave SAEs: twice the capacity.
HELD_MAX = 2 * CAPACITY


@pytest.fixture(scope="module")
def network(qss_network: QssNetwork) -> Iterator[QssNetwork]:
    qss_network.add_link(
        A, B, name=LINK, rate_bps=RATE_BPS, capacity=CAPACITY, buffer_bits=256 * 2**20
    )
    qss_network.register_sae(A, NS_A, SAE_A, SAE_A)
    qss_network.register_sae(B, NS_B, SAE_B, SAE_B)
    yield qss_network
    qss_network.stop_link(LINK)


async def available_ids(redis_url: str) -> set[str]:
    """The chunk IDs in a store's buffer (its incoming list and its sorted set)."""
    keys = stream_keys(LINK)
    raw = Redis.from_url(redis_url, decode_responses=True)
    try:
        listed = await raw.lrange(keys[NAMES.index("incoming")], 0, -1)
        scored = await raw.zrange(keys[NAMES.index("avail")], 0, -1)
    finally:
        await raw.aclose()
    return {str(c) for c in [*listed, *scored]}


async def test_150000_keys_without_dec_keys_leave_service_going_and_the_stores_agreeing(
    network: QssNetwork,
) -> None:
    stores = {n: KeyStore.from_url(network.nodes[n].redis_url) for n in (A, B)}
    creds = network.sae_credentials(A, NS_A, SAE_A)
    alice = Etsi014Client(
        network.nodes[A].key_api_url,
        ca_pem=creds["ca.crt"],
        cert_pem=creds["tls.crt"],
        key_pem=creds["tls.key"],
        timeout=60,
    )
    try:

        async def full() -> bool:
            try:
                counts = [await s.counts(stream=LINK) for s in stores.values()]
            except UnknownStreamError:
                return False
            return all(c.available >= CAPACITY * 0.9 for c in counts)

        await eventually_async(full, timeout=120, poll=0.5, what="both buffers nearly full")
        held_seen: list[int] = []

        async def watch_held() -> None:
            while True:
                held_seen.append((await stores[B].counts(stream=LINK)).mirrored)
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch_held())
        taken: set[str] = set()
        refusals: Counter[str] = Counter()
        try:
            while len(taken) < KEYS:
                try:
                    container = await alice.enc_keys(SAE_B, number=PER_REQUEST, size=256)
                except Etsi014Error as exc:
                    # Until node-a has heard of the slave SAE; and a moment of scarcity while
                    # the QKDMs refill is fine. Anything else is the wedge.
                    reason = (exc.details or [{}])[0].get("reason", str(exc.status))
                    refusals[reason] += 1
                    if reason not in ("UnknownSae", "InsufficientKeys") or refusals[reason] > 99:
                        raise AssertionError(f"the wedge: {refusals}, last {exc.body}") from None
                    await asyncio.sleep(0.2)
                    continue
                ids = set(key_map(container))
                assert len(ids) == PER_REQUEST
                assert not ids & taken, "a key was served twice"
                taken |= ids
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        # The keys wait for wedge-bob on node-b, outside its buffer, within their bound.
        assert max(held_seen) <= HELD_MAX
        counts_b = await stores[B].counts(stream=LINK)
        assert counts_b.mirrored >= KEYS
        # Service goes on.
        more = await alice.enc_keys(SAE_B, number=10, size=256)
        assert len(key_map(more)) == 10
        # Afterwards: the device stops, node-a's pool goes back when idle, and both buffers
        # hold the same chunks.
        network.device_fault(LINK, rate_bps=0)

        async def agree() -> bool:
            a = await stores[A].counts(stream=LINK)
            if a.pooled:
                return False
            ids_a = await available_ids(network.nodes[A].redis_url)
            ids_b = await available_ids(network.nodes[B].redis_url)
            return bool(ids_a) and ids_a == ids_b

        await eventually_async(agree, timeout=120, poll=1.0, what="both stores agree")
        for store in stores.values():
            c = await store.counts(stream=LINK)
            assert c.available + c.reserved + c.consumed + c.dropped == c.added
    finally:
        await alice.close()
        for store in stores.values():
            await store.aclose()
