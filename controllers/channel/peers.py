"""Who this node's neighbours are on the inter-node channel: peer node ID -> endpoint and CA(s).

The QKDLink handlers keep a ``PeerRegistry`` current by calling ``update_from_links`` with the
full list of QKDLinks whenever one changes; the channel server (which peers it accepts) and
``PeerClients`` (where and how to connect) read it. ``peers_from_links`` is the pure part: it
turns link specs plus the CA PEMs their ``peerCASecretName`` Secrets hold into peers, and says
per link what keeps it off the channel, so the link reconciler can show it as a condition.

Several links may join the same two nodes (parallel fibre pairs): they make one peer, whose CA
set is the union of theirs; they must agree on the endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography import x509

from controllers import pki

log = logging.getLogger(__name__)

ReadCA = Callable[[str], Awaitable[bytes | None]]
Listener = Callable[[Mapping[str, "Peer"]], None]


@dataclass(frozen=True)
class Peer:
    """A neighbour node: where its channel listens and which CAs may vouch for it."""

    node_id: str
    endpoint: str
    ca_pems: tuple[bytes, ...]
    links: tuple[str, ...]
    trust_anchors: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        anchors = tuple(c for pem in self.ca_pems for c in pki.load_certificates(pem))
        object.__setattr__(self, "trust_anchors", anchors)

    @property
    def ca_bundle(self) -> bytes:
        """Every CA of the peer as one PEM bundle (what a client context trusts)."""
        return b"".join(p if p.endswith(b"\n") else p + b"\n" for p in self.ca_pems)


@dataclass(frozen=True)
class LinkProblem:
    """Why a QKDLink does not (fully) take part in the channel; for its conditions."""

    link: str
    reason: str
    message: str


def _is_ca_bundle(pem: bytes) -> bool:
    try:
        certs = pki.load_certificates(pem)
    except pki.CertificateError:
        return False
    for cert in certs:
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return False
        except x509.ExtensionNotFound:
            return False
    return True


def peers_from_links(
    links: Iterable[Mapping[str, Any]],
    cas: Mapping[str, bytes | None],
    *,
    local_node_id: str,
) -> tuple[dict[str, Peer], list[LinkProblem]]:
    """The peers that ``links`` (QKDLink objects) describe, given ``cas``: Secret name -> the
    ``ca.crt`` it holds (None if missing). Links pinned to another node (``localNodeID``) are
    not this node's and are skipped."""
    found: dict[str, list[tuple[str, str, bytes]]] = {}
    problems: list[LinkProblem] = []
    for link in sorted(links, key=lambda obj: str(obj.get("metadata", {}).get("name", ""))):
        name = str(link.get("metadata", {}).get("name", ""))
        spec: Mapping[str, Any] = link.get("spec") or {}
        if spec.get("localNodeID", local_node_id) != local_node_id:
            continue
        peer_id, endpoint = spec.get("peerNodeID"), spec.get("peerEndpoint")
        secret = spec.get("peerCASecretName")
        if not peer_id or not endpoint:
            problems.append(
                LinkProblem(name, "InvalidSpec", "the link needs peerNodeID and peerEndpoint")
            )
            continue
        if peer_id == local_node_id:
            problems.append(
                LinkProblem(name, "InvalidSpec", f"peerNodeID {peer_id} is this node itself")
            )
            continue
        if not secret:
            problems.append(
                LinkProblem(
                    name,
                    "PeerCANotConfigured",
                    f"set spec.peerCASecretName to a Secret holding the CA of node {peer_id} "
                    "(ca.crt); the channel trusts no peer without one",
                )
            )
            continue
        pem = cas.get(secret)
        if pem is None:
            problems.append(
                LinkProblem(
                    name,
                    "PeerCASecretNotFound",
                    f"Secret {secret} (peerCASecretName) is missing or has no ca.crt; create "
                    f"it with the CA of node {peer_id}",
                )
            )
            continue
        if not _is_ca_bundle(pem):
            problems.append(
                LinkProblem(
                    name,
                    "PeerCAInvalid",
                    f"ca.crt of Secret {secret} (peerCASecretName) is not a PEM CA certificate",
                )
            )
            continue
        found.setdefault(str(peer_id), []).append((name, str(endpoint), pem))

    peers: dict[str, Peer] = {}
    for peer_id, entries in found.items():
        endpoint = entries[0][1]
        agreeing = []
        for name, other, pem in entries:
            if other != endpoint:
                problems.append(
                    LinkProblem(
                        name,
                        "PeerEndpointConflict",
                        f"link {entries[0][0]} reaches node {peer_id} at {endpoint}, this link "
                        f"at {other}; links to one node must name the same peerEndpoint",
                    )
                )
                continue
            agreeing.append((name, pem))
        ca_pems = tuple(dict.fromkeys(pem for _, pem in agreeing))  # unique, in order
        peers[peer_id] = Peer(
            node_id=peer_id,
            endpoint=endpoint,
            ca_pems=ca_pems,
            links=tuple(name for name, _ in agreeing),
        )
    return peers, problems


class PeerRegistry:
    """The current peers of this node, with listeners told of every change."""

    def __init__(self, *, local_node_id: str) -> None:
        self.local_node_id = local_node_id
        self._peers: dict[str, Peer] = {}
        self._listeners: list[Listener] = []
        self.generation = 0

    def peers(self) -> Mapping[str, Peer]:
        """A read-only snapshot of the peers by node ID."""
        return MappingProxyType(self._peers)

    def get(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(peers)`` after every change; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def replace(self, peers: Mapping[str, Peer]) -> bool:
        """Make ``peers`` the current set; True (and listeners told) if anything changed."""
        if dict(peers) == self._peers:
            return False
        added = sorted(peers.keys() - self._peers.keys())
        removed = sorted(self._peers.keys() - peers.keys())
        self._peers = dict(peers)
        self.generation += 1
        log.info(
            "channel peers now %s (added %s, removed %s)",
            sorted(self._peers) or "none",
            added or "none",
            removed or "none",
        )
        for listener in list(self._listeners):
            listener(self.peers())
        return True

    async def update_from_links(
        self, links: Iterable[Mapping[str, Any]], read_ca: ReadCA
    ) -> list[LinkProblem]:
        """Rebuild the peers from the full list of QKDLinks, reading each named CA Secret once
        with ``read_ca`` (e.g. ``controllers.identity.peer_ca_reader``); returns the links'
        problems."""
        links = list(links)
        names = {
            str(secret)
            for link in links
            if (secret := (link.get("spec") or {}).get("peerCASecretName"))
        }
        cas = {name: await read_ca(name) for name in sorted(names)}
        peers, problems = peers_from_links(links, cas, local_node_id=self.local_node_id)
        self.replace(peers)
        return problems
