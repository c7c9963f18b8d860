"""SAE announcements between real channel nodes over mTLS on loopback: the route, and the
Announcer that pushes on change, periodically, and past unreachable peers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from controllers.channel import Peer, PeerRefused, PeerRegistry, PeerUnreachable
from controllers.saes.announce import SAES_PATH, Announcer, parse_announcement
from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import LocalSaes
from qss_api.wire import BadMessage
from tests.cluster.localcluster import free_port
from tests.unit.saes.conftest import SaeNode, StartSaeNode


async def _eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result or asyncio.get_running_loop().time() > deadline:
            assert result, "condition not met in time"
            return result
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _announcer(node: SaeNode, **kwargs: Any) -> AsyncIterator[Announcer]:
    announcer = Announcer(
        node_id=node.node_id,
        local=node.local,
        registry=node.registry,
        clients=node.clients,
        directory=node.directory,
        **kwargs,
    )
    try:
        yield announcer
    finally:
        await announcer.aclose()


async def _pair(start_sae_node: StartSaeNode) -> tuple[SaeNode, SaeNode]:
    a, b = await start_sae_node("node-a"), await start_sae_node("node-b")
    a.link(b)
    b.link(a)
    return a, b


# --- parsing -------------------------------------------------------------------------------


def test_parse_accepts_a_well_formed_announcement() -> None:
    body = json.dumps({"node": "node-a", "generation": 3, "saes": ["x", "y", "x"]})
    parsed = parse_announcement(body)
    assert (parsed.node, parsed.generation, parsed.saes) == ("node-a", 3, ("x", "y"))


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ([], ""),
        ({"generation": 1, "saes": []}, "node"),
        ({"node": "", "generation": 1, "saes": []}, "node"),
        ({"node": "Node A", "generation": 1, "saes": []}, "node"),
        ({"node": "n", "generation": True, "saes": []}, "generation"),
        ({"node": "n", "generation": -1, "saes": []}, "generation"),
        ({"node": "n", "generation": "1", "saes": []}, "generation"),
        ({"node": "n", "generation": 2**63, "saes": []}, "generation"),
        ({"node": "n", "generation": 2**64, "saes": []}, "generation"),
        ({"node": "n", "generation": 1}, "saes"),
        ({"node": "n", "generation": 1, "saes": [1]}, "saes.0"),
        ({"node": "n", "generation": 1, "saes": [""]}, "saes.0"),
        ({"node": "n", "generation": 1, "saes": ["x" * 65]}, "saes.0"),
        ({"node": "n", "generation": 1, "saes": ["ok", "bad id!"]}, "saes.1"),
        ({"node": "n", "generation": 1, "saes": [], "extra": 1}, "extra"),
    ],
)
def test_parse_refuses_malformed_announcements(body: Any, parameter: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_announcement(json.dumps(body))
    assert [p["parameter"] for p in caught.value.problems][:1] == [parameter]


# --- the route -----------------------------------------------------------------------------


async def test_peer_announcement_lands_in_the_directory(start_sae_node: StartSaeNode) -> None:
    a, b = await _pair(start_sae_node)
    answer = await b.clients.post_json(
        "node-a", SAES_PATH, {"node": "node-b", "generation": 1, "saes": ["b1"]}
    )
    assert answer == {"node": "node-a", "accepted": True, "generation": 1}
    assert a.directory.node_of("b1") == "node-b"


async def test_stale_announcement_is_not_taken_and_says_the_newest(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await _pair(start_sae_node)
    await b.clients.post_json("node-a", SAES_PATH, {"node": "node-b", "generation": 9, "saes": []})
    answer = await b.clients.post_json(
        "node-a", SAES_PATH, {"node": "node-b", "generation": 8, "saes": ["b1"]}
    )
    assert answer == {"node": "node-a", "accepted": False, "generation": 9}
    assert a.directory.node_of("b1") is None


async def test_a_node_cannot_announce_for_another_node(start_sae_node: StartSaeNode) -> None:
    a, b = await _pair(start_sae_node)
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json(
            "node-a", SAES_PATH, {"node": "node-c", "generation": 1, "saes": ["c1"]}
        )
    assert refused.value.status == 403
    assert "node node-b may only announce its own SAEs" in refused.value.message
    assert a.directory.node_of("c1") is None


async def test_malformed_announcement_is_a_400_with_a_message(start_sae_node: StartSaeNode) -> None:
    _, b = await _pair(start_sae_node)
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json("node-a", SAES_PATH, {"node": "node-b", "saes": []})
    assert refused.value.status == 400
    assert "malformed SAE announcement: generation: Field required" in refused.value.message
    assert refused.value.details == [{"parameter": "generation", "error": "Field required"}]


@pytest.mark.parametrize(
    "bad",
    [
        {"node": "node-b", "generation": 2**64, "saes": []},
        {"node": "node-b", "generation": 5, "saes": ["bad id!"]},
    ],
)
async def test_a_refused_announcement_changes_nothing_and_shuts_nobody_out(
    start_sae_node: StartSaeNode, bad: dict[str, Any]
) -> None:
    """Regression (issue 9): generation 2**64 was taken, and every real announcement after it
    was stale, so node-b's real SAEs vanished from node-a's directory."""
    a, b = await _pair(start_sae_node)
    await b.clients.post_json(
        "node-a", SAES_PATH, {"node": "node-b", "generation": 4, "saes": ["b1"]}
    )
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json("node-a", SAES_PATH, bad)
    assert refused.value.status == 400
    assert a.directory.node_of("b1") == "node-b"
    assert a.directory.generation("node-b") == 4
    answer = await b.clients.post_json(
        "node-a", SAES_PATH, {"node": "node-b", "generation": 6, "saes": ["b1", "b2"]}
    )
    assert answer["accepted"] is True
    assert a.directory.node_of("b2") == "node-b"


async def test_body_that_is_not_json_is_a_400(start_sae_node: StartSaeNode) -> None:
    a, b = await _pair(start_sae_node)
    context = b.identity.client_ssl_context(server_ca_pem=a.ca.cert_pem)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(a.server.url + SAES_PATH, data=b"{not json", server_hostname="node-a") as r,
    ):
        assert r.status == 400
        error = json.loads(await r.read())
    assert error["message"].startswith("malformed SAE announcement: the body is not valid JSON")
    assert a.directory.remote() == {}


async def test_only_channel_peers_may_announce(start_sae_node: StartSaeNode) -> None:
    a, b = await start_sae_node("node-a"), await start_sae_node("node-b")
    b.link(a)  # a does not know b: its TLS handshake fails
    with pytest.raises(PeerUnreachable):
        await b.clients.post_json(
            "node-a", SAES_PATH, {"node": "node-b", "generation": 1, "saes": ["b1"]}
        )
    assert a.directory.node_of("b1") is None


# --- the announcer -------------------------------------------------------------------------


async def test_announcer_tells_every_peer_its_saes(start_sae_node: StartSaeNode) -> None:
    a, b, c = [await start_sae_node(n) for n in ("node-a", "node-b", "node-c")]
    a.link(b, c)
    b.link(a)
    c.link(a)
    a.add_sae("a1")
    a.add_sae("a2")
    async with _announcer(a) as announcer:
        assert await announcer.announce_now() == {"node-b": True, "node-c": True}
    for peer in (b, c):
        assert peer.directory.node_of("a1") == "node-a"
        assert peer.directory.node_of("a2") == "node-a"


async def test_announcer_pushes_registrations_and_revocations_at_once(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await _pair(start_sae_node)
    async with _announcer(a, interval=3600):
        pass  # not started: nothing sent
    assert b.directory.generation("node-a") is None
    async with _announcer(a, interval=3600) as announcer:
        announcer.start()
        await _eventually(lambda: b.directory.generation("node-a") is not None)
        a.add_sae("a1")
        await _eventually(lambda: b.directory.node_of("a1") == "node-a")
        a.local.unregister(sae_id="a1", namespace="apps", name="a1")
        await _eventually(lambda: b.directory.node_of("a1") is None)


async def test_announcer_repeats_periodically_so_a_forgetful_peer_relearns(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await _pair(start_sae_node)
    a.add_sae("a1")
    async with _announcer(a, interval=0.1) as announcer:
        announcer.start()
        await _eventually(lambda: b.directory.node_of("a1") == "node-a")
        b.directory.forget("node-a")  # as if b had lost its state
        await _eventually(lambda: b.directory.node_of("a1") == "node-a")


async def test_new_peer_hears_at_once_and_departed_peer_is_forgotten(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await start_sae_node("node-a"), await start_sae_node("node-b")
    b.link(a)
    a.add_sae("a1")
    a.directory.record("node-b", ["b1"], 1)
    async with _announcer(a, interval=3600) as announcer:
        announcer.start()
        await asyncio.sleep(0.05)
        a.link(b)  # a QKDLink to b appears
        await _eventually(lambda: b.directory.node_of("a1") == "node-a")
        a.link()  # and goes away again
        assert a.directory.node_of("b1") is None


async def test_unreachable_peer_is_logged_once_and_retried(
    start_sae_node: StartSaeNode, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await start_sae_node("node-a"), await start_sae_node("node-b")
    b.link(a)
    dead_end = Peer(
        node_id="node-b",
        endpoint=f"https://127.0.0.1:{free_port()}",  # nothing listens there
        ca_pems=(b.ca.cert_pem,),
        links=("link-node-b",),
    )
    a.registry.replace({"node-b": dead_end})
    a.add_sae("a1")
    async with _announcer(a, interval=3600) as announcer:
        with caplog.at_level(logging.INFO, logger="controllers.saes.announce"):
            assert await announcer.announce_now() == {"node-b": False}
            assert await announcer.announce_now() == {"node-b": False}
            a.link(b)  # b reachable now
            assert await announcer.announce_now() == {"node-b": True}
    warnings = [r for r in caplog.records if "cannot announce SAEs to node node-b" in r.message]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].message
    assert "announcing SAEs to node node-b works again" in caplog.text
    assert b.directory.node_of("a1") == "node-a"


async def test_generations_increase_even_when_the_clock_does_not(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await _pair(start_sae_node)
    async with _announcer(a, clock=lambda: 1000) as announcer:
        for expected in (1000, 1001, 1002):
            await announcer.announce_now()
            assert b.directory.generation("node-a") == expected


async def test_announcer_catches_up_after_its_clock_went_back(start_sae_node: StartSaeNode) -> None:
    a, b = await _pair(start_sae_node)
    b.directory.record("node-a", [], 10**6)  # from before a restart with a faster clock
    a.add_sae("a1")
    async with _announcer(a, clock=lambda: 5) as announcer:
        assert await announcer.announce_now() == {"node-b": False}
        assert await announcer.announce_now() == {"node-b": True}
    assert b.directory.node_of("a1") == "node-a"


async def test_announcer_without_peers_does_nothing_harmful() -> None:
    class NoCalls:
        async def post_json(self, node_id: str, path: str, payload: Any) -> Any:
            raise AssertionError("no peer to call")

        async def get_json(self, node_id: str, path: str) -> Any:
            raise AssertionError("no peer to call")

    local = LocalSaes()
    announcer = Announcer(
        node_id="node-a",
        local=local,
        registry=PeerRegistry(local_node_id="node-a"),
        clients=NoCalls(),
        directory=SaeDirectory(local_node_id="node-a", local=local),
    )
    announcer.start()
    assert await announcer.announce_now() == {}
    await announcer.aclose()
    await announcer.aclose()  # twice is fine


async def test_a_started_node_asks_its_neighbours_for_their_saes_at_once(
    start_sae_node: StartSaeNode,
) -> None:
    """Regression (issue 9): after a restart, a node knew its neighbours' SAEs only with their
    next periodic announcement, up to 30 s later."""
    a, b = await _pair(start_sae_node)
    b.add_sae("b1")
    # node-b announces only every hour: what node-a learns, it learns by asking.
    async with _announcer(a, interval=3600) as announcer:
        assert not a.directory.is_known_absent("nobody")  # node-b not heard from yet
        announcer.start()
        await _eventually(lambda: a.directory.node_of("b1") == "node-b")
        assert a.directory.heard_from("node-b")
        assert a.directory.is_known_absent("nobody")
        assert not a.directory.is_known_absent("b1")


async def test_an_unreachable_neighbour_keeps_unknown_saes_not_known_yet(
    start_sae_node: StartSaeNode,
) -> None:
    a, b = await _pair(start_sae_node)
    await b.server.close()  # node-b is down
    async with _announcer(a, interval=3600) as announcer:
        await announcer.announce_now()
        assert not a.directory.heard_from("node-b")
        assert not a.directory.is_known_absent("b1")
