"""authenticate_peer (pure): a certificate is a peer node only if it chains to a CA of a link
whose peerNodeID is the node ID it claims."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from controllers import pki
from controllers.channel import AuthenticatedPeers, Peer, PeerRejected, authenticate_peer

CA_B, CA_C = pki.create_ca("node-b CA"), pki.create_ca("node-c CA")
PEERS = {
    "node-b": Peer("node-b", "https://b", (CA_B.cert_pem,), ("to-b",)),
    "node-c": Peer("node-c", "https://c", (CA_C.cert_pem,), ("to-c",)),
}


def _der(creds: pki.Credentials) -> bytes:
    return creds.certificate.public_bytes(serialization.Encoding.DER)


def _rejected(der: bytes | None, peers: dict[str, Peer] = PEERS) -> PeerRejected:
    with pytest.raises(PeerRejected) as excinfo:
        authenticate_peer(der, peers)
    return excinfo.value


def test_node_certificate_of_its_links_ca_is_that_node() -> None:
    assert authenticate_peer(_der(pki.issue_node_certificate(CA_B, "node-b")), PEERS) == "node-b"
    assert authenticate_peer(_der(pki.issue_node_certificate(CA_C, "node-c")), PEERS) == "node-c"


def test_a_shared_ca_named_by_both_links_vouches_for_both_nodes() -> None:
    shared = pki.create_ca("operator CA")
    peers = {
        n: Peer(n, f"https://{n}", (shared.cert_pem,), (f"to-{n}",)) for n in ("node-b", "node-c")
    }
    for node_id in peers:
        assert (
            authenticate_peer(_der(pki.issue_node_certificate(shared, node_id)), peers) == node_id
        )


def test_one_links_ca_cannot_vouch_for_another_links_node() -> None:
    forged = pki.issue_node_certificate(CA_B, "node-c")
    rejected = _rejected(_der(forged))
    assert rejected.reason == "PeerNodeIDMismatch"
    assert rejected.claimed_node_id == "node-c"
    assert set(rejected.links) == {"to-b", "to-c"}
    assert rejected.fingerprint == pki.fingerprint(forged.cert_pem)


def test_a_links_ca_cannot_vouch_for_a_node_no_link_names() -> None:
    rejected = _rejected(_der(pki.issue_node_certificate(CA_B, "node-z")))
    assert rejected.reason == "PeerNodeIDMismatch"
    assert rejected.links == ("to-b",)
    assert "claims node 'node-z'" in rejected.message


def test_unknown_node_from_an_unknown_ca_is_an_unknown_peer() -> None:
    rejected = _rejected(_der(pki.issue_node_certificate(pki.create_ca("x"), "node-z")))
    assert rejected.reason == "UnknownPeer"
    assert rejected.links == ()


def test_known_node_from_an_unknown_ca_is_untrusted_for_its_link() -> None:
    rejected = _rejected(_der(pki.issue_node_certificate(pki.create_ca("x"), "node-b")))
    assert rejected.reason == "UntrustedPeerCertificate"
    assert rejected.links == ("to-b",)
    assert "not trusted by the CA of QKDLink to-b (peer node-b)" in rejected.message
    assert "issued by 'CN=x'" in rejected.message


def test_expired_node_certificate_is_untrusted() -> None:
    cert = pki.issue_node_certificate(CA_B, "node-b", validity=dt.timedelta(days=1))
    with pytest.raises(PeerRejected, match="not valid at validation time"):
        authenticate_peer(_der(cert), PEERS, at=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))


def test_sae_certificate_is_not_a_node_certificate() -> None:
    rejected = _rejected(_der(pki.issue_sae_certificate(CA_B, "node-b")))
    assert rejected.reason == "NotANodeCertificate"
    assert rejected.links == ("to-b",)


def test_no_certificate_and_garbage_are_refused() -> None:
    assert _rejected(None).reason == "NoClientCertificate"
    assert _rejected(b"").reason == "NoClientCertificate"
    assert _rejected(b"\x30\x03garbage").reason == "InvalidClientCertificate"


def test_a_remembered_certificate_answers_alike_until_the_peers_change() -> None:
    peers = AuthenticatedPeers()
    der = _der(pki.issue_node_certificate(CA_B, "node-b"))
    assert peers.authenticate(der, PEERS, generation=1) == "node-b"
    assert peers.authenticate(der, PEERS, generation=1) == "node-b"
    # The link to node-b was removed (a new generation): refused at once, and recorded anew.
    without_b = {"node-c": PEERS["node-c"]}
    with pytest.raises(PeerRejected) as excinfo:
        peers.authenticate(der, without_b, generation=2)
    assert excinfo.value.reason == "UnknownPeer"
    forged = _der(pki.issue_node_certificate(CA_B, "node-c"))
    for _ in range(2):  # a refusal is never remembered as an acceptance
        with pytest.raises(PeerRejected, match="claims node 'node-c'"):
            peers.authenticate(forged, PEERS, generation=2)


def test_a_remembered_certificate_is_refused_once_it_expires() -> None:
    peers = AuthenticatedPeers()
    der = _der(pki.issue_node_certificate(CA_B, "node-b", validity=dt.timedelta(days=1)))
    now = dt.datetime.now(dt.UTC)
    assert peers.authenticate(der, PEERS, generation=1, at=now) == "node-b"
    with pytest.raises(PeerRejected, match="not valid at validation time"):
        peers.authenticate(der, PEERS, generation=1, at=now + dt.timedelta(days=2))
