"""OPEN_CONNECT, GET_KEY and CLOSE status codes, as ETSI GS QKD 004 defines them."""

from __future__ import annotations

import uuid

from tests.unit.simdevice.helpers import FakeClock, Pair, key_bytes


async def test_first_end_to_open_gets_peer_not_connected(pair: Pair) -> None:
    opened = await pair.a.open_connect()
    assert opened["status"] == 1
    assert uuid.UUID(opened["key_stream_ID"])
    assert opened["qos"]["max_bps"] == 1280


async def test_get_key_before_the_peer_opens_is_peer_not_connected(
    pair: Pair, clock: FakeClock
) -> None:
    ksid = (await pair.a.open_connect())["key_stream_ID"]
    clock.advance(10)
    answer = await pair.a.get_key(key_stream_id=ksid)
    assert (answer["status"], answer["reason"]) == (3, "peer_not_connected")


async def test_caller_chosen_ksid_is_kept(pair: Pair) -> None:
    ksid = str(uuid.uuid4())
    assert (await pair.a.open_connect(key_stream_id=ksid))["key_stream_ID"] == ksid


async def test_opening_a_ksid_twice_at_one_end_is_ksid_in_use(pair: Pair) -> None:
    ksid = await pair.open_both()
    again = await pair.a.open_connect(key_stream_id=ksid)
    assert (again["status"], again["reason"]) == (5, "ksid_in_use")


async def test_unknown_ksid_is_no_qkd_connection(pair: Pair) -> None:
    answer = await pair.a.get_key(key_stream_id="no-such-stream")
    assert (answer["status"], answer["reason"]) == (4, "unknown_ksid")
    closed = await pair.a.close_stream(key_stream_id="no-such-stream")
    assert (closed["status"], closed["reason"]) == (4, "unknown_ksid")


async def test_max_bps_above_the_device_rate_is_qos_not_met(pair: Pair) -> None:
    answer = await pair.a.open_connect(qos={"max_bps": 1281})
    assert (answer["status"], answer["reason"], answer["device_bps"]) == (
        7,
        "rate_unavailable",
        1280,
    )


async def test_streams_share_the_rate_and_cannot_overbook_it(pair: Pair) -> None:
    assert (await pair.a.open_connect(qos={"max_bps": 1000}))["status"] == 1
    over = await pair.a.open_connect(qos={"max_bps": 500})
    assert (over["status"], over["free_bps"]) == (7, 280)
    rest = await pair.a.open_connect()
    assert (rest["status"], rest["qos"]["max_bps"]) == (1, 280)
    assert (await pair.a.open_connect())["status"] == 7


async def test_min_bps_that_cannot_be_met_is_qos_not_met(pair: Pair) -> None:
    assert (await pair.a.open_connect(qos={"min_bps": 2000}))["status"] == 7
    assert (await pair.a.open_connect(qos={"min_bps": 100, "max_bps": 50}))["status"] == 7


async def test_peer_with_another_chunk_size_is_qos_not_met(pair: Pair) -> None:
    ksid = (await pair.a.open_connect(qos={"key_chunk_size": 16}))["key_stream_ID"]
    answer = await pair.b.open_connect(key_stream_id=ksid, qos={"key_chunk_size": 32})
    assert (answer["status"], answer["reason"]) == (7, "chunk_size_mismatch")


async def test_small_metadata_size_is_metadata_insufficient(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both()
    clock.advance(1)
    answer = await pair.a.get_key(key_stream_id=ksid, metadata_size=4)
    assert answer["status"] == 8
    assert answer["metadata_size"] > 4
    assert "key_buffer" not in answer
    enough = await pair.a.get_key(key_stream_id=ksid, metadata_size=answer["metadata_size"])
    assert enough["status"] == 0


async def test_after_the_peer_closes_get_key_is_peer_not_connected(
    pair: Pair, clock: FakeClock
) -> None:
    ksid = await pair.open_both()
    clock.advance(1)
    assert (await pair.b.close_stream(key_stream_id=ksid))["status"] == 0
    assert (await pair.a.get_key(key_stream_id=ksid))["status"] == 3
    # The closed end may come back (a restarted QKDM) and the stream carries on.
    assert (await pair.b.open_connect(key_stream_id=ksid))["status"] == 0
    assert (await pair.a.get_key(key_stream_id=ksid))["status"] == 0


async def test_ksid_closed_at_both_ends_is_never_reopened(pair: Pair) -> None:
    ksid = await pair.open_both()
    await pair.a.close_stream(key_stream_id=ksid)
    await pair.b.close_stream(key_stream_id=ksid)
    again = await pair.a.open_connect(key_stream_id=ksid)
    assert (again["status"], again["reason"]) == (5, "ksid_retired")


async def test_closing_frees_the_rate_for_new_streams(pair: Pair) -> None:
    ksid = await pair.open_both()
    assert (await pair.a.open_connect())["status"] == 7
    await pair.a.close_stream(key_stream_id=ksid)
    await pair.b.close_stream(key_stream_id=ksid)
    assert (await pair.a.open_connect())["status"] == 1


async def test_request_id_is_echoed(pair: Pair) -> None:
    answer = await pair.a.request({"op": "HEALTH", "id": 42})
    assert answer["id"] == 42


# -- bulk GET_KEY and the peer's waiting streams (qss_api.qkd004's extensions) ----------------


async def test_get_key_with_a_count_returns_that_run_of_chunks(
    pair: Pair, clock: FakeClock
) -> None:
    ksid = await pair.open_both(key_chunk_size=16)
    clock.advance(1.0)  # ten chunks
    run = await pair.a.get_key(key_stream_id=ksid, index=2, count=5)
    assert (run["status"], run["index"], run["count"]) == (0, 2, 5)
    one_by_one = [key_bytes(await pair.b.get_key(key_stream_id=ksid, index=i)) for i in range(2, 7)]
    assert key_bytes(run) == b"".join(one_by_one)
    # Without an index, the end goes on after the run.
    assert (await pair.a.get_key(key_stream_id=ksid))["index"] == 7


async def test_a_run_stops_at_what_has_been_generated(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both(key_chunk_size=16)
    clock.advance(0.35)  # three chunks
    run = await pair.a.get_key(key_stream_id=ksid, index=1, count=100)
    assert (run["index"], run["count"], len(key_bytes(run))) == (1, 2, 32)


async def test_peer_not_connected_lists_the_streams_the_peer_waits_on(pair: Pair) -> None:
    half = {"max_bps": 640}  # two streams share the pair's 1280 bits/s
    theirs = (await pair.a.open_connect(qos=half, key_stream_id=str(uuid.uuid4())))["key_stream_ID"]
    mine = await pair.b.open_connect(
        source="qkdm-b", destination="qkdm-a", qos=half, key_stream_id=str(uuid.uuid4())
    )
    assert mine["status"] == 1
    assert mine["peer_key_stream_IDs"] == [theirs]
    answer = await pair.b.get_key(key_stream_id=mine["key_stream_ID"])
    assert (answer["status"], answer["peer_key_stream_IDs"]) == (3, [theirs])
    # Once B joins A's stream it is no longer waiting for B.
    await pair.b.open_connect(source="qkdm-b", destination="qkdm-a", qos=half, key_stream_id=theirs)
    assert (await pair.b.get_key(key_stream_id=mine["key_stream_ID"]))["peer_key_stream_IDs"] == []


async def test_a_refused_open_lists_the_streams_the_peer_waits_on(pair: Pair) -> None:
    """No rate is left for a new stream (the peer's waiting one took it all): the refusal says
    which stream to join instead."""
    theirs = (await pair.a.open_connect(key_stream_id=str(uuid.uuid4())))["key_stream_ID"]
    refused = await pair.b.open_connect(
        source="qkdm-b", destination="qkdm-a", key_stream_id=str(uuid.uuid4())
    )
    assert (refused["status"], refused["reason"]) == (7, "rate_unavailable")
    assert refused["peer_key_stream_IDs"] == [theirs]
