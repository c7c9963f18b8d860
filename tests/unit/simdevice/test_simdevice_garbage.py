"""Garbage on the socket gets a clear error response; the device keeps serving."""

from __future__ import annotations

import asyncio
import json

import pytest

from device_plugin.simdevice.server import MAX_LINE
from qss_api.qkd004_client import DeviceUnavailable
from tests.unit.simdevice.helpers import Pair, RawDevice, running_pair
from tests.waiting import eventually_async


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"hello\n", "not valid JSON"),
        (b"\xff\xfe\n", "not valid JSON"),
        (b"[1, 2]\n", "Input should be an object"),
        (b"{}\n", "the request needs an 'op'"),
        (b'{"op": "DESTROY"}\n', "Input tag 'DESTROY' found using 'op' does not match"),
        (b'{"op": "GET_KEY"}\n', "GET_KEY.key_stream_ID: Field required"),
        (
            b'{"op": "GET_KEY", "key_stream_ID": "k", "index": -1}\n',
            "GET_KEY.index: Input should be greater than or equal to 0",
        ),
        (
            b'{"op": "GET_KEY", "key_stream_ID": "k", "index": NaN}\n',
            "GET_KEY.index: Input should be a valid integer",
        ),
        (
            b'{"op": "GET_KEY", "key_stream_ID": "k", "idx": 1}\n',
            "GET_KEY.idx: Extra inputs are not permitted",
        ),
        (b'{"op": "OPEN_CONNECT", "source": "a"}\n', "OPEN_CONNECT.destination: Field required"),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b", "qos": {"max_bps": "1"}}\n',
            "OPEN_CONNECT.qos.max_bps: Input should be a valid integer",
        ),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b", "qos": {"speed": 1}}\n',
            "OPEN_CONNECT.qos.speed: Extra inputs are not permitted",
        ),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b",'
            b' "qos": {"key_chunk_size": 0}}\n',
            "OPEN_CONNECT.qos.key_chunk_size: Input should be greater than or equal to 1",
        ),
        (b'{"op": "HEALTH", "verbose": true}\n', "Extra inputs are not permitted"),
        (b"[" * 10_000 + b"\n", "not valid JSON"),
    ],
)
async def test_garbage_gets_a_bad_request_answer(pair: Pair, line: bytes, says: str) -> None:
    answer = await pair.a.send_raw(line)
    assert (answer["status"], answer["reason"]) == (-1, "bad_request")
    assert says in answer["message"]
    assert (await pair.a.health())["healthy"] is True


async def test_blank_lines_are_skipped(pair: Pair) -> None:
    assert (await pair.a.send_raw(b'\n\n{"op": "HEALTH"}\n'))["status"] == 0


async def test_overlong_line_is_refused_and_only_that_connection_closed(pair: Pair) -> None:
    client = await RawDevice.connect(pair.socket_a)
    try:
        answer = await client.send_raw(b"x" * (MAX_LINE + 10) + b"\n")
        assert (answer["status"], answer["reason"]) == (-1, "bad_request")
        assert "longer than" in answer["message"]
        with pytest.raises(DeviceUnavailable):
            await client.health()
    finally:
        await client.aclose()
    assert (await pair.a.health())["healthy"] is True


async def test_answers_come_in_request_order_when_pipelined(pair: Pair) -> None:
    answers = await pair.a.pipeline(
        [{"op": "HEALTH", "id": i} if i % 2 else {"op": "NOPE", "id": i} for i in range(6)]
    )
    assert [a["id"] for a in answers] == list(range(6))
    assert [a["status"] for a in answers] == [-1, 0, -1, 0, -1, 0]
    json.dumps(answers)


async def test_a_request_cancelled_before_its_reply_leaves_no_reply_to_the_next() -> None:
    async with running_pair(rate_bps=8) as pair:  # a 128-bit chunk every 16 s
        ksid = await pair.open_both(timeout=5000)
        client = pair.a.client
        waiting = asyncio.create_task(client.get_keys(ksid=ksid, index=3))

        async def sent() -> bool:
            # The request is written as the exchange starts; its reply comes in 5 s at most.
            return client._lock.locked()

        await eventually_async(sent, what="the GET_KEY on the wire")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The GET_KEY's late answer must not be read as the answer to this.
        state = await client.health()
        assert (state.end, state.link_up) == ("A", True)
