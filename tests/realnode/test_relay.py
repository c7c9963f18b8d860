"""Multi-hop relay on pods: a KeyRequest of alice (node-a) for carol (node-c), two hops away on the
session's line node-a - node-b - node-c, made as ``make demo`` makes it
(``tests.cluster.demo.relayed_request``). Its keys are relayed through node-b, a trusted repeater:
the Secrets on node-a and node-c hold the same keys, node-b holds no KeyRequest, Secret or key of
it, and every key is audited at the three stores (each stream end accounts for every key it
added, nothing stays reserved, and the path's streams consumed exactly the keys the relay needs).
"""

from __future__ import annotations

import base64
from functools import partial

import pytest

from controllers.delivery.relay_pad import tag_keys_needed
from controllers.keystore.model import StreamCounts
from tests.cluster.demo import relayed_request
from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import DEMO_NETWORK, RealQssNetwork
from tests.integration.helpers import eventually, get, secret_keys
from tests.realnode.helpers import stream_counts, unique
from tests.waiting import eventually_async

pytestmark = pytest.mark.realnode

A, B, C = DEMO_NETWORK.nodes
AB, BC = DEMO_NETWORK.streams
NUMBER, SIZE = 10, 256  # as relayed_request asks
SAE_NAMESPACE = DEMO_NETWORK.saes[A][0]  # alice's and carol's


async def all_counts(network: RealQssNetwork) -> dict[tuple[str, str], StreamCounts]:
    """Every stream end's counts: (node, stream) -> counts."""
    return {
        (node, stream): await stream_counts(network.clusters[node], stream)
        for stream, ends in DEMO_NETWORK.streams.items()
        for node in ends
    }


async def test_keyrequest_from_alice_for_carol_on_pods_is_relayed_through_node_b(
    real_network: RealQssNetwork,
) -> None:
    assert DEMO_NETWORK.streams == {AB: (A, B), BC: (B, C)}, "the test expects a line"
    clusters = real_network.clusters
    before = await all_counts(real_network)
    name = unique("relay")
    try:
        relayed = relayed_request(
            clusters, (A, DEMO_NETWORK.saes[A]), (C, DEMO_NETWORK.saes[C]), name=name
        )
        namespace = relayed.namespace
        assert relayed.path == [A, B, C]
        keys_a = secret_keys(clusters[A], f"{relayed.master_request}-keys", namespace)
        keys_c = secret_keys(clusters[C], f"{relayed.slave_request}-keys", namespace)
        assert len(keys_a) == NUMBER
        assert all(len(key) == SIZE // 8 for key in keys_a.values())
        assert keys_c == keys_a, "node-a and node-c hold different keys"
        assert len(set(keys_a.values())) == NUMBER, "two keys share their bytes"

        # node-b, the repeater, holds no KeyRequest, no Secret and no key of this relay.
        b = clusters[B]
        requests = b.kubectl("get", "keyrequests", "-A", "-o", "json").stdout
        secrets = b.kubectl("get", "secrets", "-A", "-o", "json").stdout
        assert relayed.master_request not in requests + secrets
        assert relayed.slave_request not in requests + secrets
        for key_id, key in keys_a.items():
            assert key_id not in requests + secrets
            assert base64.b64encode(key).decode() not in secrets

        # The three stores: every key accounted for, nothing reserved once the relay is done,
        # and exactly the keys the relay needs consumed: the keys themselves on a-b at both
        # ends, as many pads and the integrity tag's keys on b-c.
        async def settled() -> dict[tuple[str, str], StreamCounts] | None:
            now = await all_counts(real_network)
            return None if any(c.reserved for c in now.values()) else now

        after = await eventually_async(
            settled, 120, "no reservation left at the three stores", poll=0.2
        )
        for end, c in after.items():
            assert c.available + c.reserved + c.consumed + c.dropped == c.added, (end, c)
            assert c.added >= before[end].added, f"keys added at {end} were lost"
            # Chunks may be dropped meanwhile, never delivered: the session's buffers are full,
            # so the device's keys expire unread and both ends drop them, and keys given back
            # to a full buffer are dropped (docs/key-delivery.md). The consumed counts below
            # are what proves no relayed key was lost or used twice.
        tag = tag_keys_needed(SIZE)
        consumed = {end: after[end].consumed - before[end].consumed for end in after}
        assert consumed == {
            (A, AB): NUMBER,
            (B, AB): NUMBER,
            (B, BC): NUMBER + tag,
            (C, BC): NUMBER + tag,
        }
    finally:
        slave_requests = delete_relayed(clusters, name)
    # The KeyRequests' Secrets go with them: the relayed keys stay nowhere.
    for node, request in ((A, name), *((C, s) for s in slave_requests)):
        eventually(
            partial(_gone, clusters[node], f"{request}-keys", SAE_NAMESPACE),
            120,
            f"the Secret of {request} on {node} deleted",
        )


def delete_relayed(clusters: dict[str, Cluster], name: str) -> list[str]:
    """Delete the relayed KeyRequest ``name`` on node-a and its slave side on node-c (named
    after the master's UID), whatever state the test left them in. The slave sides' names."""
    master = get(clusters[A], "keyrequest", name, SAE_NAMESPACE)
    if master is None:
        return []
    slave = f"{DEMO_NETWORK.saes[C][1]}-{master['metadata']['uid']}"
    for node, request in ((A, name), (C, slave)):
        clusters[node].kubectl(
            "delete", "keyrequest", request, "-n", SAE_NAMESPACE, "--ignore-not-found"
        )
    return [slave]


def _gone(cluster: Cluster, secret: str, namespace: str) -> bool:
    return get(cluster, "secret", secret, namespace) is None
