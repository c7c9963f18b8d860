"""A link that flaps, or whose cost jitters, does not make an LSA storm: originations are
throttled with a growing hold and small cost changes wait for the refresh."""

from __future__ import annotations

import itertools

from controllers.routing.throttle import Throttle
from tests.unit.routing.helpers import QUIET, name, ring


def test_the_throttle_fires_at_once_then_backs_off_and_recovers() -> None:
    throttle = Throttle(initial=1.0, maximum=8.0)
    throttle.request()
    first = throttle.due_at()
    assert first is not None
    assert first <= 0
    fired = []
    now = 0.0
    while now < 60:  # a change every 0.1 s for a minute
        throttle.request()
        due = throttle.due_at()
        assert due is not None
        if due <= now:
            throttle.fire(now)
            fired.append(now)
        now = round(now + 0.1, 1)
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(gaps) == 8.0
    assert len(fired) <= 60 / 8 + 4
    # After a quiet spell of twice the maximum the next change goes out at once again.
    throttle.request()
    assert throttle.due_at() == fired[-1] + 8.0
    throttle.fire(fired[-1] + 40)
    throttle.request()
    assert throttle.due_at() == fired[-1] + 41


def test_a_link_flapping_for_a_minute_costs_few_lsas_and_ends_converged() -> None:
    net = ring(10, settings=QUIET)
    net.settle()
    originated = {n: node.router.stats.originated for n, node in net.nodes.items()}
    flaps = 0
    for _ in range(300):  # down and up every 0.2 s for a minute
        net.unlink(name(0), name(1))
        net.run_for(0.1)
        net.link(name(0), name(1), cost=50_000)
        net.run_for(0.1)
        flaps += 1
    net.settle()
    extra = {n: node.router.stats.originated - originated[n] for n, node in net.nodes.items()}
    # Only the link's ends originate, and at most one K packet per hold (up to 8 s) each: a
    # storm would be one per flap (300), times the whole network.
    assert {n for n, count in extra.items() if count} == {name(0), name(1)}
    assert max(extra.values()) <= 60 / QUIET.max_origination_hold + 6
    assert flaps == 300


def test_cost_jitter_below_the_hysteresis_sends_nothing() -> None:
    net = ring(8, settings=QUIET)
    net.settle()
    sent = net.lsas_sent()
    for i in range(200):  # a busy link: its cost wobbles around 50 by up to 4 units
        net.set_cost(name(0), name(1), 50_000 + (4_000 if i % 2 else -4_000))
        net.run_for(0.5)
    assert net.lsas_sent() == sent  # hellos only; not one LSA
    # A real change still goes out at once.
    net.set_cost(name(0), name(1), 90_000)
    net.run_for(QUIET.max_origination_hold)
    assert net.lsas_sent() > sent
