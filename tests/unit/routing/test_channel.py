"""The routing protocol over the real inter-node channel: RoutingServices on loopback, mutual
TLS between them, requests decoded at the edge. The S packets carry SAEs to every node (what
the one-hop SAE announcements did for neighbours), and the hello is the channel's heartbeat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from controllers import pki
from controllers.channel import (
    ChannelServer,
    Peer,
    PeerClients,
    PeerRefused,
    PeerRegistry,
    init_channel_app,
)
from controllers.identity import NodeIdentity
from controllers.routing.channel import RoutingService
from controllers.routing.messages import EXCHANGE_PATH, FLOOD_PATH, HELLO_PATH
from controllers.routing.settings import RoutingSettings
from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import LocalSaes
from tests.unit.identities import node_identity

FAST = RoutingSettings(
    hello_interval=0.2,
    dead_interval=1.5,
    lsa_lifetime=60,
    refresh_interval=20.0,
    min_origination_interval=0.1,
    max_origination_hold=0.5,
    spf_delay=0.01,
    pending_hold=2.0,
    request_timeout=3.0,
)


async def _eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result or asyncio.get_running_loop().time() > deadline:
            assert result, "condition not met in time"
            return result
        await asyncio.sleep(0.05)


@dataclass
class Node:
    ca: pki.Credentials
    identity: NodeIdentity
    local: LocalSaes
    directory: SaeDirectory
    registry: PeerRegistry
    clients: PeerClients
    server: ChannelServer
    routing: RoutingService

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def entry(self) -> Peer:
        return Peer(
            node_id=self.node_id,
            endpoint=self.server.url,
            ca_pems=(self.ca.cert_pem,),
            links=(f"to-{self.node_id}",),
        )

    def link(self, *others: Node) -> None:
        self.registry.replace({o.node_id: o.entry() for o in others})

    def add_sae(self, sae_id: str) -> None:
        issued = pki.issue_sae_certificate(self.ca, sae_id)
        self.local.register(
            sae_id=sae_id,
            namespace="apps",
            name=sae_id,
            created="2026-01-01T00:00:00Z",
            certificate=issued.cert_pem,
            ca_pem=self.ca.cert_pem,
        )


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start() -> AsyncIterator[StartNode]:
    started: list[Node] = []

    async def start_node(node_id: str, *, ca: pki.Credentials | None = None) -> Node:
        ca = ca or pki.create_ca(f"{node_id} CA")
        identity = node_identity(ca, node_id)
        local = LocalSaes()
        directory = SaeDirectory(local_node_id=node_id, local=local)
        registry = PeerRegistry(local_node_id=node_id)
        clients = PeerClients(identity=identity, registry=registry, timeout=5.0)
        routing = RoutingService(
            node_id=node_id,
            settings=FAST,
            registry=registry,
            clients=clients,
            local=local,
            directory=directory,
        )
        app = init_channel_app(
            identity=identity, registry=registry, routes=[routing.channel_routes()]
        )
        server = ChannelServer(app, host="127.0.0.1", port=0)
        await server.start()
        routing.start()
        node = Node(ca, identity, local, directory, registry, clients, server, routing)
        started.append(node)
        return node

    yield start_node
    for node in started:
        await node.routing.aclose()
        await node.clients.aclose()
        await node.server.close()


async def _line(start: StartNode) -> tuple[Node, Node, Node]:
    a, b, c = [await start(n) for n in ("node-a", "node-b", "node-c")]
    a.link(b)
    b.link(a, c)
    c.link(b)
    return a, b, c


async def test_three_nodes_in_a_line_learn_each_others_saes_and_paths(start: StartNode) -> None:
    a, _b, c = await _line(start)
    c.add_sae("carol")
    a.add_sae("alice")
    route = await _eventually(lambda: a.routing.route_to("carol"))
    assert route.path == ("node-a", "node-b", "node-c")
    assert route.next_hop == "node-b"
    assert route.hops == 2
    assert route.cost == 200_000  # two links at c0 = 100: no QKDLink cost known yet
    assert a.directory.node_of("carol") == "node-c"
    back = await _eventually(lambda: c.routing.route_to("alice"))
    assert back.path == ("node-c", "node-b", "node-a")
    local = a.routing.route_to("alice")
    assert local is not None
    assert local.path == ("node-a",)
    assert local.next_hop is None
    assert set(a.routing.route_objects()) == {"alice", "carol"}


async def test_registrations_and_removals_travel_at_once(start: StartNode) -> None:
    a, _, c = await _line(start)
    await _eventually(lambda: a.routing.router.path_to("node-c"))
    c.add_sae("late")
    await _eventually(lambda: a.directory.node_of("late") == "node-c")
    c.local.unregister(sae_id="late", namespace="apps", name="late")
    await _eventually(lambda: a.directory.node_of("late") is None)


async def test_link_costs_from_the_qkdlinks_steer_the_paths(start: StartNode) -> None:
    a, b, c = await _line(start)
    a.link(b, c)
    c.link(b, a)
    direct = await _eventually(lambda: a.routing.router.path_to("node-c"))
    assert direct.nodes == ("node-a", "node-c")
    # The a-c link is nearly empty (equation 2 near c0), the others full.
    for node, peer, cost in ((a, b, 50.0), (b, a, 50.0), (b, c, 50.0), (c, b, 50.0)):
        node.routing.link_changed(f"{peer.node_id}", _qkdlink(peer.node_id, cost))
    a.routing.link_changed("a-c", _qkdlink("node-c", 120.0))
    path = await _eventually(
        lambda: (p := a.routing.router.path_to("node-c")) and p.hops == 2 and p
    )
    assert path.nodes == ("node-a", "node-b", "node-c")
    assert path.cost == 100_000


def _qkdlink(peer: str, cost: float) -> dict[str, Any]:
    return {"spec": {"peerNodeID": peer}, "status": {"cost": cost}}


async def test_a_peer_that_stops_answering_is_dropped_and_its_error_kept(start: StartNode) -> None:
    a, b, c = await _line(start)
    c.add_sae("carol")
    await _eventually(lambda: a.routing.route_to("carol"))
    await b.routing.aclose()
    await b.server.close()
    await _eventually(lambda: "node-b" in a.routing.last_error)
    assert "node-b" in a.routing.last_error["node-b"].message
    await _eventually(lambda: a.routing.route_to("carol") is None)
    assert a.directory.node_of("carol") == "node-c"  # known until its LSAs expire


async def test_a_malformed_request_is_a_400_in_json_and_counted(start: StartNode) -> None:
    a, b, _ = await _line(start)
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json("node-a", FLOOD_PATH, {"forwarder": "node-b", "lsas": [{}]})
    assert refused.value.status == 400
    assert "malformed routing flood" in refused.value.message
    assert refused.value.details
    assert "parameter" in refused.value.details[0]
    assert a.routing.stats.drops_from("node-b").counts["malformed"] == 1
    context = b.identity.client_ssl_context(server_ca_pem=a.ca.cert_pem)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(a.server.url + HELLO_PATH, data=b"[" * 5000, server_hostname="node-a") as r,
    ):
        assert r.status == 400
        assert "message" in json.loads(await r.read())


async def test_a_node_may_only_speak_for_itself(start: StartNode) -> None:
    _, b, _ = await _line(start)
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json(
            "node-a",
            HELLO_PATH,
            {"version": 1, "node": "node-c", "key": b.routing.router.hello.key},
        )
    assert refused.value.status == 403
    assert "node node-b may only speak for itself" in refused.value.message
    hello = {"version": 1, "node": "node-c", "key": b.routing.router.hello.key}
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json("node-a", EXCHANGE_PATH, {"hello": hello, "lsas": []})
    assert refused.value.status == 403
    with pytest.raises(PeerRefused) as refused:
        await b.clients.post_json("node-a", FLOOD_PATH, {"forwarder": "node-c", "lsas": []})
    assert refused.value.status == 403


async def test_a_restarted_neighbour_is_resynchronised(start: StartNode) -> None:
    a, b, c = await _line(start)
    c.add_sae("carol")
    await _eventually(lambda: a.routing.route_to("carol"))
    old_key = b.routing.router.key.public
    # b's controller restarts: same CA, a new routing key and an empty database.
    await b.routing.aclose()
    await b.server.close()
    b2 = await start("node-b", ca=b.ca)
    b2.link(a, c)
    a.link(b2)
    c.link(b2)
    assert b2.routing.router.key.public != old_key
    route = await _eventually(lambda: b2.routing.route_to("carol"))
    assert route.path == ("node-b", "node-c")
    await _eventually(lambda: a.routing.route_to("carol"))
    # a now holds b's LSAs signed with the new key only, and dropped nothing on the way.
    keys = {x.key for x in a.routing.router.database() if x.source == "node-b"}
    assert keys == {b2.routing.router.key.public}
    assert not a.routing.stats.drops


async def test_an_sae_is_unknown_for_good_once_every_neighbour_has_exchanged(
    start: StartNode,
) -> None:
    a, b, c = await _line(start)
    assert not a.directory.is_known_absent("nobody")  # nothing heard yet: "not known yet"
    # b is a repeater without SAEs (no S packet); its database exchange is what tells a.
    await _eventually(lambda: a.directory.is_known_absent("nobody"))
    assert ("node-b", "S") not in {x.ident for x in a.routing.router.database()}
    # A new neighbour that cannot answer (it has no QKDLink to a) makes it "not known yet".
    d = await start("node-d")
    a.link(b, d)
    assert not a.directory.is_known_absent("nobody")
    c.add_sae("carol")
    await _eventually(lambda: a.directory.node_of("carol") == "node-c")
    assert not a.directory.is_known_absent("carol")
