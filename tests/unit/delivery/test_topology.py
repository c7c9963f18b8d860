"""Topology: which streams lead to which neighbour, from QKDLink and KeyStream events."""

from typing import Any

from controllers.delivery.topology import Topology


def _link(name: str, peer: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"peerNodeID": peer}}


def _stream(name: str, link: str, state: str = "Up", available: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"link": link},
        "status": {"state": state, "availableKeys": available},
    }


def test_streams_towards_a_node_are_up_ones_first_then_fullest() -> None:
    topo = Topology()
    topo.update_link(_link("to-b", "node-b"))
    topo.update_link(_link("to-c", "node-c"))
    topo.update_stream(_stream("b-down", "to-b", state="Down", available=900))
    topo.update_stream(_stream("b-small", "to-b", available=10))
    topo.update_stream(_stream("b-big", "to-b", available=500))
    topo.update_stream(_stream("c-0", "to-c"))
    assert [s.name for s in topo.streams_towards("node-b")] == ["b-big", "b-small", "b-down"]
    assert topo.peer_of_stream("c-0") == "node-c"
    assert topo.neighbours() == {"node-b", "node-c"}


def test_forgotten_link_takes_its_streams_out_of_the_routes() -> None:
    topo = Topology()
    topo.update_link(_link("to-b", "node-b"))
    topo.update_stream(_stream("s", "to-b"))
    topo.forget_link("to-b")
    assert topo.streams_towards("node-b") == []
    assert topo.peer_of_stream("s") is None


def test_stream_of_a_missing_link_leads_nowhere() -> None:
    topo = Topology()
    topo.update_stream(_stream("s", "nowhere"))
    assert topo.peer_of_stream("s") is None
