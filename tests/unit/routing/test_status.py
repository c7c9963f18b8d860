"""What a QKDLink says about the LSAs its peer sent: a LsasVerified condition and an Event
text, from the routing counters; never more than counts, reasons and node IDs."""

from __future__ import annotations

from controllers.routing.stats import RoutingStats
from controllers.routing.status import DROP_MEMORY, drop_event, lsa_condition


def test_no_drops_is_verified() -> None:
    stats = RoutingStats()
    cond = lsa_condition(stats.drops_from("node-b"), peer="node-b", now=5.0, generation=3)
    assert (cond["type"], cond["status"], cond["reason"]) == ("LsasVerified", "True", "Verified")
    assert cond["observedGeneration"] == 3
    assert drop_event(stats.drops_from("node-b"), peer="node-b", seen=0) is None


def test_drops_make_it_false_with_counts_and_the_latest_reason_then_it_clears() -> None:
    stats = RoutingStats()
    stats.drop("node-b", "not_newer", "node-d", 10.0)
    stats.drop("node-b", "bad_signature", "node-c", 20.0)
    stats.drop("node-b", "bad_signature", "node-c", 30.0)
    stats.drop("node-x", "malformed", "", 30.0)
    drops = stats.drops_from("node-b")
    cond = lsa_condition(drops, peer="node-b", now=35.0)
    assert (cond["status"], cond["reason"]) == ("False", "BadSignature")
    assert "2 bad signature, 1 not newer than held (replay)" in cond["message"]
    assert "originated by node node-c" in cond["message"]
    assert "5 s ago" in cond["message"]
    event = drop_event(drops, peer="node-b", seen=1)
    assert event is not None
    assert event.startswith("dropped 2 routing message(s) from node node-b")
    assert drop_event(drops, peer="node-b", seen=3) is None
    later = lsa_condition(drops, peer="node-b", now=30.0 + DROP_MEMORY + 1)
    assert later["status"] == "True"
    assert stats.as_dict()["dropped_bad_signature"] == 2
