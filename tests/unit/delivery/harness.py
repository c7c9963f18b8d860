"""QSS nodes in one process for the key delivery tests, built one way for a pair and for a line
(``relay_harness``): each has its own key store (a real redis-server, one database per node),
its own CA and node certificate, an inter-node channel server with the real KRP and relay routes
over mutual TLS, peer clients, pools, the delivery service, the relay and the background upkeep.
For a pair, one key stream joins two nodes (``join``) and ``feed`` plays the two QKDMs (the same
chunks with their device indices into both stores, or into one only, to play a lagging end);
its routing table stays empty, so its keys go to neighbours only.

Test doubles, named for what they are: ``KnownSaes`` (the local SAE registry: a set of SAE IDs,
no certificates), ``RecordedHandOvers`` (the slave side's request creation: it records the
hand-overs instead of creating KeyRequests) and ``FixedRoutes`` (routing's table: a path per
SAE ID, fixed by the test). Everything else is the real code.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controllers import pki
from controllers.channel import ChannelServer, PeerClients, PeerRegistry, init_channel_app
from controllers.delivery.krp import krp_routes
from controllers.delivery.messages import HandOver
from controllers.delivery.peer import KrpPeers
from controllers.delivery.pools import Pools
from controllers.delivery.relay import Relay
from controllers.delivery.relay_routes import relay_routes
from controllers.delivery.service import NodeKeyDelivery
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.delivery.upkeep import Upkeep
from controllers.events import EventSink
from controllers.identity import NodeIdentity
from controllers.keystore import Chunk, KeyStore, StreamCounts
from controllers.qkdm.ids import chunk_id
from controllers.routing.table import SaeRoute
from controllers.saes import SaeDirectory
from tests.unit.identities import node_identity

STREAM = "a-b"
KSID = str(uuid.UUID(int=0xA5))
CHUNK_BYTES = 32  # 256-bit chunks


class KnownSaes:
    """Test double of the local SAE registry: which SAE IDs are registered, in one namespace."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def lookup(self, sae_id: str) -> tuple[str, str] | None:
        return ("team", sae_id) if sae_id in self.ids else None

    def __contains__(self, sae_id: object) -> bool:
        return sae_id in self.ids


@dataclass
class RecordedHandOvers:
    """Test double of the slave request creation: records each hand-over it accepts."""

    received: list[HandOver] = field(default_factory=list)

    async def __call__(self, message: HandOver, held: bool, from_node: str) -> bool:
        if held and message.request_id not in {m.request_id for m in self.received}:
            self.received.append(message)
        return held or message.request_id in {m.request_id for m in self.received}


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
class Node:
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
    settings: DeliverySettings

    async def stop_calling(self) -> None:
        """Stop the node's tasks and its calls to others (first, on every node of a line: a
        server waits for the connections open to it)."""
        await self.upkeep.aclose()
        await self.pools.aclose()
        await self.clients.aclose()

    async def stop(self) -> None:
        """Stop the node's tasks and servers (its Redis data stays), as a crash would leave
        them: nothing is cleaned up in the store."""
        await self.stop_calling()
        await self.server.close()
        await self.store.aclose()

    async def counts(self, stream: str) -> StreamCounts:
        return await self.store.counts(stream=stream)


async def start_node(
    node_id: str,
    redis_url: str,
    settings: DeliverySettings,
    *,
    capacity: int,
    streams: Sequence[str] = (STREAM,),
    ca: pki.Credentials | None = None,
    port: int = 0,
    events: EventSink | None = None,
) -> Node:
    """A node whose store holds ``streams`` (the pair's one stream by default), with a new CA
    unless given ``ca``, its channel server on ``port`` (any free one by default)."""
    store = KeyStore.from_url(redis_url)
    for stream in streams:
        await store.configure_stream(stream=stream, capacity=capacity, chunk_bytes=CHUNK_BYTES)
    ca = ca or pki.create_ca(f"{node_id} CA")
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
                events=events,
            ),
            relay_routes(relay),
        ],
    )
    server = ChannelServer(app, host="127.0.0.1", port=port)
    await server.start()
    upkeep.start()
    return Node(
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
        settings=settings,
    )


async def connect(links: Sequence[tuple[Node, Node, str, str]]) -> None:
    """QKD links, each ``(x, y, stream, ksid)``: each end trusts the other's CA and knows the
    link and its one stream."""
    ends: dict[str, tuple[Node, list[Mapping[str, Any]]]] = {}
    for x, y, stream, ksid in links:
        for here, there in ((x, y), (y, x)):
            link = {
                "metadata": {"name": f"link-{stream}"},
                "spec": {
                    "peerNodeID": there.node_id,
                    "peerEndpoint": there.server.url,
                    "peerCASecretName": f"peer-ca-{there.node_id}",
                },
            }
            ends.setdefault(here.node_id, (here, []))[1].append(link)
            here.topology.update_link(link)
            here.topology.update_stream(
                {
                    "metadata": {"name": stream},
                    "spec": {"link": f"link-{stream}", "ksid": ksid},
                    "status": {"state": "Up"},
                }
            )
    cas = {node_id: node.ca.cert_pem for node_id, (node, _) in ends.items()}

    async def read_ca(name: str) -> bytes | None:
        return cas.get(name.removeprefix("peer-ca-"))

    for node, known in ends.values():
        await node.registry.update_from_links(known, read_ca)


async def join(a: Node, b: Node) -> None:
    """The pair's QKD link: each trusts the other's CA and knows the stream."""
    await connect([(a, b, STREAM, KSID)])


# Material per device index, the same at both ends, as a device pair yields it.
_SEED = os.urandom(16)


def chunks(first: int, n: int, *, ksid: str = KSID) -> list[Chunk]:
    """Chunks ``first`` .. ``first + n - 1`` of device key stream ``ksid`` (by default the
    pair's base KSID, epoch 0), as both QKDMs store them."""
    return [
        Chunk(
            chunk_id=chunk_id(ksid, i),
            material=hashlib.sha256(_SEED + uuid.UUID(ksid).bytes + i.to_bytes(8, "big")).digest()[
                :CHUNK_BYTES
            ],
        )
        for i in range(first, first + n)
    ]


async def feed(
    nodes: Sequence[Node], first: int, n: int, *, stream: str = STREAM, ksid: str = KSID
) -> list[Chunk]:
    """The QKDMs store chunks ``first`` .. of ``ksid`` in ``stream`` at the given nodes (the
    same material at each), in the KSID each node's cursor counts in."""
    batch = chunks(first, n, ksid=ksid)
    for node in nodes:
        await node.store.add_chunks(stream=stream, chunks=batch, first_index=first)
    return batch


def register(node: Node, sae_id: str, others: Sequence[Node]) -> None:
    """Register ``sae_id`` with ``node`` and tell ``others`` about it (an announcement)."""
    node.saes.ids.add(sae_id)
    for other in others:
        generation = (other.directory.generation(node.node_id) or 0) + 1
        known = set(other.directory.remote().get(node.node_id, frozenset()))
        other.directory.record(node.node_id, known | {sae_id}, generation)
