"""Condition merging keeps transition times of unchanged conditions and others' conditions."""

from controllers.conditions import condition, find, merge_conditions


def test_unchanged_status_keeps_the_old_transition_time() -> None:
    old = [condition("Ready", ok=True, reason="Up", message="flowing", at="2026-01-01T00:00:00Z")]
    new = merge_conditions(old, [condition("Ready", ok=True, reason="Up", message="still")])
    assert new[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert new[0]["message"] == "still"


def test_changed_status_takes_the_new_transition_time() -> None:
    old = [condition("Ready", ok=True, reason="Up", message="", at="2026-01-01T00:00:00Z")]
    new = merge_conditions(old, [condition("Ready", ok=False, reason="LinkDown", message="x")])
    assert new[0]["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert new[0]["status"] == "False"


def test_conditions_of_other_types_are_kept() -> None:
    old = [condition("LinkFound", ok=True, reason="Found", message="")]
    new = merge_conditions(old, [condition("Ready", ok=None, reason="Starting", message="")])
    assert find(new, "LinkFound") is not None
    ready = find(new, "Ready")
    assert ready is not None
    assert ready["status"] == "Unknown"
