"""Real QSS channel nodes on loopback for the channel tests: each node has its own CA, node
certificate, peer registry, HTTPS server on a free port and peer clients.

A node's QKDLinks and the CA Secrets they name are plain dicts here (the API server plays no
part in the channel); ``Node.link_to`` adds a link the way the QKDLink handlers will, through
``PeerRegistry.update_from_links``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from controllers import pki
from controllers.channel import (
    ChannelServer,
    LinkProblem,
    PeerClients,
    PeerRefusals,
    PeerRegistry,
    init_channel_app,
    peer_node,
)
from controllers.identity import NodeIdentity
from tests.unit.identities import node_identity

# Short enough that the failure tests stay fast, long enough for a loaded CI machine.
TIMEOUT = 10.0  # generous: the suite shares 2 cores with clusters and devices

routes = web.RouteTableDef()


@routes.post("/test/echo")
async def echo(request: web.Request) -> web.Response:
    return web.json_response({"peer": peer_node(request), "payload": await request.json()})


@routes.get("/test/boom")
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("internal detail that must stay on this node")


@routes.get("/test/bad")
async def bad(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(text="the request was bad in a specific way")


@routes.get("/test/text")
async def text(request: web.Request) -> web.Response:
    return web.Response(text="not json")


@dataclass
class Node:
    ca: pki.Credentials
    identity: NodeIdentity
    registry: PeerRegistry
    refusals: PeerRefusals
    server: ChannelServer
    clients: PeerClients
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def read_ca(self, secret: str) -> bytes | None:
        return self.secrets.get(secret)

    async def sync(self) -> list[LinkProblem]:
        return await self.registry.update_from_links(self.links.values(), self.read_ca)

    async def link_to(
        self,
        node_id: str,
        *,
        endpoint: str,
        ca_pem: bytes,
        name: str | None = None,
    ) -> list[LinkProblem]:
        """Add a QKDLink to ``node_id`` with its CA in a Secret, as an operator would."""
        name = name or f"{self.node_id}-to-{node_id}"
        self.secrets[f"{name}-ca"] = ca_pem
        self.links[name] = {
            "metadata": {"name": name},
            "spec": {
                "peerNodeID": node_id,
                "peerEndpoint": endpoint,
                "peerCASecretName": f"{name}-ca",
            },
        }
        return await self.sync()

    async def link(self, other: Node) -> list[LinkProblem]:
        return await self.link_to(
            other.node_id, endpoint=other.server.url, ca_pem=other.ca.cert_pem
        )

    async def unlink(self, name: str) -> list[LinkProblem]:
        del self.links[name]
        return await self.sync()


StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start a channel node: ``await start_node("node-a")`` (own CA unless ``ca`` is given)."""
    started: list[Node] = []

    async def start(
        node_id: str,
        *,
        ca: pki.Credentials | None = None,
        extra_routes: Iterable[web.RouteTableDef] = (),
    ) -> Node:
        ca = ca or pki.create_ca(f"{node_id} CA")
        identity = node_identity(ca, node_id)
        registry = PeerRegistry(local_node_id=node_id)
        refusals = PeerRefusals()
        app = init_channel_app(
            identity=identity,
            registry=registry,
            refusals=refusals,
            routes=[routes, *extra_routes],
        )
        server = ChannelServer(app, host="127.0.0.1", port=0)
        await server.start()
        clients = PeerClients(identity=identity, registry=registry, timeout=TIMEOUT)
        node = Node(ca, identity, registry, refusals, server, clients)
        started.append(node)
        return node

    yield start
    for node in started:
        await node.clients.aclose()
        await node.server.close()
