"""Routing on real clusters over the real channel: every node's Route objects for three nodes in
a line, then for a diamond, and how they follow the network: a link's keys drained, a link's
channel cut, a node gone; plus LSAs forged, altered and replayed by a neighbour, refused and
counted on that neighbour's QKDLink.

The nodes are the session's (``qss_network``: node-a and node-b, with node-c and node-d added
here if no earlier module did), built from ``examples/topologies/line3.yaml`` and then
``diamond.yaml`` with this module's names (links and SAE IDs prefixed ``rt-``). QKDLinks other
modules left behind between these nodes are deleted first, so that only this module's links
join them. The tests run in file order: the diamond grows out of the line.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controllers import pki
from controllers.channel import Peer, PeerClients, PeerError, PeerRegistry
from controllers.identity import NodeIdentity
from controllers.keystore import KeyStore
from controllers.routing.messages import EXCHANGE_PATH, FLOOD_PATH, Exchange, Flood, Hello, Lsa
from controllers.routing.settings import RoutingSettings
from controllers.routing.signing import RoutingKey
from qss_api.wire import check
from tests.cluster.localcluster import REPO_ROOT, Cluster
from tests.cluster.network import QssNetwork, apply, create_secret
from tests.cluster.topology import load_topology
from tests.fixtures.cluster import LocalNetwork
from tests.integration.helpers import eventually, kubectl_json
from tests.tcprelay import TcpRelay

EXAMPLES = REPO_ROOT / "examples" / "topologies"
LINE = load_topology(EXAMPLES / "line3.yaml").renamed(link_prefix="rt-", sae_prefix="rt-")
DIAMOND = load_topology(EXAMPLES / "diamond.yaml").renamed(link_prefix="rt-", sae_prefix="rt-")
NODES = ("node-a", "node-b", "node-c", "node-d")
# Changes reach every Route within the dead interval (8 s), the origination hold and a link
# sample (2 s) or two; the margin is for a loaded machine.
MOVES_WITHIN = 60.0
# An older LSA within this long after its successor is a flooding race, not a counted replay.
RACE_WINDOW = RoutingSettings().dead_interval


def routes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """This module's Routes on ``cluster``: SAE ID -> spec."""
    listed = kubectl_json(cluster, "get", "routes") or {}
    return {
        item["spec"]["saeID"]: item["spec"]
        for item in listed.get("items", [])
        if item["spec"]["saeID"].startswith("rt-")
    }


def paths(cluster: Cluster) -> dict[str, list[str]]:
    return {sae: spec["path"] for sae, spec in routes(cluster).items()}


def _clear_other_links(network: QssNetwork) -> None:
    mine = {link.stream for link in (*LINE.links, *DIAMOND.links)}
    for node in NODES:
        if node not in network.nodes:
            continue
        cluster = network.nodes[node].cluster
        for item in (kubectl_json(cluster, "get", "qkdlinks") or {}).get("items", []):
            if item["metadata"]["name"] not in mine:
                cluster.kubectl("delete", "qkdlink", item["metadata"]["name"], "--wait=false")


@pytest.fixture(scope="module")
def line(qss_network: QssNetwork, local_network: LocalNetwork) -> Iterator[QssNetwork]:
    for node in LINE.nodes:
        if node not in qss_network.nodes:
            qss_network.add_node(node, local_network.cluster(node))
    _clear_other_links(qss_network)
    LINE.build(qss_network)
    yield qss_network
    for link in (*LINE.links, *DIAMOND.links):
        if link.stream in qss_network.links:
            qss_network.remove_link(link.stream)


@pytest.fixture(scope="module")
def diamond(line: QssNetwork, local_network: LocalNetwork) -> QssNetwork:
    """The line becomes the diamond: the b-c link goes, node-d and its links come."""
    line.remove_link("rt-node-b-node-c")
    DIAMOND.build(line, cluster_for=local_network.cluster)
    return line


# -- three nodes in a line -----------------------------------------------------------------------


def test_every_node_of_the_line_has_a_route_to_every_sae(line: QssNetwork) -> None:
    want = {
        "node-a": {"rt-alice": ["node-a"], "rt-carol": ["node-a", "node-b", "node-c"]},
        "node-b": {"rt-alice": ["node-b", "node-a"], "rt-carol": ["node-b", "node-c"]},
        "node-c": {"rt-alice": ["node-c", "node-b", "node-a"], "rt-carol": ["node-c"]},
    }
    for node, expected in want.items():
        cluster = line.nodes[node].cluster

        def arrived(c: Cluster = cluster, e: dict[str, list[str]] = expected) -> bool:
            return paths(c) == e

        eventually(arrived, timeout=90, what=f"{node}'s routes")
    a = routes(line.nodes["node-a"].cluster)
    assert a["rt-carol"]["destinationNodeID"] == "node-c"
    assert a["rt-carol"]["nextHopNodeID"] == "node-b"
    assert a["rt-carol"]["length"] == 2
    assert a["rt-carol"]["cost"] >= 2  # two links of equation (2), each at least 1
    assert (a["rt-alice"]["nextHopNodeID"], a["rt-alice"]["length"], a["rt-alice"]["cost"]) == (
        "",
        0,
        0,
    )


def test_kubectl_get_routes_shows_sae_destination_next_hop_cost_hops_and_age(
    line: QssNetwork,
) -> None:
    cluster = line.nodes["node-a"].cluster
    eventually(lambda: "rt-carol" in routes(cluster), what="a route to rt-carol")
    lines = cluster.kubectl("get", "routes").stdout.splitlines()
    header = lines[0].split()
    assert header[:2] == ["NAME", "SAE"]
    for column in ("DESTINATION", "NEXT", "HOP", "COST", "HOPS", "AGE"):
        assert column in header
    row = next(r.split() for r in lines if r.startswith("rt-carol "))
    assert row[1:4] == ["rt-carol", "node-c", "node-b"]
    wide = cluster.kubectl("get", "route", "rt-carol", "-o", "wide").stdout
    assert '["node-a","node-b","node-c"]' in wide


def test_a_route_edited_deleted_or_made_by_hand_is_put_back_or_removed(line: QssNetwork) -> None:
    cluster = line.nodes["node-a"].cluster
    eventually(lambda: "rt-carol" in routes(cluster), what="a route to rt-carol")
    cluster.kubectl("patch", "route", "rt-carol", "--type=merge", "-p", '{"spec": {"cost": 1}}')
    eventually(lambda: routes(cluster)["rt-carol"]["cost"] != 1, what="the edit reverted")
    cluster.kubectl("delete", "route", "rt-carol")
    eventually(lambda: "rt-carol" in routes(cluster), what="the deleted route back")
    bogus = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "Route",
        "metadata": {"name": "rt-bogus"},
        "spec": {
            "saeID": "rt-bogus",
            "destinationNodeID": "node-b",
            "nextHopNodeID": "node-b",
            "path": ["node-a", "node-b"],
            "cost": 1,
            "length": 1,
        },
    }
    apply(cluster, bogus)
    eventually(lambda: "rt-bogus" not in routes(cluster), what="the hand-made route gone")


# -- the diamond -------------------------------------------------------------------------------


SAES = {"rt-alice": "node-a", "rt-carol": "node-c", "rt-dave": "node-d"}


def _agreeing_tables(network: QssNetwork) -> dict[str, dict[str, list[str]]] | None:
    tables = {n: paths(network.nodes[n].cluster) for n in NODES}
    for node, table in tables.items():
        for sae, home in SAES.items():
            path = table.get(sae)
            if path is None or path[0] != node or path[-1] != home:
                return None
            if len(path) > 1 and tables[path[1]].get(sae) != path[1:]:
                return None  # the next hop would send it elsewhere
    return tables


def test_every_node_of_the_diamond_has_routes_that_agree(diamond: QssNetwork) -> None:
    tables = eventually(lambda: _agreeing_tables(diamond), timeout=120, what="agreeing routes")
    assert len(tables["node-a"]["rt-dave"]) == 3
    assert tables["node-b"]["rt-carol"] in (
        ["node-b", "node-a", "node-c"],
        ["node-b", "node-d", "node-c"],
    )


def _next_hop(network: QssNetwork, node: str, sae: str) -> str | None:
    spec = routes(network.nodes[node].cluster).get(sae)
    return None if spec is None else str(spec["nextHopNodeID"])


async def _drain(network: QssNetwork, stream: str) -> None:
    """Take every key of the stream out of both buffers (the device stopped first): each end
    puts all it holds into a block that stays pending for longer than the test runs."""
    pair = network.links[stream]
    for node in (pair.a, pair.b):
        async with KeyStore.from_url(network.nodes[node].redis_url) as store:
            counts = await store.counts(stream=stream)
            if counts.available:
                await store.reserve_block(
                    stream=stream,
                    block_id=str(uuid.uuid4()),
                    owner="rt-drain/nobody",
                    count=counts.available,
                    size_bits=counts.chunk_bytes * 8,
                    from_newest=False,
                    lease_ms=3_600_000,
                    pending_ms=3_600_000,
                )


def _other(side: str) -> str:
    return "node-c" if side == "node-b" else "node-b"


def _stream(x: str, y: str) -> str:
    return f"rt-{min(x, y)}-{max(x, y)}"


def test_draining_the_keys_of_the_link_on_the_route_moves_it_to_the_other_side(
    diamond: QssNetwork,
) -> None:
    # Which side node-a's route to node-d takes first depends on how the four buffers filled
    # (and on costs within the hysteresis); whichever it is, draining its first link moves it.
    side = eventually(lambda: _next_hop(diamond, "node-a", "rt-dave"), what="a route to rt-dave")
    assert side in ("node-b", "node-c")
    stream = _stream("node-a", side)
    diamond.device_fault(stream, link_down=True)
    asyncio.run(_drain(diamond, stream))
    started = time.monotonic()
    eventually(
        lambda: _next_hop(diamond, "node-a", "rt-dave") == _other(side),
        timeout=MOVES_WITHIN,
        what=f"node-a's route to rt-dave away from {side}",
    )
    assert time.monotonic() - started < MOVES_WITHIN
    route = routes(diamond.nodes["node-a"].cluster)["rt-dave"]
    assert route["path"] == ["node-a", _other(side), "node-d"]
    # The link's status is written on its own cadence, which may trail the routing engine's view.
    eventually(
        lambda: _link_cost(diamond, stream) >= 100,  # equation (2): c0 for an empty buffer
        timeout=MOVES_WITHIN,
        what=f"the drained link {stream} showing the empty buffer's cost",
    )


def _link_cost(network: QssNetwork, stream: str) -> float:
    link = kubectl_json(network.nodes["node-a"].cluster, "get", "qkdlink", stream) or {}
    return float(link.get("status", {}).get("cost", 0))


def _point(network: QssNetwork, node: str, link: str, endpoint: str) -> None:
    patch = json.dumps({"spec": {"peerEndpoint": endpoint}})
    network.nodes[node].cluster.kubectl("patch", "qkdlink", link, "--type=merge", "-p", patch)


def test_cutting_the_channel_of_the_link_on_the_route_moves_it_back(diamond: QssNetwork) -> None:
    # The route avoids the drained side; cut the channel of its second link (side - node-d):
    # the drained side is then the only way left.
    side = eventually(lambda: _next_hop(diamond, "node-a", "rt-dave"), what="a route to rt-dave")
    x, d = diamond.nodes[side], diamond.nodes["node-d"]
    to_d, to_x = TcpRelay(d.channel_port), TcpRelay(x.channel_port)
    link = _stream(side, "node-d")
    try:
        _point(diamond, side, link, f"https://127.0.0.1:{to_d.port}")
        _point(diamond, "node-d", link, f"https://127.0.0.1:{to_x.port}")
        # The channel now runs through the relays (both ways), and the route stays.
        eventually(lambda: to_d.connections and to_x.connections, timeout=30, what="relayed")
        # Re-pointing the link drops its channel for a moment, which may move the route to the
        # drained side until the link is up again through the relays.
        eventually(
            lambda: _next_hop(diamond, "node-a", "rt-dave") == side,
            timeout=MOVES_WITHIN,
            what=f"the route through {side} once the link runs through the relays",
        )
        to_d.cut()
        to_x.cut()
        eventually(
            lambda: _next_hop(diamond, "node-a", "rt-dave") == _other(side),
            timeout=MOVES_WITHIN,
            what=f"node-a's route to rt-dave back through {_other(side)}",
        )
        # The side node learns of the cut by its own LSAs and Dijkstra run, not with node-a's.
        around = [side, "node-a", _other(side), "node-d"]
        eventually(
            lambda: paths(x.cluster).get("rt-dave") == around,
            timeout=MOVES_WITHIN,
            what=f"{side}'s route to rt-dave around the cut link",
        )
    finally:
        to_d.cut()
        to_x.cut()
        _point(diamond, side, link, d.channel_url)
        _point(diamond, "node-d", link, x.channel_url)


def _lsa(lsas: tuple[Lsa, ...], source: str, type_: str) -> Lsa:
    return next(x for x in lsas if (x.source, x.type) == (source, type_))


def _verified(cluster: Cluster, link: str) -> dict[str, Any] | None:
    obj = kubectl_json(cluster, "get", "qkdlink", link) or {}
    conditions = obj.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "LsasVerified"), None)


async def test_lsas_forged_altered_or_replayed_by_a_neighbour_are_refused_and_counted(
    diamond: QssNetwork, tmp_path: Path
) -> None:
    a = diamond.nodes["node-a"]
    # A test process joins as node-t, a neighbour of node-a by a QKDLink of its own.
    ca = pki.create_ca("rt attacker CA")
    cert = pki.issue_node_certificate(ca, "node-t")
    create_secret(a.cluster, "rt-attacker-ca", {"ca.crt": ca.cert_pem})
    apply(
        a.cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "QKDLink",
            "metadata": {"name": "rt-attacker"},
            "spec": {
                "peerNodeID": "node-t",
                "peerEndpoint": "https://127.0.0.1:1",
                "peerCASecretName": "rt-attacker-ca",
            },
        },
    )
    identity = NodeIdentity(
        node_id="node-t", ca_cert_pem=ca.cert_pem, cert_pem=cert.cert_pem, key_pem=cert.key_pem
    )
    registry = PeerRegistry(local_node_id="node-t")
    registry.replace(
        {
            "node-a": Peer(
                node_id="node-a", endpoint=a.channel_url, ca_pems=(a.ca.cert_pem,), links=("a",)
            )
        }
    )
    clients = PeerClients(identity=identity, registry=registry)
    hello = Hello(version=1, node="node-t", key=RoutingKey().public)

    async def post(path: str, message: Exchange | Flood) -> Any:
        return await clients.post_json("node-a", path, message.model_dump(mode="json"))

    async def exchange() -> tuple[Lsa, ...]:
        for _ in range(150):  # until node-a has read the new QKDLink
            try:
                return check(Exchange, await post(EXCHANGE_PATH, Exchange(hello=hello))).lsas
            except PeerError:
                await asyncio.sleep(0.2)
        raise AssertionError("node-a never took node-t in as a neighbour")

    try:
        db = await exchange()
        before = set(routes(a.cluster))
        # Sequence numbers well above any the originators will reach during the test, so the
        # two forgeries are "newer" whatever the originators do meanwhile.
        ahead = 2**62
        # 1. Forged: a newer "S packet of node-d" listing one SAE more, the old signature.
        dave = _lsa(db, "node-d", "S")
        forged = dave.model_copy(
            update={"seq": ahead, "saes": tuple(sorted((*dave.saes, "rt-mallory")))}
        )
        # 2. Altered on the way: node-c's K packet with its links made cheap.
        c_k = _lsa(db, "node-c", "K")
        altered = c_k.model_copy(
            update={
                "seq": ahead,
                "links": tuple(x.model_copy(update={"cost": 1000}) for x in c_k.links),
            }
        )
        for lsa in (forged, altered):
            await post(FLOOD_PATH, Flood(forwarder="node-t", lsas=(lsa,)))
        # 3. Replayed: node-c's S packet as it was before node-c registered another SAE, sent
        # once its successor is older than the window in which flooding races are forgiven.
        carol = _lsa(db, "node-c", "S")
        await asyncio.to_thread(
            diamond.register_sae, "node-c", DIAMOND.sae_namespace, "rt-carol2", "rt-carol2"
        )
        await asyncio.to_thread(
            eventually, lambda: "rt-carol2" in routes(a.cluster), 60, "rt-carol2 known on node-a"
        )
        await asyncio.sleep(RACE_WINDOW + 1)
        await post(FLOOD_PATH, Flood(forwarder="node-t", lsas=(carol,)))

        def counted() -> dict[str, Any] | None:
            cond = _verified(a.cluster, "rt-attacker")
            return cond if cond and "1 not newer" in cond["message"] else None

        cond = await asyncio.to_thread(eventually, counted, 30, "LsasVerified with the drops")
        assert cond["status"] == "False"
        assert cond["reason"] == "NotNewer"  # the latest drop
        assert "2 bad signature" in cond["message"]
        events = kubectl_json(
            a.cluster, "get", "events", "--field-selector", "involvedObject.name=rt-attacker"
        ) or {"items": []}
        assert any(e["reason"] == "LsaDropped" for e in events["items"])
        # Nothing they said took: no new SAE, and node-a's other links are as verified as ever.
        after = set(routes(a.cluster))
        assert "rt-mallory" not in after
        assert after == before | {"rt-carol2"}
        trusted = _verified(a.cluster, "rt-node-a-node-c")
        assert trusted is not None
        assert trusted["status"] == "True"
    finally:
        await clients.aclose()
        a.cluster.kubectl("delete", "qkdlink", "rt-attacker", "--ignore-not-found")


def test_a_node_that_goes_away_has_its_saes_routes_removed(diamond: QssNetwork) -> None:
    others = ("node-a", "node-b", "node-c")

    def reach_dave(*, wanted: bool) -> bool:
        return all(("rt-dave" in routes(diamond.nodes[n].cluster)) == wanted for n in others)

    eventually(lambda: reach_dave(wanted=True), timeout=60, what="routes to rt-dave")
    diamond.kill_controller("node-d")
    try:
        eventually(
            lambda: reach_dave(wanted=False), timeout=MOVES_WITHIN, what="routes to rt-dave gone"
        )
        assert set(routes(diamond.nodes["node-a"].cluster)) >= {"rt-alice", "rt-carol"}
    finally:
        diamond.start_controller(diamond.nodes["node-d"])
