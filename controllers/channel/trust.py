"""Deciding which neighbour node a client certificate belongs to, or why it belongs to none.

Called by the channel server's middleware (``controllers.channel.server``) for every request,
with the DER certificate the TLS layer already checked against the union of all peer CAs. That
check alone is not enough: a CA named by the link to node-b must not be able to vouch for a
certificate that claims to be node-c. So ``authenticate_peer`` reads the node ID the certificate
claims, and accepts it only if the certificate chains to a CA of a link whose peerNodeID is that
node ID, against the registry's current peers (which also makes a removed link stop counting at
once, although its CA stays loaded in the TLS context until restart).

Python 3.11's ssl module gives us only the leaf of the peer's chain, so a node certificate must
be signed directly by a CA in its link's peerCASecretName Secret; if an intermediate signs it,
put the intermediate in that Secret's ca.crt too (it then acts as a trust anchor).

Path validation costs milliseconds of CPU, and a peer sends every KRP, LSA and relay message
over a few kept-alive connections with the same certificate, so ``AuthenticatedPeers`` remembers
each accepted certificate: for the registry's current generation only (any link change forgets
everything at once) and never past the certificate's or its CAs' expiry. Refusals are never
remembered: each is checked and recorded again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from controllers import pki
from controllers.channel.peers import Peer


class PeerRejected(Exception):
    """A client certificate that does not authenticate a peer node; ``message`` says why."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        claimed_node_id: str | None = None,
        links: tuple[str, ...] = (),
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.claimed_node_id = claimed_node_id
        self.links = links
        self.fingerprint = fingerprint


def _vouching_peers(
    cert: x509.Certificate, peers: Mapping[str, Peer], at: dt.datetime | None
) -> list[Peer]:
    """The peers whose CAs the certificate chains to."""
    vouching = []
    for peer in peers.values():
        try:
            pki.verify_chain(cert, peer.trust_anchors, at=at)
        except pki.UntrustedCertificate:
            continue
        vouching.append(peer)
    return vouching


def _link_list(peers: list[Peer]) -> str:
    return ", ".join(f"QKDLink {link} (peer {p.node_id})" for p in peers for link in p.links)


def authenticate_peer(
    der: bytes | None, peers: Mapping[str, Peer], *, at: dt.datetime | None = None
) -> str:
    """The node ID of the peer presenting ``der``, or ``PeerRejected`` saying why not."""
    if not der:
        raise PeerRejected(
            "NoClientCertificate",
            "no client certificate: a peer node must connect with its node certificate",
        )
    try:
        cert = pki.load_certificate(der)
    except pki.CertificateError as exc:
        raise PeerRejected("InvalidClientCertificate", str(exc)) from None
    fingerprint = pki.fingerprint(cert)
    try:
        claimed = pki.node_id_of(cert)
    except pki.NotANodeCertificate as exc:
        vouching = _vouching_peers(cert, peers, at)
        raise PeerRejected(
            "NotANodeCertificate",
            str(exc),
            links=tuple(link for p in vouching for link in p.links),
            fingerprint=fingerprint,
        ) from None

    peer = peers.get(claimed)
    own_links = peer.links if peer is not None else ()
    problem = ""
    if peer is not None:
        try:
            pki.verify_chain(cert, peer.trust_anchors, at=at)
            return claimed
        except pki.UntrustedCertificate as exc:
            problem = str(exc)

    vouching = [p for p in _vouching_peers(cert, peers, at) if p.node_id != claimed]
    if vouching:
        raise PeerRejected(
            "PeerNodeIDMismatch",
            f"the certificate claims node {claimed!r} but is signed by the CA of "
            f"{_link_list(vouching)}, which may only vouch for "
            f"{', '.join(sorted({p.node_id for p in vouching}))}",
            claimed_node_id=claimed,
            links=own_links + tuple(link for p in vouching for link in p.links),
            fingerprint=fingerprint,
        )
    if peer is None:
        raise PeerRejected(
            "UnknownPeer",
            f"no QKDLink of this node names peer node {claimed!r}; add a QKDLink with "
            f"peerNodeID {claimed} and its CA in peerCASecretName",
            claimed_node_id=claimed,
            fingerprint=fingerprint,
        )
    raise PeerRejected(
        "UntrustedPeerCertificate",
        f"the certificate of node {claimed!r} is not trusted by the CA of "
        f"{_link_list([peer])}: {problem}",
        claimed_node_id=claimed,
        links=own_links,
        fingerprint=fingerprint,
    )


# Accepted certificates remembered at once (a node has a handful of peers, each with a
# certificate or two during a rotation); past this many the oldest are forgotten.
MAX_REMEMBERED = 64


@dataclass
class AuthenticatedPeers:
    """``authenticate_peer`` with a memory of the certificates it accepted (module docstring).
    ``authenticate`` gives the same answer as ``authenticate_peer`` for the same peers."""

    _generation: int = -1
    _accepted: dict[bytes, tuple[str, dt.datetime]] = field(default_factory=dict)

    def authenticate(
        self,
        der: bytes | None,
        peers: Mapping[str, Peer],
        *,
        generation: int,
        at: dt.datetime | None = None,
    ) -> str:
        """The node ID of the peer presenting ``der`` among ``peers`` (the registry's state
        ``generation``) at ``at`` (default now), or ``PeerRejected``."""
        if generation != self._generation:
            self._accepted.clear()
            self._generation = generation
        now = at or dt.datetime.now(dt.UTC)
        if der:
            known = self._accepted.get(der)
            if known is not None and now < known[1]:
                return known[0]
        node_id = authenticate_peer(der, peers, at=now)
        assert der is not None  # accepted, so there was a certificate
        cert = pki.load_certificate(der)
        anchors = peers[node_id].trust_anchors
        until = min(c.not_valid_after_utc for c in (cert, *anchors))
        if len(self._accepted) >= MAX_REMEMBERED:
            del self._accepted[next(iter(self._accepted))]
        self._accepted[der] = (node_id, until)
        return node_id
