"""Rate limiting: a stream yields key at its rate, from when both ends opened it."""

from __future__ import annotations

import asyncio
import time

from tests.unit.simdevice.helpers import FakeClock, Pair, key_bytes, running_pair


async def test_key_exists_only_at_the_configured_rate(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both(key_chunk_size=16)
    assert (await pair.a.get_key(key_stream_id=ksid))["status"] == 2
    clock.advance(1.0)  # 1280 bits/s: ten 128-bit chunks
    for _ in range(10):
        assert (await pair.a.get_key(key_stream_id=ksid))["status"] == 0
    too_fast = await pair.a.get_key(key_stream_id=ksid)
    assert (too_fast["status"], too_fast["reason"], too_fast["next_index"]) == (2, "not_yet", 10)
    # The peer is held to the same count: it sees the same ten chunks and no more.
    assert (await pair.b.get_key(key_stream_id=ksid, index=9))["status"] == 0
    assert (await pair.b.get_key(key_stream_id=ksid, index=10))["status"] == 2


async def test_generation_starts_when_the_peer_opens(pair: Pair, clock: FakeClock) -> None:
    ksid = (await pair.a.open_connect())["key_stream_ID"]
    clock.advance(5.0)
    await pair.b.open_connect(key_stream_id=ksid)
    clock.advance(0.5)
    assert (await pair.a.get_key(key_stream_id=ksid, index=4))["status"] == 0
    assert (await pair.a.get_key(key_stream_id=ksid, index=5))["status"] == 2


async def test_rate_change_applies_from_then_on(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both()
    clock.advance(1.0)  # 10 chunks at 1280 bits/s
    changed = await pair.a.fault(rate_bps=640)
    assert changed["streams"][0]["rate_bps"] == 640
    clock.advance(1.0)  # 5 more at 640 bits/s
    assert (await pair.b.get_key(key_stream_id=ksid, index=14))["status"] == 0
    assert (await pair.b.get_key(key_stream_id=ksid, index=15))["status"] == 2


async def test_unfetched_key_beyond_the_buffer_expires(clock: FakeClock) -> None:
    async with running_pair(rate_bps=1280, clock=clock, buffer_bits=640) as pair:
        ksid = await pair.open_both()
        clock.advance(2.0)  # 20 chunks made, the last 5 (640 bits) kept
        old = await pair.a.get_key(key_stream_id=ksid, index=0)
        assert (old["status"], old["reason"], old["oldest_index"]) == (2, "expired", 15)
        assert (await pair.a.get_key(key_stream_id=ksid, index=15))["status"] == 0


async def test_asking_faster_than_the_rate_gets_insufficient_key() -> None:
    # Real clock: 1280 bits/s is ten chunks a second; ask as fast as the socket allows.
    async with running_pair(rate_bps=1280) as pair:
        ksid = await pair.open_both()
        started = time.monotonic()
        answers = [await pair.a.get_key(key_stream_id=ksid) for _ in range(200)]
        elapsed = time.monotonic() - started
        served = [a for a in answers if a["status"] == 0]
        assert len(served) <= 10 * elapsed + 1
        assert {a["status"] for a in answers} >= {2}


async def test_get_key_waits_up_to_the_qos_timeout() -> None:
    async with running_pair(rate_bps=128_000) as pair:  # a chunk per millisecond
        ksid = await pair.open_both(timeout=2000)
        first = await pair.a.get_key(key_stream_id=ksid, index=20)
        assert len(key_bytes(first)) == 16


async def test_get_key_times_out_when_key_does_not_come() -> None:
    async with running_pair(rate_bps=8) as pair:  # a 128-bit chunk every 16 s
        ksid = await pair.open_both(timeout=50)
        answer = await asyncio.wait_for(pair.a.get_key(key_stream_id=ksid), timeout=5)
        assert (answer["status"], answer["reason"]) == (6, "timeout")
