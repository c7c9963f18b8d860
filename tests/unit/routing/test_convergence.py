"""Whole networks of routers over the in-memory transport: they converge to the tables Dijkstra
gives over the configured network (the same database on every node, hence agreeing tables),
learn every SAE, and follow failures, costs, restarts and departures."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controllers.routing.memory import SimulatedNetwork
from controllers.routing.messages import MAX_SAES
from tests.unit.routing.helpers import SETTINGS, grid, name, network, random_graph, ring


def _tables_agree(net: SimulatedNetwork) -> None:
    """Every node's path continues as its next hop's own path (hop-by-hop consistency)."""
    for _node_id, node in net.nodes.items():
        for destination, path in node.router.paths.items():
            if path.next_hop is not None:
                assert net.nodes[path.next_hop].router.paths[destination].nodes == path.nodes[1:]


def _every_node_holds_the_same_database(net: SimulatedNetwork) -> None:
    databases = {
        n: sorted((lsa.source, lsa.type, lsa.seq) for lsa in node.router.database())
        for n, node in net.nodes.items()
    }
    assert len({tuple(db) for db in databases.values()}) == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda: ring(12),
        lambda: ring(31),
        lambda: grid(5, 5),
        lambda: random_graph(30, seed=1),
        lambda: random_graph(40, degree=3, seed=2),
        lambda: random_graph(25, degree=6, seed=3),
    ],
    ids=["ring-12", "ring-31", "grid-5x5", "random-30", "random-40", "random-25-dense"],
)
def test_networks_converge_to_dijkstra_over_the_configured_links(
    build: Callable[[], SimulatedNetwork],
) -> None:
    net = build()
    net.settle(rounds=30)
    _every_node_holds_the_same_database(net)
    _tables_agree(net)
    for node in net.nodes.values():
        assert not node.router.stats.drops, node.router.stats.drops
        assert len(node.router.paths) == len(net.nodes)


def test_a_ring_reroutes_the_long_way_round_when_a_link_fails() -> None:
    net = ring(10)
    net.settle()
    assert net.nodes[name(0)].router.paths[name(1)].nodes == (name(0), name(1))
    net.unlink(name(0), name(1))
    net.settle()
    assert net.nodes[name(0)].router.paths[name(1)].hops == 9
    _tables_agree(net)


def test_a_cut_channel_is_noticed_within_the_dead_interval_and_healed_after() -> None:
    net = ring(8)
    net.settle()
    net.cut(name(0), name(1))
    net.run_for(SETTINGS.dead_interval + SETTINGS.max_origination_hold)
    assert net.converged()
    assert net.nodes[name(0)].router.paths[name(1)].hops == 7
    net.heal(name(0), name(1))
    net.settle()
    assert net.nodes[name(0)].router.paths[name(1)].hops == 1


def test_a_cheaper_link_wins_once_its_cost_is_advertised() -> None:
    net = network()
    for n in "abcd":
        net.add_node(n, saes=[f"sae-{n}"])
    # A diamond: a-b-d and a-c-d, the b side cheaper.
    net.link("a", "b", cost=50_000)
    net.link("b", "d", cost=50_000)
    net.link("a", "c", cost=60_000)
    net.link("c", "d", cost=60_000)
    net.settle()
    assert net.nodes["a"].router.paths["d"].nodes == ("a", "b", "d")
    # The a-b link's keys drain: a's cost of it rises (equation 2).
    net.set_cost("a", "b", 100_000)
    net.settle()
    assert net.nodes["a"].router.paths["d"].nodes == ("a", "c", "d")
    assert net.nodes["a"].router.paths["d"].cost == 120_000


def test_a_cost_drift_within_the_hysteresis_is_not_advertised_until_the_refresh() -> None:
    net = ring(6)
    net.settle()
    sent = net.lsas_sent()
    # n000's own view of its link to n001 drifts by 8 %, below the 10 % hysteresis.
    net.set_cost(name(0), name(1), 50_000 + 4_000)
    net.run_for(SETTINGS.max_origination_hold)
    assert net.lsas_sent() == sent
    # n005 reaches n001 through n000, over the link n000 -> n001: still the advertised cost.
    assert net.nodes[name(5)].router.paths[name(1)].cost == 100_000
    net.run_for(SETTINGS.refresh_interval)
    net.settle()  # the refresh carries it
    assert net.nodes[name(5)].router.paths[name(1)].cost == 50_000 + 54_000


def test_saes_registered_and_removed_reach_every_node() -> None:
    net = random_graph(20, seed=4)
    net.settle()
    assert net.nodes[name(10)].directory.node_of("sae-3") == name(3)
    net.set_saes(name(3), ["sae-3", "new-app"])
    net.settle()
    assert all(n.directory.node_of("new-app") == name(3) for n in net.nodes.values())
    net.set_saes(name(3), [])
    net.settle()
    others = [n for n_id, n in net.nodes.items() if n_id != name(3)]
    assert all(n.directory.node_of("sae-3") is None for n in others)


def test_a_node_that_goes_away_is_unreachable_at_once_and_forgotten_after_the_lifetime() -> None:
    net = ring(6)
    net.settle()
    net.remove_node(name(3))
    net.run_for(SETTINGS.dead_interval + SETTINGS.max_origination_hold)
    for node in net.nodes.values():
        assert name(3) not in node.router.paths
        assert node.directory.node_of("sae-3") == name(3)  # known, unreachable, not expired
    net.run_for(SETTINGS.lsa_lifetime)
    for node in net.nodes.values():
        assert node.directory.node_of("sae-3") is None
        assert all(lsa.source != name(3) for lsa in node.router.database())
        assert node.router.stats.expired >= 2


def test_the_periodic_refresh_keeps_a_quiet_network_alive_past_the_lifetime() -> None:
    net = ring(5)
    net.settle()
    net.run_for(SETTINGS.lsa_lifetime * 3)
    assert net.converged()
    assert all(n.router.stats.expired == 0 for n in net.nodes.values())


def test_a_restarted_node_is_learnt_again_with_its_new_key_without_drops() -> None:
    net = random_graph(15, seed=5)
    net.settle()
    old_key = net.nodes[name(4)].router.key.public
    net.restart_node(name(4))
    assert net.nodes[name(4)].router.key.public != old_key
    net.settle()
    for node in net.nodes.values():
        assert not node.router.stats.drops, node.router.stats.drops
    assert net.nodes[name(4)].directory.node_of("sae-9") == name(9)


def test_a_restarted_node_whose_sequence_restarts_low_continues_above_its_old_instances() -> None:
    net = ring(4)
    net.settle()

    def own_seqs(at: str) -> dict[str, int]:
        return {x.type: x.seq for x in net.nodes[at].router.database() if x.source == name(0)}

    old = own_seqs(name(0))
    node = net.restart_node(name(0))
    node.router._seq_clock = lambda: 1  # a clock that went back across the restart
    net.run_for(SETTINGS.max_origination_hold * 2)
    new = own_seqs(name(2))
    assert new.keys() == old.keys() == {"S", "K"}
    assert all(new[t] > old[t] for t in new), (old, new)
    assert {x.key for x in net.nodes[name(2)].router.database() if x.source == name(0)} == {
        node.router.key.public
    }


def test_a_partition_heals_into_one_network_again() -> None:
    net = ring(8)
    net.settle()
    net.cut(name(0), name(1))
    net.cut(name(4), name(5))
    net.run_for(SETTINGS.dead_interval + SETTINGS.max_origination_hold)
    assert name(5) not in net.nodes[name(1)].router.paths
    net.set_saes(name(6), ["sae-6", "joined-while-apart"])
    net.run_for(5)
    net.heal(name(0), name(1))
    net.heal(name(4), name(5))
    net.settle()
    assert net.nodes[name(2)].directory.node_of("joined-while-apart") == name(6)
    _tables_agree(net)


def test_a_repeater_without_saes_sends_no_s_packet_until_it_has_one() -> None:
    net = network()
    for n, saes in (("a", ["sae-a"]), ("b", []), ("c", ["sae-c"])):
        net.add_node(n, saes=saes)
    net.link("a", "b")
    net.link("b", "c")
    net.settle()
    held = {(x.source, x.type) for x in net.nodes["a"].router.database()}
    assert ("b", "S") not in held
    assert ("b", "K") in held
    net.set_saes("b", ["sae-b"])
    net.settle()
    assert net.nodes["a"].directory.node_of("sae-b") == "b"
    net.set_saes("b", [])  # having had one, it must say it has none now
    net.settle()
    assert net.nodes["a"].directory.node_of("sae-b") is None


def test_more_saes_than_an_s_packet_holds_are_cut_to_the_bound_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = network()
    many = [f"app-{i:05d}" for i in range(MAX_SAES + 5)]
    net.add_node("a", saes=many)
    net.add_node("b")
    net.link("a", "b")
    net.run_for(10)  # (settle() would expect every SAE known)
    known = net.nodes["b"].directory.remote()["a"]
    assert len(known) == MAX_SAES
    assert "app-00000" in known
    assert f"app-{MAX_SAES + 4:05d}" not in known
    assert "its S packet lists the first" in caplog.text
