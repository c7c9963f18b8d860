"""Faults switched at run time through FAULT: link down and up, rate, QBER above threshold."""

from __future__ import annotations

from tests.unit.simdevice.helpers import FakeClock, Pair, key_bytes


async def test_link_down_stops_key_and_link_up_resumes_it(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both()
    clock.advance(1.0)
    before = key_bytes(await pair.a.get_key(key_stream_id=ksid, index=0))

    down = await pair.b.fault(link_down=True)
    assert down["link_up"] is False
    assert (await pair.a.health())["healthy"] is False
    for end in (pair.a, pair.b):
        answer = await end.get_key(key_stream_id=ksid, index=0)
        assert (answer["status"], answer["reason"]) == (4, "link_down")
    assert (await pair.a.open_connect())["status"] == 4
    clock.advance(10.0)  # no key is made while the link is down

    await pair.a.fault(link_down=False)
    assert (await pair.b.health())["healthy"] is True
    assert key_bytes(await pair.b.get_key(key_stream_id=ksid, index=0)) == before
    assert (await pair.a.get_key(key_stream_id=ksid, index=9))["status"] == 0
    assert (await pair.a.get_key(key_stream_id=ksid, index=10))["status"] == 2


async def test_qber_above_threshold_aborts_streams(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both()
    clock.advance(1.0)
    high = await pair.a.fault(qber=0.2)
    assert high["streams"][0]["aborted"] is True
    assert (await pair.b.health())["healthy"] is False
    assert (await pair.a.get_key(key_stream_id=ksid))["status"] == 4
    refused = await pair.a.open_connect()
    assert (refused["status"], refused["reason"]) == (4, "qber_too_high")

    await pair.a.fault(qber=0.02)
    # The aborted stream stays aborted: its key may be compromised.
    aborted = await pair.b.get_key(key_stream_id=ksid, index=0)
    assert (aborted["status"], aborted["reason"]) == (4, "aborted")
    assert (await pair.a.open_connect(key_stream_id=ksid))["status"] == 5
    # Closing it frees its KSID slot and rate; a new stream works.
    assert (await pair.a.close_stream(key_stream_id=ksid))["status"] == 0
    assert (await pair.b.close_stream(key_stream_id=ksid))["status"] == 0
    fresh = await pair.open_both()
    clock.advance(1.0)
    assert (await pair.a.get_key(key_stream_id=fresh))["status"] == 0


async def test_fault_with_bad_values_is_refused_and_changes_nothing(pair: Pair) -> None:
    for bad in ({"link_down": "yes"}, {"rate_bps": -5}, {"qber": 2}, {"qber": True}, {"lnk": 1}):
        answer = await pair.a.fault(**bad)
        assert answer["status"] == -1, bad
    health = await pair.a.health()
    assert (health["link_up"], health["rate_bps"], health["qber"]) == (True, 1280, 0.01)


async def test_fault_without_fields_reports_the_state(pair: Pair) -> None:
    state = await pair.a.fault()
    assert (state["status"], state["end"], state["link_up"]) == (0, "A", True)
