"""LSAs that a forwarder forged, altered or replayed: each is refused, counted against the
neighbour that sent it, and changes no route and no SAE anywhere. And the way trust spreads:
a distant originator's key is accepted only once an authenticated K packet vouches for it."""

from __future__ import annotations

from typing import Any

import pytest

from controllers.routing.memory import SimulatedNetwork
from controllers.routing.messages import Exchange, Flood, LinkEntry, Lsa
from controllers.routing.signing import RoutingKey
from tests.unit.routing.helpers import SETTINGS, network, signed


@pytest.fixture
def line() -> SimulatedNetwork:
    """a - b - c - d, settled; b plays the misbehaving forwarder towards a."""
    net = network()
    for n in "abcd":
        net.add_node(n, saes=[f"sae-{n}"])
    for x, y in ("ab", "bc", "cd"):
        net.link(x, y, cost=50_000)
    net.settle()
    return net


def _held(net: SimulatedNetwork, at: str, source: str, type_: str = "S") -> Lsa:
    return next(x for x in net.nodes[at].router.database() if (x.source, x.type) == (source, type_))


def _view(net: SimulatedNetwork, at: str) -> tuple[Any, ...]:
    router = net.nodes[at].router
    db = sorted((x.source, x.type, x.seq) for x in router.database())
    return dict(router.paths), net.nodes[at].directory.remote(), db


def _flood(net: SimulatedNetwork, lsa: Lsa, *, by: str = "b", to: str = "a") -> None:
    net.send(by, to, Flood(forwarder=by, lsas=(lsa,)))
    net.run_for(0.5)


def _drops(net: SimulatedNetwork, at: str = "a", peer: str = "b") -> dict[str, int]:
    return dict(net.nodes[at].router.stats.drops_from(peer).counts)


def test_a_forged_lsa_with_a_bad_signature_is_dropped_and_counted(line: SimulatedNetwork) -> None:
    before = _view(line, "a")
    real = _held(line, "b", "d")
    forged = real.model_copy(update={"seq": real.seq + 1, "saes": ("mallory", "sae-d")})
    _flood(line, forged)
    assert _drops(line) == {"bad_signature": 1}
    assert line.nodes["a"].router.stats.drops_from("b").last.source == "d"  # type: ignore[union-attr]
    assert _view(line, "a") == before
    assert line.nodes["a"].directory.node_of("mallory") is None


def test_an_lsa_altered_by_its_forwarder_under_the_same_number_is_dropped(
    line: SimulatedNetwork,
) -> None:
    before = _view(line, "a")
    real = _held(line, "b", "c", "K")
    cheaper = tuple(link.model_copy(update={"cost": 1000}) for link in real.links)
    _flood(line, real.model_copy(update={"links": cheaper}))
    assert _drops(line) == {"bad_signature": 1}
    assert _view(line, "a") == before


def test_a_replayed_older_lsa_is_dropped_and_counted(line: SimulatedNetwork) -> None:
    old = _held(line, "b", "d")
    line.set_saes("d", ["sae-d", "sae-d2"])
    line.settle()
    before = _view(line, "a")
    line.run_for(SETTINGS.dead_interval)  # beyond a flooding race
    _flood(line, old)
    assert _drops(line) == {"not_newer": 1}
    assert _view(line, "a") == before
    assert line.nodes["a"].directory.node_of("sae-d2") == "d"


def test_a_replay_after_the_originator_has_expired_does_not_bring_it_back(
    line: SimulatedNetwork,
) -> None:
    last = _held(line, "b", "d")
    line.remove_node("d")
    line.run_for(SETTINGS.lsa_lifetime + SETTINGS.dead_interval)
    assert line.nodes["a"].directory.node_of("sae-d") is None
    _flood(line, last.model_copy(update={"age": 0}))
    assert _drops(line)["not_newer"] == 1
    assert line.nodes["a"].directory.node_of("sae-d") is None


def test_an_lsa_signed_by_a_key_nobody_vouches_for_is_held_then_dropped(
    line: SimulatedNetwork,
) -> None:
    before = _view(line, "a")
    impostor = RoutingKey()
    seq = _held(line, "b", "d").seq + 1
    _flood(line, signed(impostor, source="d", seq=seq, saes=("mallory",)))
    assert line.nodes["a"].router.held() == 1
    assert _drops(line) == {}  # its voucher might be a hop behind...
    line.run_for(SETTINGS.pending_hold)
    assert line.nodes["a"].router.held() == 0
    assert _drops(line) == {"unknown_originator": 1}  # ...but none came
    assert _view(line, "a")[:2] == before[:2]


def test_a_node_can_only_vouch_by_signing_its_own_k_packet(line: SimulatedNetwork) -> None:
    # b claims, in a K packet "from c", that d's key is the impostor's; it cannot sign as c.
    impostor = RoutingKey()
    real = _held(line, "b", "c", "K")
    links = tuple(
        link.model_copy(update={"key": impostor.public}) if link.node == "d" else link
        for link in real.links
    )
    _flood(line, real.model_copy(update={"seq": real.seq + 1, "links": links}))
    _flood(line, signed(impostor, source="d", seq=_held(line, "b", "d").seq + 1, saes=("x",)))
    line.run_for(SETTINGS.pending_hold)
    assert _drops(line) == {"bad_signature": 1, "unknown_originator": 1}
    assert line.nodes["a"].directory.node_of("x") is None


def test_a_distant_key_is_taken_once_a_k_packet_vouches_for_it() -> None:
    # a learns about e only through a K packet of d; here d's arrives after e's LSA.
    net = network()
    keys = {n: RoutingKey() for n in "bde"}
    net.add_node("a", saes=["sae-a"])
    net.add_node("b")
    net.link("a", "b")
    net.settle()
    e_lsa = signed(keys["e"], source="e", seq=5, saes=("sae-e",))
    _flood(net, e_lsa)
    assert net.nodes["a"].router.held() == 1
    d_k = signed(
        keys["d"],
        type="K",
        source="d",
        seq=5,
        links=(LinkEntry(node="e", cost=1000, key=keys["e"].public),),
    )
    _flood(net, d_k)  # d's own key is vouched for by nobody yet either
    assert net.nodes["a"].router.held() == 2
    b_real = _held(net, "a", "b", "K")
    # b (an authenticated neighbour) vouches for d: the chain b -> d -> e is complete.
    b_k = net.nodes["b"].router
    vouch = signed(
        b_k.key,
        type="K",
        source="b",
        seq=b_real.seq + 1,
        links=(
            *b_real.links,
            LinkEntry(node="d", cost=1000, key=keys["d"].public),
        ),
    )
    _flood(net, vouch)
    assert net.nodes["a"].router.held() == 0
    assert net.nodes["a"].directory.node_of("sae-e") == "e"
    assert _drops(net) == {}


def test_a_node_without_a_qkdlink_to_us_is_not_listened_to(line: SimulatedNetwork) -> None:
    # The channel lets only QKDLink peers in; should one slip through while links change, the
    # router itself ignores what it says.
    stranger = signed(RoutingKey(), source="x", seq=1, saes=("mallory",))
    a = line.nodes["a"].router
    hello = line.nodes["c"].router.hello
    answer = a.on_exchange("c", Exchange(hello=hello, lsas=(stranger,)), line.now)
    assert answer.lsas == ()
    flood = a.on_flood("c", Flood(forwarder="c", lsas=(stranger,)), line.now)
    assert flood.lsas == ()
    assert line.nodes["a"].directory.node_of("mallory") is None
    assert a.held() == 0
