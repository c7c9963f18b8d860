"""The harness's short socket directories under /tmp (the simulated devices' Unix sockets) go
away with the network: when the control plane stops, and when a detached one is brought
``down`` from its record (``make demo-down``)."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.localcluster import ControlPlane, stop_recorded


def test_stopping_the_control_plane_removes_its_socket_dirs(tmp_path: Path) -> None:
    plane = ControlPlane(state_dir=tmp_path, bin_dir=tmp_path)
    made = [plane.socket_dir(), plane.socket_dir()]
    (made[0] / "a.sock").write_bytes(b"")
    assert all(d.is_dir() and len(str(d / "a.sock")) < 108 for d in made)
    plane.stop()
    assert not any(d.exists() for d in made)


def test_down_removes_the_socket_dirs_a_detached_network_recorded(tmp_path: Path) -> None:
    plane = ControlPlane(state_dir=tmp_path, bin_dir=tmp_path, detach=True)
    made = plane.socket_dir()
    (made / "pair.secret").write_bytes(b"x")
    # A later process (``localcluster down``) has only the state dir.
    stop_recorded(tmp_path)
    assert not made.exists()
    stop_recorded(tmp_path)  # a second down finds nothing to do
