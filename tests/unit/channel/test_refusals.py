"""PeerRefusals (pure): refusals by link, repeats folded, bounded, resolved by a later accept."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from controllers.channel import PeerRefusals, Refusal


def _refusal(
    reason: str = "UntrustedPeerCertificate",
    *,
    links: tuple[str, ...] = ("to-b",),
    claimed_node_id: str = "node-b",
    fingerprint: str = "f1",
) -> Refusal:
    return Refusal(
        reason, "m", links=links, claimed_node_id=claimed_node_id, fingerprint=fingerprint
    )


def test_latest_refusal_per_link() -> None:
    refusals = PeerRefusals()
    heard: list[Refusal] = []
    refusals.subscribe(heard.append)
    first = _refusal()
    second = _refusal("PeerNodeIDMismatch", links=("to-b", "to-c"), claimed_node_id="node-c")
    refusals.record(first)
    refusals.record(second)
    assert refusals.latest_for_link("to-b") == second
    assert refusals.latest_for_link("to-c") == second
    assert refusals.latest_for_link("to-d") is None
    assert refusals.latest_for_link("to-b", since=second.at + dt.timedelta(seconds=1)) is None
    assert heard == [first, second]


def test_repeats_are_folded_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="controllers.channel.refusals")
    refusals = PeerRefusals()
    for _ in range(100):
        refusals.record(_refusal())
    assert len(refusals.recent()) == 1
    assert len(caplog.records) == 1
    assert "channel refused a client" in caplog.records[0].getMessage()


def test_the_record_is_bounded_oldest_first_out() -> None:
    refusals = PeerRefusals(keep=3)
    for i in range(5):
        refusals.record(_refusal(fingerprint=f"f{i}"))
    assert [r.fingerprint for r in refusals.recent()] == ["f2", "f3", "f4"]


def test_accepting_a_node_resolves_its_refusals() -> None:
    refusals = PeerRefusals()
    refusals.record(_refusal())
    refusals.record(_refusal(claimed_node_id="node-c", links=("to-c",)))
    assert refusals.accepted_at("node-b") is None
    refusals.accepted("node-b")
    assert refusals.accepted_at("node-b") is not None
    assert refusals.latest_for_link("to-b") is None
    assert refusals.latest_for_link("to-c") is not None
