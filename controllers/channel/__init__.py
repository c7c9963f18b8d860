"""The inter-node channel (the paper's External Interface): HTTPS with mutual TLS between
neighbouring QSS nodes, carrying KRP, the slave-side hand-over, and later LSAs and relay.

``controllers.main`` wires it: a ``PeerRegistry`` kept current from the QKDLinks, the server
app from ``init_channel_app`` served by ``ChannelServer``, and ``PeerClients`` for outgoing
calls. Modules that speak over the channel pass their ``web.RouteTableDef`` to
``init_channel_app`` and read the calling node with ``peer_node(request)``.

Modules: ``peers`` (who the neighbours are), ``trust`` (which neighbour a certificate is),
``refusals`` (who was turned away, for the QKDLinks' conditions), ``server`` and ``client``.
"""

from controllers.channel.client import (
    PeerCertificateError,
    PeerClient,
    PeerClients,
    PeerError,
    PeerRefused,
    PeerUnreachable,
    UnknownPeer,
)
from controllers.channel.paths import PING_PATH
from controllers.channel.peers import LinkProblem, Peer, PeerRegistry, peers_from_links
from controllers.channel.refusals import PeerRefusals, Refusal
from controllers.channel.server import (
    IDENTITY,
    PEER_NODE,
    REFUSALS,
    REGISTRY,
    SSL_CONTEXT,
    ChannelServer,
    error_response,
    init_channel_app,
    peer_node,
    register,
)
from controllers.channel.trust import AuthenticatedPeers, PeerRejected, authenticate_peer

__all__ = [
    "IDENTITY",
    "PEER_NODE",
    "PING_PATH",
    "REFUSALS",
    "REGISTRY",
    "SSL_CONTEXT",
    "AuthenticatedPeers",
    "ChannelServer",
    "LinkProblem",
    "Peer",
    "PeerCertificateError",
    "PeerClient",
    "PeerClients",
    "PeerError",
    "PeerRefusals",
    "PeerRefused",
    "PeerRegistry",
    "PeerRejected",
    "PeerUnreachable",
    "Refusal",
    "UnknownPeer",
    "authenticate_peer",
    "error_response",
    "init_channel_app",
    "peer_node",
    "peers_from_links",
    "register",
]
