"""Point-to-point key delivery between two clusters: Sae, KeyRequest (master and automatic
slave), the inter-node channel, on a local QSS network of real processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork, apply
from tests.etsi014_client import Etsi014Client, key_map
from tests.integration.helpers import (
    eventually,
    get,
    keyrequest,
    kubectl_json,
    phase_of,
    secret_keys,
)

A, B = "node-a", "node-b"
NS_A, NS_B = "team-a", "team-b"
# SAE IDs of this module's own (the samples register "alice" on node-a too).
ALICE, BOB = "kd-alice", "kd-bob"


@dataclass
class Pair:
    network: QssNetwork
    stream: str

    @property
    def a(self) -> Cluster:
        return self.network.nodes[A].cluster

    @property
    def b(self) -> Cluster:
        return self.network.nodes[B].cluster


@pytest.fixture(scope="module")
def pair(qss_network: QssNetwork) -> Iterator[Pair]:
    link = qss_network.add_link(A, B, name="delivery", rate_bps=2_000_000, capacity=200_000)
    p = Pair(network=qss_network, stream=link.stream)
    qss_network.register_sae(A, NS_A, "alice", ALICE)
    qss_network.register_sae(B, NS_B, "bob", BOB)
    # The first request also waits for the SAE announcements to reach the other node.
    name = keyrequest(p.a, NS_A, sae="alice", slaveSaeID=BOB, number=1, size=256)
    status = eventually(lambda: phase_of(p.a, name, NS_A), timeout=60, what="first request")
    assert status["phase"] == "Ready", status
    yield p
    qss_network.stop_link(link.stream)


def test_keyrequest_on_a_yields_secrets_on_both_clusters_with_identical_keys(pair: Pair) -> None:
    name = keyrequest(pair.a, NS_A, sae="alice", slaveSaeID=BOB, number=10, size=512)
    status = eventually(lambda: phase_of(pair.a, name, NS_A), what="master request")
    assert status["phase"] == "Ready", status
    assert status["keyCount"] == 10
    assert status["peerNodeID"] == B
    keys_a = secret_keys(pair.a, f"{name}-keys", NS_A)
    assert sorted(keys_a) == sorted(status["keyIDs"])
    assert all(len(v) == 64 for v in keys_a.values())
    # The automatic slave request on B, in bob's namespace.
    slave_name = f"bob-{get(pair.a, 'keyrequest', name, NS_A)['metadata']['uid']}"  # type: ignore[index]
    slave = eventually(lambda: phase_of(pair.b, slave_name, NS_B), what="slave request")
    assert slave["phase"] == "Ready", slave
    keys_b = secret_keys(pair.b, f"{slave_name}-keys", NS_B)
    assert keys_b == keys_a


async def test_handwritten_slave_request_gets_the_same_keys_by_id(pair: Pair) -> None:
    # alice takes keys through ETSI 014 (no hand-over); bob asks for them by ID himself, as in
    # the paper, and gets the same bytes.
    creds = pair.network.sae_credentials(A, NS_A, "alice")
    async with Etsi014Client(
        pair.network.nodes[A].key_api_url,
        ca_pem=creds["ca.crt"],
        cert_pem=creds["tls.crt"],
        key_pem=creds["tls.key"],
        timeout=60,
    ) as alice:
        keys = key_map(await alice.enc_keys(BOB, number=3, size=256))
    name = keyrequest(
        pair.b, NS_B, sae="bob", masterSaeID=ALICE, keyIDs=list(keys), timeoutSeconds=10
    )
    status = eventually(lambda: phase_of(pair.b, name, NS_B), what="hand-written request")
    assert status["phase"] == "Ready", status
    assert status["keyIDs"] == list(keys)
    assert secret_keys(pair.b, f"{name}-keys", NS_B) == keys
    # Each key is delivered once: a second request for the same IDs finds none left.
    late = keyrequest(
        pair.b, NS_B, sae="bob", masterSaeID=ALICE, keyIDs=list(keys), timeoutSeconds=5
    )
    failed = eventually(lambda: phase_of(pair.b, late, NS_B))
    assert failed["phase"] == "Failed"
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "UnknownKeys"
    assert "already delivered" in ready["message"]


def test_keys_an_automatic_slave_request_took_are_not_delivered_again(pair: Pair) -> None:
    name = keyrequest(pair.a, NS_A, sae="alice", slaveSaeID=BOB, number=3, size=256)
    status = eventually(lambda: phase_of(pair.a, name, NS_A))
    uid = get(pair.a, "keyrequest", name, NS_A)["metadata"]["uid"]  # type: ignore[index]
    auto = f"bob-{uid}"
    eventually(lambda: phase_of(pair.b, auto, NS_B), what="automatic slave request")
    late = keyrequest(
        pair.b, NS_B, sae="bob", masterSaeID=ALICE, keyIDs=status["keyIDs"], timeoutSeconds=5
    )
    failed = eventually(lambda: phase_of(pair.b, late, NS_B))
    assert failed["phase"] == "Failed"
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "UnknownKeys"


def test_slave_request_with_an_unknown_key_id_fails_clearly(pair: Pair) -> None:
    name = keyrequest(
        pair.b, NS_B, sae="bob", masterSaeID=ALICE, keyIDs=[str(uuid.uuid4())], timeoutSeconds=5
    )
    status = eventually(lambda: phase_of(pair.b, name, NS_B))
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "UnknownKeys"
    assert get(pair.b, "secret", f"{name}-keys", NS_B) is None


def test_request_for_an_unknown_sae_fails_with_UnknownSae(pair: Pair) -> None:
    name = keyrequest(
        pair.a, NS_A, sae="alice", slaveSaeID="nobody", number=1, size=256, timeoutSeconds=3
    )
    status = eventually(lambda: phase_of(pair.a, name, NS_A))
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "UnknownSae"
    assert "nobody" in ready["message"]


def test_deleting_a_keyrequest_deletes_its_secret(pair: Pair) -> None:
    name = keyrequest(pair.a, NS_A, sae="alice", slaveSaeID=BOB, number=1, size=256)
    eventually(lambda: phase_of(pair.a, name, NS_A))
    assert get(pair.a, "secret", f"{name}-keys", NS_A) is not None
    pair.a.kubectl("delete", "keyrequest", name, "-n", NS_A)
    eventually(
        lambda: get(pair.a, "secret", f"{name}-keys", NS_A) is None,
        timeout=90,  # the garbage collector rediscovers resources every 30 s
        what="Secret garbage-collected",
    )


def test_link_whose_peer_ca_secret_is_missing_says_so_in_PeerTrusted(pair: Pair) -> None:
    apply(
        pair.a,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "QKDLink",
            "metadata": {"name": "untrusted"},
            "spec": {
                "peerNodeID": "node-z",
                "peerEndpoint": "https://127.0.0.1:1",
                "peerCASecretName": "no-such-secret",
            },
        },
    )

    def trusted() -> dict[str, Any] | None:
        obj = pair.a.kubectl("get", "qkdlink", "untrusted", "-o", "json").stdout
        conds = json.loads(obj).get("status", {}).get("conditions", [])
        return next((c for c in conds if c["type"] == "PeerTrusted"), None)

    cond = eventually(trusted, what="PeerTrusted condition")
    assert cond["status"] == "False"
    assert cond["reason"] == "PeerCASecretNotFound"
    assert "no-such-secret" in cond["message"]
    # The delivery link's peer is trusted.
    ok = json.loads(pair.a.kubectl("get", "qkdlink", "delivery", "-o", "json").stdout)
    peer = next(c for c in ok["status"]["conditions"] if c["type"] == "PeerTrusted")
    assert peer["status"] == "True"
    pair.a.kubectl("delete", "qkdlink", "untrusted")


def test_peer_presenting_a_certificate_of_another_node_shows_PeerCertificateRejected(
    pair: Pair,
) -> None:
    # A link to "node-x" whose endpoint is in fact node-b's channel: node-b's certificate names
    # node-b, so node-a refuses it when it calls, and the link says so.
    apply(
        pair.a,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "QKDLink",
            "metadata": {"name": "impostor"},
            "spec": {
                "peerNodeID": "node-x",
                "peerEndpoint": pair.network.nodes[B].channel_url,
                "peerCASecretName": f"{B}-ca",
            },
        },
    )

    def rejected() -> dict[str, Any] | None:
        obj = kubectl_json(pair.a, "get", "qkdlink", "impostor") or {}
        conds = obj.get("status", {}).get("conditions", [])
        cond = next((c for c in conds if c["type"] == "PeerTrusted"), None)
        return cond if cond and cond["reason"] == "PeerCertificateRejected" else None

    try:
        cond = eventually(rejected, timeout=60, what="PeerCertificateRejected")
        assert cond["status"] == "False"
        assert "node-x" in cond["message"]
    finally:
        pair.a.kubectl("delete", "qkdlink", "impostor")
