"""Property-based fuzzing of the key relay's channel routes (prepare, commit, abort) over real
mutual TLS, node-a calling node-b of three nodes in a line: at least 1,000 generated requests
per route, from valid messages with one thing wrong, random JSON, and raw junk (the KRP fuzz
suite's generators, ``test_krp_fuzz``).

Every answer must be the channel's JSON error shape or the route's answer, never a 5xx other
than a 503 ``Unavailable``; a refused request must leave all three stores exactly as they were;
and the server must still answer afterwards."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from controllers.channel import PING_PATH
from controllers.delivery.relay_messages import ABORT_PATH, COMMIT_PATH, PREPARE_PATH
from controllers.keystore import StreamCounts
from tests.unit.delivery.conftest import Line
from tests.unit.delivery.relay_harness import stream_name
from tests.unit.delivery.test_krp_fuzz import EXAMPLES, JSON, JUNK, check_shape

AB = stream_name("node-a", "node-b")


def _uuid(n: int) -> str:
    return str(uuid.UUID(int=n))


def valid(path: str) -> dict[str, Any]:
    """A well-formed message for ``path`` (about keys node-b does not hold)."""
    if path == PREPARE_PATH:
        return {
            "relay_id": _uuid(1),
            "request_id": _uuid(2),
            "stream": AB,
            "master_sae": "alice",
            "slave_sae": "carol",
            "size_bits": 256,
            "path": ["node-a", "node-b", "node-c"],
            "hop": 1,
            "wait_ms": 1000,
            "key_ids": [_uuid(3), _uuid(4)],
        }
    if path == COMMIT_PATH:
        return {
            "relay_id": _uuid(5),
            "request_id": _uuid(6),
            "master_sae": "alice",
            "slave_sae": "carol",
            "size_bits": 256,
            "key_ids": [_uuid(7)],
            "hand_over": True,
        }
    return {"relay_id": _uuid(8)}


SEALED = {
    "pad_key_ids": [_uuid(9), _uuid(10), _uuid(11)],
    "ciphertext": base64.b64encode(bytes(64)).decode(),
    "tag": base64.b64encode(bytes(16)).decode(),
}


@st.composite
def one_thing_wrong(draw: st.DrawFn, path: str) -> bytes:
    message = valid(path)
    if path == PREPARE_PATH and draw(st.booleans()):
        message["hop"] = 2  # a later hop's shape, with the sealed part to break
        message["sealed"] = json.loads(json.dumps(SEALED))
    field = draw(st.sampled_from(sorted(message)))
    how = draw(st.sampled_from(["replace", "delete", "extra", "nested", "duplicate", "size"]))
    if how == "replace":
        message[field] = draw(
            JSON | st.sampled_from([0, 7, -8, 2**70, True, [], ["x"], 5, "bad id!", None, 10**40])
        )
    elif how == "delete":
        del message[field]
    elif how == "extra":
        message[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
    elif how == "nested" and isinstance(message[field], dict):
        inner = draw(st.sampled_from(sorted(message[field])))
        message[field][inner] = draw(JSON | st.sampled_from([[], 5, "x", "====", 2**70]))
    elif how == "nested" and isinstance(message[field], list) and message[field]:
        message[field][0] = draw(JSON)
    elif how == "duplicate" and isinstance(message[field], list) and message[field]:
        message[field] = message[field] + message[field]
    elif how == "size" and isinstance(message[field], list) and message[field]:
        message[field] = message[field] * draw(st.sampled_from([0, 17, 1001]))
    return json.dumps(message).encode()


def bodies(path: str) -> st.SearchStrategy[bytes]:
    return st.one_of(one_thing_wrong(path), JSON.map(lambda v: json.dumps(v).encode()), JUNK)


@pytest.fixture
async def session(line: Line) -> AsyncIterator[aiohttp.ClientSession]:
    """node-a's client side of the channel to node-b."""
    context = line.a.identity.client_ssl_context(server_ca_pem=line.b.ca.cert_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1)) as s:
        yield s


async def snapshot(line: Line) -> list[tuple[StreamCounts, int]]:
    out = []
    for node in line.nodes:
        for stream in await node.store.streams():
            out.append(
                (
                    await node.store.counts(stream=stream),
                    len(await node.store.outbox_due(stream=stream, limit=1000)),
                )
            )
    return out


async def post(
    session: aiohttp.ClientSession, line: Line, path: str, body: bytes
) -> tuple[int, Any]:
    async with session.post(
        line.b.server.url + path,
        data=body,
        headers={"Content-Type": "application/json"},
        server_hostname="node-b",
    ) as response:
        raw = await response.read()
        assert response.content_type == "application/json", (response.status, raw[:200])
        return response.status, json.loads(raw)


def fuzz(path: str) -> Any:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(body=bodies(path))
    async def run(line: Line, session: aiohttp.ClientSession, body: bytes) -> None:
        before = await snapshot(line)
        status, answer = await post(session, line, path, body)
        check_shape(status, answer)
        if status >= 400:
            assert await snapshot(line) == before, "a refused request changed something"
        assert line.c.handovers.received == []

    return run


test_fuzzed_prepare_messages = fuzz(PREPARE_PATH)
test_fuzzed_commit_messages = fuzz(COMMIT_PATH)
test_fuzzed_abort_messages = fuzz(ABORT_PATH)


async def test_the_server_answers_after_the_fuzzing_and_valid_messages_are_refused_or_no_ops(
    line: Line, session: aiohttp.ClientSession
) -> None:
    async with session.get(line.b.server.url + PING_PATH, server_hostname="node-b") as response:
        assert response.status == 200
    before = await snapshot(line)
    status, answer = await post(
        session, line, PREPARE_PATH, json.dumps(valid(PREPARE_PATH)).encode()
    )
    assert (status, answer["details"][0]["reason"]) == (409, "KeysNotHeld")
    status, answer = await post(session, line, COMMIT_PATH, json.dumps(valid(COMMIT_PATH)).encode())
    assert status == 200
    status, answer = await post(session, line, ABORT_PATH, json.dumps(valid(ABORT_PATH)).encode())
    assert (status, answer["dropped"]) == (200, 0)
    assert await snapshot(line) == before
