"""The channel client's failures, each with a message that says what is wrong: a peer that is
down or silent, a server that is not the expected node, and errors the peer answers with."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from controllers.channel import (
    Peer,
    PeerCertificateError,
    PeerClient,
    PeerRefused,
    PeerUnreachable,
    UnknownPeer,
)
from tests.unit.channel.conftest import StartNode


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes TCP handshakes but where nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_peer_down_is_unreachable_at_once(start_node: StartNode, closed_port: int) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link_to("node-b", endpoint=f"https://127.0.0.1:{closed_port}", ca_pem=b.ca.cert_pem)
    started = time.monotonic()
    with pytest.raises(
        PeerUnreachable, match=f"peer node node-b at https://127.0.0.1:{closed_port} is unreachable"
    ):
        await a.clients.ping("node-b")
    assert time.monotonic() - started < 1.0


async def test_silent_peer_is_unreachable_within_the_timeout(
    start_node: StartNode, silent_port: int
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    peer = Peer(
        node_id="node-b",
        endpoint=f"https://127.0.0.1:{silent_port}",
        ca_pems=(b.ca.cert_pem,),
        links=("l",),
    )
    started = time.monotonic()
    async with PeerClient(identity=a.identity, peer=peer, timeout=0.5, connect_timeout=0.3) as c:
        with pytest.raises(
            PeerUnreachable, match=r"did not answer in time \(connect timeout 0\.3s, total 0\.5s\)"
        ):
            await c.ping()
    assert time.monotonic() - started < 1.5


async def test_server_that_is_not_the_expected_node_is_refused_by_the_client(
    start_node: StartNode,
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    # node-a's link says node-c listens where node-a's own neighbour node-b does, with node-b's
    # CA: the CA verifies, but the certificate names node-b, not node-c.
    await a.link_to("node-c", endpoint=b.server.url, ca_pem=b.ca.cert_pem)
    with pytest.raises(PeerCertificateError) as excinfo:
        await a.clients.ping("node-c")
    message = str(excinfo.value)
    assert "does not verify as node node-c" in message
    assert "Hostname mismatch" in message
    assert isinstance(excinfo.value, PeerUnreachable)  # callers may treat it as unreachable


async def test_server_signed_by_another_ca_is_refused_by_the_client(
    start_node: StartNode,
) -> None:
    a, b, c = await start_node("node-a"), await start_node("node-b"), await start_node("node-c")
    await a.link_to("node-b", endpoint=b.server.url, ca_pem=c.ca.cert_pem)
    with pytest.raises(PeerCertificateError, match="unable to get local issuer certificate"):
        await a.clients.ping("node-b")


async def test_unknown_peer_is_named_in_the_error(start_node: StartNode) -> None:
    a = await start_node("node-a")
    with pytest.raises(UnknownPeer, match="no QKDLink of this node names peer node node-z"):
        await a.clients.post_json("node-z", "/test/echo", {})


async def test_peer_errors_come_back_as_peer_refused_with_the_peers_message(
    start_node: StartNode,
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    await b.link(a)

    with pytest.raises(PeerRefused) as excinfo:
        await a.clients.get_json("node-b", "/test/bad")
    assert excinfo.value.status == 400
    assert "the request was bad in a specific way" in str(excinfo.value)

    with pytest.raises(PeerRefused) as excinfo:
        await a.clients.get_json("node-b", "/test/boom")
    assert excinfo.value.status == 500
    assert "internal error" in str(excinfo.value)
    assert "internal detail" not in str(excinfo.value)

    with pytest.raises(PeerRefused) as excinfo:
        await a.clients.get_json("node-b", "/no/such/path")
    assert excinfo.value.status == 404

    with pytest.raises(PeerRefused, match=r"but not JSON \(text/plain\)"):
        await a.clients.get_json("node-b", "/test/text")


async def test_changed_link_replaces_the_client_and_removed_link_forgets_it(
    start_node: StartNode,
) -> None:
    a, b = await start_node("node-a"), await start_node("node-b")
    await a.link(b)
    await b.link(a)
    first = await a.clients.client("node-b")
    assert await a.clients.ping("node-b")
    await a.link_to("node-b", endpoint=b.server.url + "/", ca_pem=b.ca.cert_pem)
    second = await a.clients.client("node-b")
    assert second is not first
    with pytest.raises(PeerUnreachable, match="client was closed"):
        await first.ping()
    assert await a.clients.ping("node-b")
    await a.unlink("node-a-to-node-b")
    with pytest.raises(UnknownPeer):
        await a.clients.ping("node-b")
