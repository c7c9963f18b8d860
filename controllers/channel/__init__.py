"""The inter-node channel (the paper's External Interface): HTTPS with mutual TLS between
neighbouring QSS nodes, carrying KRP, the slave-side hand-over, and later LSAs and relay.

Modules: ``peers`` (who the neighbours are), ``trust`` (which neighbour a certificate is),
``refusals`` (who was turned away, for the QKDLinks' conditions).
"""

from controllers.channel.peers import LinkProblem, Peer, PeerRegistry, peers_from_links
from controllers.channel.refusals import PeerRefusals, Refusal
from controllers.channel.trust import PeerRejected, authenticate_peer

__all__ = [
    "LinkProblem",
    "Peer",
    "PeerRefusals",
    "PeerRegistry",
    "PeerRejected",
    "Refusal",
    "authenticate_peer",
    "peers_from_links",
]
