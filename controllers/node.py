"""The QSS node's runtime: everything the controller's handlers share, started and stopped once.

``start_node`` (called by the controller's kopf startup handler) builds, in order: the node's
identity (CA and certificate Secrets), the key store client, the in-memory topology and SAE
registry/directory, the peer registry with its clients, key delivery (pools, the background
upkeep of deadlines and messages, the key relay, the KeyRequest service), routing (the protocol
and the Route writer), the inter-node channel (KRP, the relay, routing) and the ETSI GS QKD 014
key API.
``NodeRuntime.aclose`` stops them in reverse. QKDLink changes reach ``links_changed``, which
refreshes the peers and their trust. Handlers get the runtime with ``runtime_of(memo)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controllers.channel import (
    ChannelServer,
    LinkProblem,
    PeerClients,
    PeerRefusals,
    PeerRegistry,
    init_channel_app,
)
from controllers.delivery.handover import slave_request_creator
from controllers.delivery.krp import krp_routes
from controllers.delivery.peer import KrpPeers
from controllers.delivery.pools import Pools
from controllers.delivery.relay import Relay
from controllers.delivery.relay_routes import relay_routes
from controllers.delivery.requests import KeyRequestService
from controllers.delivery.service import NodeKeyDelivery
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.delivery.upkeep import Upkeep
from controllers.etsi014 import Etsi014Server, Etsi014Settings
from controllers.etsi014 import init as init_key_api
from controllers.events import EventRecorder, Regarding
from controllers.identity import NodeIdentity, ensure_node_identity, peer_ca_reader
from controllers.keystore import KeyStore
from controllers.kube import Kube
from controllers.metrics import watch_pools, watch_routing
from controllers.routing.channel import RoutingService
from controllers.routing.settings import RoutingSettings
from controllers.routing.writer import KubeRoutes, RouteWriter, Spec
from controllers.saes import LocalSaes, SaeDirectory
from controllers.settings import ControllerSettings
from qss_api import KIND_ROUTE, KIND_SAE, QKDLINKS

log = logging.getLogger("controllers.node")


@dataclass
class NodeRuntime:
    settings: ControllerSettings
    kube: Kube
    identity: NodeIdentity
    store: KeyStore
    topology: Topology
    local_saes: LocalSaes
    directory: SaeDirectory
    registry: PeerRegistry
    refusals: PeerRefusals
    peers: PeerClients
    delivery: NodeKeyDelivery
    pools: Pools
    upkeep: Upkeep
    requests: KeyRequestService
    channel: ChannelServer
    key_api: Etsi014Server
    routing: RoutingService
    route_writer: RouteWriter
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    link_problems: dict[str, LinkProblem] = field(default_factory=dict)
    _trusted_sae_cas: set[bytes] = field(default_factory=set)

    async def links_changed(self, name: str, link: Mapping[str, Any] | None) -> None:
        """A QKDLink was added, changed (spec) or deleted: rebuild the peers from all links."""
        if link is None:
            self.links.pop(name, None)
            self.topology.forget_link(name)
        else:
            self.links[name] = dict(link)
            self.topology.update_link(link)
        read_ca = peer_ca_reader(self.kube.api, namespace=self.settings.namespace)
        problems = await self.registry.update_from_links(list(self.links.values()), read_ca)
        self.link_problems = {p.link: p for p in problems}

    def trust_sae_cas(self) -> None:
        """Let the 014 API accept client certificates of Manual SAEs' own CAs."""
        for pem in self.local_saes.client_ca_pems():
            if pem not in self._trusted_sae_cas:
                self.key_api.trust_client_ca(pem)
                self._trusted_sae_cas.add(pem)

    async def aclose(self) -> None:
        await self.route_writer.aclose()
        await self.routing.aclose()
        await self.key_api.close()
        await self.channel.close()
        await self.upkeep.aclose()
        await self.pools.aclose()
        await self.peers.aclose()
        await self.store.aclose()


def runtime_of(memo: Mapping[str, Any]) -> NodeRuntime:
    """The node runtime kopf's memo carries (``controllers.main`` puts it there at start-up)."""
    runtime = memo.get("node")
    if not isinstance(runtime, NodeRuntime):
        raise RuntimeError("the node runtime is not in kopf's memo: the startup handler failed")
    return runtime


async def start_node(
    settings: ControllerSettings,
    kube: Kube,
    *,
    key_api_settings: Etsi014Settings,
    delivery_settings: DeliverySettings,
    routing_settings: RoutingSettings,
    events: EventRecorder | None = None,
) -> NodeRuntime:
    identity = await ensure_node_identity(
        kube.api,
        namespace=settings.namespace,
        node_id=settings.node_id,
        dns_names=settings.node_dns_names,
        ip_addresses=settings.node_ips,
    )
    store = KeyStore.from_url(settings.redis_url)
    topology = Topology(node_id=settings.node_id)
    local_saes = LocalSaes()
    directory = SaeDirectory(local_node_id=settings.node_id, local=local_saes)
    registry = PeerRegistry(local_node_id=settings.node_id)
    refusals = PeerRefusals()
    peers = PeerClients(identity=identity, registry=registry)
    krp = KrpPeers(peers)
    pools = Pools(node_id=settings.node_id, store=store, peers=krp, settings=delivery_settings)
    upkeep = Upkeep(
        store=store, topology=topology, peers=krp, pools=pools, settings=delivery_settings
    )
    delivery = NodeKeyDelivery(
        node_id=settings.node_id,
        store=store,
        topology=topology,
        local_saes=local_saes,
        directory=directory,
        pools=pools,
        settings=delivery_settings,
        kick=upkeep.kick,
    )
    relay = Relay(
        node_id=settings.node_id,
        store=store,
        topology=topology,
        pools=pools,
        peers=krp,
        hand_over=slave_request_creator(kube, local_saes),
        is_local_sae=lambda sae_id: local_saes.lookup(sae_id) is not None,
        settings=delivery_settings,
        kick=upkeep.kick,
    )
    delivery.relay = relay
    requests = KeyRequestService(
        delivery=delivery,
        kube=kube,
        saes=local_saes,
        fetch_window_seconds=delivery_settings.fetch_window_seconds,
        events=events,
    )
    routing = RoutingService(
        node_id=settings.node_id,
        settings=routing_settings,
        registry=registry,
        clients=peers,
        local=local_saes,
        directory=directory,
    )
    delivery.routes = routing
    app = init_channel_app(
        identity=identity,
        registry=registry,
        refusals=refusals,
        routes=[
            krp_routes(
                store=store,
                topology=topology,
                local_saes=local_saes,
                handover=slave_request_creator(kube, local_saes),
                settings=delivery_settings,
                relays_to=lambda sae_id: routing.route_to(sae_id) is not None,
                events=events,
            ),
            relay_routes(relay),
            routing.channel_routes(),
        ],
    )
    host, port = settings.channel_host_port
    channel = ChannelServer(app, host=host, port=port)
    key_api = Etsi014Server(
        init_key_api(
            delivery=delivery,
            authenticator=local_saes,
            settings=key_api_settings,
            on_scarcity=sae_scarcity_events(events, local_saes) if events is not None else None,
        ),
        identity=identity,
        settings=key_api_settings,
    )
    # Deleting Routes waits until the neighbours have had a dead interval to answer.
    route_writer = RouteWriter(
        api=KubeRoutes(kube),
        desired=routing.route_objects,
        grace=routing_settings.dead_interval,
        on_write=route_events(events) if events is not None else None,
    )
    routing.subscribe(route_writer.changed)
    watch_routing(routing, route_writer)
    watch_pools(pools)
    node = NodeRuntime(
        settings=settings,
        kube=kube,
        identity=identity,
        store=store,
        topology=topology,
        local_saes=local_saes,
        directory=directory,
        registry=registry,
        refusals=refusals,
        peers=peers,
        delivery=delivery,
        pools=pools,
        upkeep=upkeep,
        requests=requests,
        channel=channel,
        key_api=key_api,
        routing=routing,
        route_writer=route_writer,
    )
    # A start-up that fails leaves nothing behind (the node is closed again), so kopf's retry
    # starts afresh.
    try:
        # The neighbours are known before anything is served, so that a request naming one of
        # their SAEs meanwhile hears "not known yet" (retryable), not "unknown".
        for link in await kube.list(QKDLINKS):
            await node.links_changed(str(link["metadata"]["name"]), link)
        await channel.start()
        await key_api.start()
        upkeep.start()
        local_saes.subscribe(lambda *_: node.trust_sae_cas())
        routing.start()
        route_writer.start()
    except BaseException:
        await node.aclose()  # what started stops, its ports are free for the retry
        raise
    log.info(
        "node %s: channel on port %d, ETSI 014 key API on port %d",
        settings.node_id,
        channel.port,
        key_api.port,
    )
    return node


def route_events(events: EventRecorder) -> Callable[[str, Spec | None, Spec | None], None]:
    """What the Route writer tells of its writes, as Events on the Routes: one when a route
    appears, takes another path, or goes (its cost moving alone is no news)."""

    def on_write(name: str, before: Spec | None, after: Spec | None) -> None:
        route = Regarding(kind=KIND_ROUTE, name=name)
        if after is None:
            sae = (before or {}).get("saeID", name)
            events.record(
                route,
                type="Warning",
                reason="RouteRemoved",
                note=f"SAE {sae} is no longer reachable from this node",
                action="Route",
            )
            return
        path = list(after.get("path") or [])
        if before is not None and list(before.get("path") or []) == path:
            return
        where = " -> ".join(path) if path else "this node"
        events.record(
            route,
            type="Normal",
            reason="RouteAdded" if before is None else "RouteChanged",
            note=f"SAE {after.get('saeID')} is reached via {where} (cost {after.get('cost')}, "
            f"{after.get('length', 0)} hops)",
            action="Route",
        )

    return on_write


def sae_scarcity_events(
    events: EventRecorder, local_saes: LocalSaes
) -> Callable[[str, str, str], None]:
    """A 014 request refused for want of keys, as a Warning Event on the calling SAE's Sae
    (deduplicated by the recorder: a client retrying in a loop makes one Event and a count)."""

    def on_scarcity(sae_id: str, reason: str, message: str) -> None:
        ref = local_saes.lookup(sae_id)
        if ref is None:
            return
        namespace, name = ref
        events.record(
            Regarding(kind=KIND_SAE, name=name, namespace=namespace),
            type="Warning",
            reason=reason,
            note=f"ETSI 014 request of SAE {sae_id} refused: {message}",
            action="GetKey",
        )

    return on_scarcity
