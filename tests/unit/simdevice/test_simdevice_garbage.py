"""Garbage on the socket gets a clear error response; the device keeps serving."""

from __future__ import annotations

import json

import pytest

from device_plugin.simdevice.client import DeviceClient
from device_plugin.simdevice.server import MAX_LINE
from tests.unit.simdevice.helpers import Pair


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"hello\n", "not a JSON object"),
        (b"\xff\xfe\n", "not a JSON object"),
        (b"[1, 2]\n", "JSON object with an 'op'"),
        (b"{}\n", "unknown op None"),
        (b'{"op": "DESTROY"}\n', "unknown op 'DESTROY'"),
        (b'{"op": "GET_KEY"}\n', "key_stream_ID must be"),
        (b'{"op": "GET_KEY", "key_stream_ID": "k", "index": -1}\n', "index must be"),
        (b'{"op": "GET_KEY", "key_stream_ID": "k", "index": NaN}\n', "not a JSON object"),
        (b'{"op": "GET_KEY", "key_stream_ID": "k", "idx": 1}\n', "does not take the field(s) idx"),
        (b'{"op": "OPEN_CONNECT", "source": "a"}\n', "destination must be"),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b", "qos": {"max_bps": "1"}}\n',
            "qos.max_bps must be",
        ),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b", "qos": {"speed": 1}}\n',
            "qos does not take the field(s) speed",
        ),
        (
            b'{"op": "OPEN_CONNECT", "source": "a", "destination": "b",'
            b' "qos": {"key_chunk_size": 0}}\n',
            "qos.key_chunk_size must be",
        ),
        (b'{"op": "HEALTH", "verbose": true}\n', "does not take"),
        (b"[" * 10_000 + b"\n", "not a JSON object"),
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
    client = await DeviceClient.connect(pair.socket_a)
    try:
        answer = await client.send_raw(b"x" * (MAX_LINE + 10) + b"\n")
        assert (answer["status"], answer["reason"]) == (-1, "bad_request")
        assert "longer than" in answer["message"]
        with pytest.raises(ConnectionError):
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
