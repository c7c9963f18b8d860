"""From QKDLinks to channel peers (pure): which links make peers, and what keeps a link off."""

from __future__ import annotations

from typing import Any

import pytest

from controllers import pki
from controllers.channel import LinkProblem, Peer, PeerRegistry, peers_from_links

CA_B = pki.create_ca("node-b CA").cert_pem
CA_B2 = pki.create_ca("node-b second CA").cert_pem
CA_C = pki.create_ca("node-c CA").cert_pem


def _link(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def _b(name: str = "to-b", **extra: Any) -> dict[str, Any]:
    spec = {"peerNodeID": "node-b", "peerEndpoint": "https://b:8443", "peerCASecretName": "b-ca"}
    return _link(name, **(spec | extra))


def test_a_link_with_its_ca_makes_a_peer() -> None:
    peers, problems = peers_from_links([_b()], {"b-ca": CA_B}, local_node_id="node-a")
    assert problems == []
    assert peers == {
        "node-b": Peer(
            node_id="node-b", endpoint="https://b:8443", ca_pems=(CA_B,), links=("to-b",)
        )
    }
    assert [c.subject.rfc4514_string() for c in peers["node-b"].trust_anchors] == ["CN=node-b CA"]


def test_parallel_links_to_one_node_make_one_peer_trusting_each_links_ca() -> None:
    links = [_b("to-b-1"), _b("to-b-2", peerCASecretName="b-ca-2")]
    peers, problems = peers_from_links(
        links, {"b-ca": CA_B, "b-ca-2": CA_B2}, local_node_id="node-a"
    )
    assert problems == []
    assert peers["node-b"].links == ("to-b-1", "to-b-2")
    assert peers["node-b"].ca_pems == (CA_B, CA_B2)
    assert peers["node-b"].ca_bundle.count(b"BEGIN CERTIFICATE") == 2


def test_parallel_links_that_disagree_on_the_endpoint_are_reported() -> None:
    links = [_b("to-b-1"), _b("to-b-2", peerEndpoint="https://elsewhere:8443")]
    peers, problems = peers_from_links(links, {"b-ca": CA_B}, local_node_id="node-a")
    assert peers["node-b"].links == ("to-b-1",)
    assert problems == [
        LinkProblem(
            "to-b-2",
            "PeerEndpointConflict",
            "link to-b-1 reaches node node-b at https://b:8443, this link at "
            "https://elsewhere:8443; links to one node must name the same peerEndpoint",
        )
    ]


@pytest.mark.parametrize(
    ("link", "cas", "reason", "says"),
    [
        (_b(peerCASecretName=None), {}, "PeerCANotConfigured", "set spec.peerCASecretName"),
        (_b(), {}, "PeerCASecretNotFound", "Secret b-ca (peerCASecretName) is missing"),
        (_b(), {"b-ca": None}, "PeerCASecretNotFound", "has no ca.crt"),
        (_b(), {"b-ca": b"garbage"}, "PeerCAInvalid", "is not a PEM CA certificate"),
        (
            _b(),
            {"b-ca": pki.issue_node_certificate(pki.create_ca("x"), "node-b").cert_pem},
            "PeerCAInvalid",
            "is not a PEM CA certificate",
        ),
        (_b(peerNodeID="node-a"), {"b-ca": CA_B}, "InvalidSpec", "is this node itself"),
        (_link("to-b", peerNodeID="node-b"), {}, "InvalidSpec", "needs peerNodeID and"),
    ],
)
def test_a_link_that_cannot_join_the_channel_says_why(
    link: dict[str, Any], cas: dict[str, bytes | None], reason: str, says: str
) -> None:
    peers, problems = peers_from_links([link], cas, local_node_id="node-a")
    assert peers == {}
    assert [(p.link, p.reason) for p in problems] == [("to-b", reason)]
    assert says in problems[0].message


def test_links_pinned_to_another_node_are_not_this_nodes() -> None:
    peers, problems = peers_from_links(
        [_b(localNodeID="node-x"), _b("mine", localNodeID="node-a")],
        {"b-ca": CA_B},
        local_node_id="node-a",
    )
    assert problems == []
    assert peers["node-b"].links == ("mine",)


async def test_registry_reads_each_ca_secret_once_and_tells_listeners_of_changes() -> None:
    reads: list[str] = []
    secrets = {"b-ca": CA_B, "c-ca": CA_C}

    async def read_ca(name: str) -> bytes | None:
        reads.append(name)
        return secrets.get(name)

    registry = PeerRegistry(local_node_id="node-a")
    seen: list[list[str]] = []
    unsubscribe = registry.subscribe(lambda peers: seen.append(sorted(peers)))
    links = [
        _b("to-b-1"),
        _b("to-b-2"),
        _link("to-c", peerNodeID="node-c", peerEndpoint="https://c", peerCASecretName="c-ca"),
    ]
    assert await registry.update_from_links(links, read_ca) == []
    assert sorted(reads) == ["b-ca", "c-ca"]
    assert seen == [["node-b", "node-c"]]
    assert registry.generation == 1

    await registry.update_from_links(links, read_ca)  # nothing changed: nobody is told
    assert seen == [["node-b", "node-c"]]
    assert registry.generation == 1

    await registry.update_from_links(links[:2], read_ca)
    assert seen[-1] == ["node-b"]
    assert registry.get("node-c") is None

    unsubscribe()
    await registry.update_from_links([], read_ca)
    assert len(seen) == 2
    assert dict(registry.peers()) == {}
