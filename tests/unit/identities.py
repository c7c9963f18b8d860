"""A node's identity for unit tests: a node certificate from a given CA, for a node reached at
127.0.0.1, as the channel, ETSI 014, routing and TLS-context tests need it."""

from __future__ import annotations

from controllers import pki
from controllers.identity import NodeIdentity


def node_identity(ca: pki.Credentials, node_id: str) -> NodeIdentity:
    node = pki.issue_node_certificate(ca, node_id, ip_addresses=["127.0.0.1"])
    return NodeIdentity(
        node_id=node_id,
        ca_cert_pem=ca.cert_pem,
        cert_pem=node.cert_pem,
        key_pem=node.key_pem,
        ca_key_pem=ca.key_pem,
    )
