"""Two QSS nodes in one process for the key delivery tests: each has its own key store (a real
redis-server, one database per node), its own CA and node certificate, an inter-node channel
server with the real KRP routes over mutual TLS, peer clients, pools, the delivery service and
the background upkeep. One key stream joins them; ``feed`` plays the two QKDMs (the same chunks
with their device indices into both stores, or into one only, to play a lagging end).

Test doubles, named for what they are: ``KnownSaes`` (the local SAE registry: a set of SAE IDs,
no certificates) and ``RecordedHandOvers`` (the slave side's request creation: it records the
hand-overs instead of creating KeyRequests). Everything else is the real code.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controllers import pki
from controllers.channel import ChannelServer, PeerClients, PeerRegistry, init_channel_app
from controllers.delivery.krp import krp_routes
from controllers.delivery.messages import HandOver
from controllers.delivery.peer import KrpPeers
from controllers.delivery.pools import PoolKey, Pools
from controllers.delivery.service import NodeKeyDelivery
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.delivery.upkeep import Upkeep
from controllers.events import EventSink
from controllers.identity import NodeIdentity
from controllers.keystore import Chunk, KeyStore
from controllers.qkdm.ids import chunk_id
from controllers.saes import SaeDirectory
from tests.unit.identities import node_identity

STREAM = "a-b"
LINK = "link"
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
    handovers: RecordedHandOvers
    settings: DeliverySettings

    def pool(self, master: str, slave: str, size_bits: int = 256) -> PoolKey:
        peer = self.topology.peer_of_stream(STREAM)
        assert peer is not None
        return PoolKey(
            stream=STREAM, peer=peer, master_sae_id=master, slave_sae_id=slave, size_bits=size_bits
        )

    async def stop(self) -> None:
        """Stop the node's tasks and servers (its Redis data stays), as a crash would leave
        them: nothing is cleaned up in the store."""
        await self.upkeep.aclose()
        await self.pools.aclose()
        await self.clients.aclose()
        await self.server.close()
        await self.store.aclose()


async def start_node(
    node_id: str,
    redis_url: str,
    settings: DeliverySettings,
    *,
    capacity: int,
    ca: pki.Credentials | None = None,
    port: int = 0,
    events: EventSink | None = None,
) -> Node:
    store = KeyStore.from_url(redis_url)
    await store.configure_stream(stream=STREAM, capacity=capacity, chunk_bytes=CHUNK_BYTES)
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
    upkeep = Upkeep(store=store, topology=topology, peers=krp, pools=pools, settings=settings)
    delivery = NodeKeyDelivery(
        node_id=node_id,
        store=store,
        topology=topology,
        local_saes=saes,
        directory=directory,
        pools=pools,
        settings=settings,
        kick=upkeep.kick,
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
                events=events,
            )
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
        handovers=handovers,
        settings=settings,
    )


async def join(a: Node, b: Node) -> None:
    """A QKD link between two nodes: each trusts the other's CA and knows the stream."""
    for here, there in ((a, b), (b, a)):
        link: Mapping[str, Any] = {
            "metadata": {"name": LINK},
            "spec": {
                "peerNodeID": there.node_id,
                "peerEndpoint": there.server.url,
                "peerCASecretName": "peer-ca",
            },
        }

        async def read_ca(_: str, pem: bytes = there.ca.cert_pem) -> bytes | None:
            return pem

        await here.registry.update_from_links([link], read_ca)
        here.topology.update_link(link)
        here.topology.update_stream(
            {"metadata": {"name": STREAM}, "spec": {"link": LINK, "ksid": KSID}, "status": {}}
        )


# Material per device index, the same at both ends, as a device pair yields it.
_SEED = os.urandom(16)


def chunks(first: int, n: int, *, ksid: str = KSID) -> list[Chunk]:
    """Chunks ``first`` .. ``first + n - 1`` of device key stream ``ksid`` (by default the
    stream's base KSID, epoch 0), as both QKDMs store them."""
    return [
        Chunk(
            chunk_id=chunk_id(ksid, i),
            material=hashlib.sha256(_SEED + uuid.UUID(ksid).bytes + i.to_bytes(8, "big")).digest()[
                :CHUNK_BYTES
            ],
        )
        for i in range(first, first + n)
    ]


async def feed(nodes: list[Node], first: int, n: int, *, ksid: str = KSID) -> list[Chunk]:
    """The QKDMs store chunks ``first`` .. of ``ksid`` at the given nodes (the same material at
    each), in the KSID each node's cursor counts in."""
    batch = chunks(first, n, ksid=ksid)
    for node in nodes:
        await node.store.add_chunks(stream=STREAM, chunks=batch, first_index=first)
    return batch


def register(node: Node, sae_id: str, others: list[Node]) -> None:
    """Register ``sae_id`` with ``node`` and tell ``others`` about it (an announcement)."""
    node.saes.ids.add(sae_id)
    for other in others:
        generation = (other.directory.generation(node.node_id) or 0) + 1
        known = set(other.directory.remote().get(node.node_id, frozenset()))
        other.directory.record(node.node_id, known | {sae_id}, generation)
