"""Nodes in a line in one process for the key relay's tests: each has its own key store (a real
redis-server, one database per node), CA and node certificate, an inter-node channel server
with the real KRP and relay routes over mutual TLS, peer clients, pools, the delivery service,
the relay and the background upkeep. Each link of the line has one key stream; ``feed_line``
plays every link's two QKDMs.

Test doubles, named for what they are: ``KnownSaes`` and ``RecordedHandOvers`` (from
``harness``), and ``FixedRoutes``: the routing table, a path per SAE ID, as routing would find
it on this line. Everything else is the real code.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controllers import pki
from controllers.channel import ChannelServer, PeerClients, PeerRegistry, init_channel_app
from controllers.delivery.krp import krp_routes
from controllers.delivery.peer import KrpPeers
from controllers.delivery.pools import Pools
from controllers.delivery.relay import Relay
from controllers.delivery.relay_routes import relay_routes
from controllers.delivery.service import NodeKeyDelivery
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.delivery.upkeep import Upkeep
from controllers.identity import NodeIdentity
from controllers.keystore import Chunk, KeyStore, StreamCounts
from controllers.qkdm.ids import chunk_id
from controllers.routing.table import SaeRoute
from controllers.saes import SaeDirectory
from tests.unit.delivery.harness import KnownSaes, RecordedHandOvers
from tests.unit.identities import node_identity

CHUNK_BYTES = 32


@dataclass
class FixedRoutes:
    """Test double of routing's table: the path to each SAE's node, fixed by the test."""

    node_id: str
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def route_to(self, sae_id: str) -> SaeRoute | None:
        path = self.paths.get(sae_id)
        if path is None:
            return None
        return SaeRoute(sae_id=sae_id, destination=path[-1], path=path, cost=1000 * len(path))


@dataclass
class LineNode:
    node_id: str
    store: KeyStore
    ca: pki.Credentials
    identity: NodeIdentity
    registry: PeerRegistry
    server: ChannelServer
    clients: PeerClients
    saes: KnownSaes
    directory: SaeDirectory
    topology: Topology
    pools: Pools
    delivery: NodeKeyDelivery
    upkeep: Upkeep
    relay: Relay
    routes: FixedRoutes
    handovers: RecordedHandOvers

    async def stop_calling(self) -> None:
        """Stop the node's tasks and its calls to others (first, on every node: a server
        waits for the connections open to it)."""
        await self.upkeep.aclose()
        await self.pools.aclose()
        await self.clients.aclose()

    async def stop(self) -> None:
        await self.stop_calling()
        await self.server.close()
        await self.store.aclose()

    async def counts(self, stream: str) -> StreamCounts:
        return await self.store.counts(stream=stream)


def stream_name(a: str, b: str) -> str:
    return f"{min(a, b)}-{max(a, b)}"


def ksid_of(stream: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"relay-test/{stream}"))


async def start_line_node(
    node_id: str, redis_url: str, settings: DeliverySettings, *, streams: list[str], capacity: int
) -> LineNode:
    store = KeyStore.from_url(redis_url)
    for stream in streams:
        await store.configure_stream(stream=stream, capacity=capacity, chunk_bytes=CHUNK_BYTES)
    ca = pki.create_ca(f"{node_id} CA")
    identity = node_identity(ca, node_id)
    registry = PeerRegistry(local_node_id=node_id)
    saes = KnownSaes()
    directory = SaeDirectory(local_node_id=node_id, local=saes)
    topology = Topology(node_id=node_id)
    handovers = RecordedHandOvers()
    clients = PeerClients(identity=identity, registry=registry, timeout=10.0)
    krp = KrpPeers(clients)
    pools = Pools(node_id=node_id, store=store, peers=krp, settings=settings)
    routes = FixedRoutes(node_id=node_id)
    upkeep = Upkeep(store=store, topology=topology, peers=krp, pools=pools, settings=settings)
    relay = Relay(
        node_id=node_id,
        store=store,
        topology=topology,
        pools=pools,
        peers=krp,
        hand_over=handovers,
        is_local_sae=lambda sae_id: sae_id in saes,
        settings=settings,
        kick=upkeep.kick,
    )
    delivery = NodeKeyDelivery(
        node_id=node_id,
        store=store,
        topology=topology,
        local_saes=saes,
        directory=directory,
        pools=pools,
        settings=settings,
        kick=upkeep.kick,
        routes=routes,
        relay=relay,
    )
    app = init_channel_app(
        identity=identity,
        registry=registry,
        routes=[
            krp_routes(
                store=store,
                topology=topology,
                local_saes=saes,
                handover=handovers,
                settings=settings,
                relays_to=lambda sae_id: routes.route_to(sae_id) is not None,
            ),
            relay_routes(relay),
        ],
    )
    server = ChannelServer(app, host="127.0.0.1", port=0)
    await server.start()
    upkeep.start()
    return LineNode(
        node_id=node_id,
        store=store,
        ca=ca,
        identity=identity,
        registry=registry,
        server=server,
        clients=clients,
        saes=saes,
        directory=directory,
        topology=topology,
        pools=pools,
        delivery=delivery,
        upkeep=upkeep,
        relay=relay,
        routes=routes,
        handovers=handovers,
    )


async def join_line(nodes: list[LineNode]) -> None:
    """A QKD link between each two neighbours: trust, the link and its stream on both ends."""
    links: dict[str, list[Mapping[str, Any]]] = {n.node_id: [] for n in nodes}
    for x, y in itertools.pairwise(nodes):
        stream = stream_name(x.node_id, y.node_id)
        for here, there in ((x, y), (y, x)):
            link = {
                "metadata": {"name": f"link-{stream}"},
                "spec": {
                    "peerNodeID": there.node_id,
                    "peerEndpoint": there.server.url,
                    "peerCASecretName": f"peer-ca-{there.node_id}",
                },
            }
            links[here.node_id].append(link)
            here.topology.update_link(link)
            here.topology.update_stream(
                {
                    "metadata": {"name": stream},
                    "spec": {"link": f"link-{stream}", "ksid": ksid_of(stream)},
                    "status": {"state": "Up"},
                }
            )
    cas = {n.node_id: n.ca.cert_pem for n in nodes}
    for node in nodes:

        async def read_ca(name: str) -> bytes | None:
            return cas.get(name.removeprefix("peer-ca-"))

        await node.registry.update_from_links(links[node.node_id], read_ca)


_SEED = os.urandom(16)


def line_chunks(stream: str, first: int, n: int) -> list[Chunk]:
    ksid = ksid_of(stream)
    return [
        Chunk(
            chunk_id=chunk_id(ksid, i),
            material=hashlib.sha256(_SEED + stream.encode() + i.to_bytes(8, "big")).digest()[
                :CHUNK_BYTES
            ],
        )
        for i in range(first, first + n)
    ]


async def feed_line(nodes: list[LineNode], first: int, n: int) -> None:
    """Every link's QKDMs store chunks ``first`` .. at both its ends."""
    for x, y in itertools.pairwise(nodes):
        stream = stream_name(x.node_id, y.node_id)
        batch = line_chunks(stream, first, n)
        for node in (x, y):
            await node.store.add_chunks(stream=stream, chunks=batch, first_index=first)


def register_line(nodes: list[LineNode], node: LineNode, sae_id: str) -> None:
    """Register ``sae_id`` with ``node``; every other node learns where it is and its path."""
    node.saes.ids.add(sae_id)
    ids = [n.node_id for n in nodes]
    at = ids.index(node.node_id)
    for i, other in enumerate(nodes):
        if other is node:
            continue
        generation = (other.directory.generation(node.node_id) or 0) + 1
        known = set(other.directory.remote().get(node.node_id, frozenset()))
        other.directory.record(node.node_id, known | {sae_id}, generation)
        step = 1 if at > i else -1
        other.routes.paths[sae_id] = tuple(ids[i : at + step : step])
