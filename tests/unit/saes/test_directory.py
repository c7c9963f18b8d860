"""SaeDirectory: which node an SAE is on, from this node's SAEs and other nodes' S packets."""

from __future__ import annotations

from controllers.saes.directory import SaeDirectory


def _directory(local: set[str] | None = None) -> SaeDirectory:
    return SaeDirectory(local_node_id="node-a", local=local if local is not None else set())


def test_unknown_sae_has_no_node() -> None:
    assert _directory().node_of("nobody") is None


def test_local_sae_is_on_this_node() -> None:
    local = {"sae-a"}
    directory = _directory(local)
    assert directory.node_of("sae-a") == "node-a"
    local.discard("sae-a")  # the directory reads the live local registry
    assert directory.node_of("sae-a") is None


def test_announced_saes_are_on_the_announcing_node() -> None:
    directory = _directory()
    assert directory.record("node-b", ["b1", "b2"], 1)
    assert directory.node_of("b1") == "node-b"
    assert directory.node_of("b2") == "node-b"
    assert directory.remote() == {"node-b": frozenset({"b1", "b2"})}
    assert directory.generation("node-b") == 1


def test_a_newer_announcement_replaces_the_whole_set() -> None:
    directory = _directory()
    directory.record("node-b", ["b1", "b2"], 1)
    assert directory.record("node-b", ["b2", "b3"], 2)
    assert directory.node_of("b1") is None
    assert directory.node_of("b2") == "node-b"
    assert directory.node_of("b3") == "node-b"


def test_stale_and_repeated_generations_are_ignored() -> None:
    directory = _directory()
    directory.record("node-b", ["b2"], 5)
    assert not directory.record("node-b", ["b1"], 4)
    assert not directory.record("node-b", ["b1"], 5)
    assert directory.node_of("b1") is None
    assert directory.node_of("b2") == "node-b"
    assert directory.generation("node-b") == 5


def test_generations_are_per_node() -> None:
    directory = _directory()
    directory.record("node-b", ["b1"], 100)
    assert directory.record("node-c", ["c1"], 1)
    assert directory.node_of("c1") == "node-c"


def test_an_empty_announcement_withdraws_everything() -> None:
    directory = _directory()
    directory.record("node-b", ["b1"], 1)
    assert directory.record("node-b", [], 2)
    assert directory.node_of("b1") is None
    assert directory.remote() == {}


def test_local_saes_win_over_announcements() -> None:
    directory = _directory({"mine"})
    directory.record("node-b", ["mine"], 1)
    assert directory.node_of("mine") == "node-a"
    assert directory.claimants("mine") == ["node-b"]


def test_announcements_in_this_nodes_name_are_ignored() -> None:
    directory = _directory()
    assert not directory.record("node-a", ["x"], 1)
    assert directory.node_of("x") is None


def test_an_id_announced_by_two_nodes_resolves_the_same_way_everywhere() -> None:
    one, two = _directory(), _directory()
    one.record("node-c", ["dup"], 1)
    one.record("node-b", ["dup"], 1)
    two.record("node-b", ["dup"], 1)
    two.record("node-c", ["dup"], 1)
    assert one.node_of("dup") == two.node_of("dup") == "node-b"
    assert one.claimants("dup") == ["node-b", "node-c"]
    one.record("node-b", [], 2)
    assert one.node_of("dup") == "node-c"


def test_forget_drops_a_nodes_saes_but_keeps_its_generation() -> None:
    directory = _directory()
    directory.record("node-b", ["b1"], 7)
    directory.record("node-c", ["c1"], 1)
    assert directory.forget("node-b")
    assert directory.node_of("b1") is None
    assert directory.node_of("c1") == "node-c"
    assert not directory.forget("node-b")
    # A delayed announcement from before the node left cannot bring it back...
    assert not directory.record("node-b", ["b1"], 6)
    assert directory.node_of("b1") is None
    # ...but a new one can.
    assert directory.record("node-b", ["b1"], 8)
    assert directory.node_of("b1") == "node-b"


def test_duplicates_within_one_announcement_count_once() -> None:
    directory = _directory()
    directory.record("node-b", ["b1", "b1"], 1)
    directory.record("node-b", [], 2)
    assert directory.node_of("b1") is None
    assert directory.claimants("b1") == []


def test_an_sae_is_not_known_absent_until_every_neighbour_has_answered() -> None:
    directory = SaeDirectory(local_node_id="node-a", local={"a1"})
    directory.set_neighbours(["node-b", "node-c"])
    assert not directory.is_known_absent("zz")
    directory.record("node-b", ["b1"], 1)
    assert not directory.is_known_absent("zz")  # node-c has not answered
    directory.record("node-c", [], 1)
    assert directory.is_known_absent("zz")
    assert not directory.is_known_absent("b1")
    assert not directory.is_known_absent("a1")


def test_a_new_neighbour_makes_unknown_saes_not_known_yet_again() -> None:
    directory = SaeDirectory(local_node_id="node-a", local=set())
    directory.set_neighbours(["node-b"])
    directory.record("node-b", [], 1)
    assert directory.is_known_absent("zz")
    directory.set_neighbours(["node-b", "node-d"])
    assert not directory.is_known_absent("zz")


def test_a_neighbour_that_exchanged_its_database_has_told_us_even_without_saes() -> None:
    directory = SaeDirectory(local_node_id="node-a", local=set())
    directory.set_neighbours(["node-b"])
    assert not directory.heard_from("node-b")
    directory.synchronised("node-b")  # a repeater: no S packet of its own, but an exchange
    assert directory.heard_from("node-b")
    assert directory.is_known_absent("zz")
