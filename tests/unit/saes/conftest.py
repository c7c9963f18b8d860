"""Fixtures of the SAE tests: a node CA made with the real PKI, and real channel nodes on
loopback (own CA, node certificate, mTLS server with the SAE announcement route, peer clients),
set up the way the channel's own tests do it (tests/unit/channel/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from controllers import pki
from controllers.channel import ChannelServer, Peer, PeerClients, PeerRegistry, init_channel_app
from controllers.identity import NodeIdentity
from controllers.saes.announce import register_routes
from controllers.saes.directory import SaeDirectory
from controllers.saes.registry import LocalSaes

# Short, so that the unreachable-peer tests stay fast.
TIMEOUT = 2.0


@pytest.fixture(scope="session")
def node_ca() -> pki.Credentials:
    return pki.create_ca("test node CA")


@dataclass
class SaeNode:
    """One QSS node as far as SAEs go: its registry, directory and channel."""

    ca: pki.Credentials
    identity: NodeIdentity
    local: LocalSaes
    directory: SaeDirectory
    registry: PeerRegistry
    server: ChannelServer
    clients: PeerClients

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def peer_entry(self) -> Peer:
        """How a neighbour's QKDLink describes this node."""
        return Peer(
            node_id=self.node_id,
            endpoint=self.server.url,
            ca_pems=(self.ca.cert_pem,),
            links=(f"link-{self.node_id}",),
        )

    def link(self, *others: SaeNode) -> None:
        """Make ``others`` this node's peers (as the QKDLink handlers would)."""
        self.registry.replace({o.node_id: o.peer_entry() for o in others})

    def add_sae(self, sae_id: str, *, namespace: str = "apps") -> pki.Credentials:
        issued = pki.issue_sae_certificate(self.ca, sae_id)
        self.local.register(
            sae_id=sae_id,
            namespace=namespace,
            name=sae_id,
            created="2026-01-01T00:00:00Z",
            certificate=issued.cert_pem,
            ca_pem=self.ca.cert_pem,
        )
        return issued


StartSaeNode = Callable[[str], Awaitable[SaeNode]]


@pytest.fixture
async def start_sae_node() -> AsyncIterator[StartSaeNode]:
    """Start a node: ``await start_sae_node("node-a")``."""
    started: list[SaeNode] = []

    async def start(node_id: str) -> SaeNode:
        ca = pki.create_ca(f"{node_id} CA")
        node_cert = pki.issue_node_certificate(ca, node_id, ip_addresses=["127.0.0.1"])
        identity = NodeIdentity(
            node_id=node_id,
            ca_cert_pem=ca.cert_pem,
            cert_pem=node_cert.cert_pem,
            key_pem=node_cert.key_pem,
            ca_key_pem=ca.key_pem,
        )
        local = LocalSaes()
        directory = SaeDirectory(local_node_id=node_id, local=local)
        registry = PeerRegistry(local_node_id=node_id)
        app = init_channel_app(identity=identity, registry=registry)
        register_routes(app, directory, local)
        server = ChannelServer(app, host="127.0.0.1", port=0)
        await server.start()
        clients = PeerClients(identity=identity, registry=registry, timeout=TIMEOUT)
        node = SaeNode(ca, identity, local, directory, registry, server, clients)
        started.append(node)
        return node

    yield start
    for node in started:
        await node.clients.aclose()
        await node.server.close()
