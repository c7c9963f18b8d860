"""The key volume's AtomicWriter scheme on a real file system: layout, modes, names that come
and go, clean-up after an interrupted publication, and readers that never see a partial set."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from sidecar.volume import DATA, DATA_TMP, KeyVolume, VolumeError


def snapshot_dirs(root: Path) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(root)
        if e.name.startswith("..") and e.is_dir(follow_symlinks=False)
    )


def test_publish_lays_out_a_snapshot_behind_data_with_owner_only_modes(tmp_path: Path) -> None:
    volume = KeyVolume(tmp_path)
    new = volume.publish({"k1": b"\x01" * 32, "index.json": b"{}"}, {"current": "k1"})
    assert os.readlink(tmp_path / DATA) == new.name
    assert new.name.startswith("..")
    assert new.parent == tmp_path
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o500
    for name in ("k1", "index.json"):
        assert stat.S_IMODE(os.stat(new / name).st_mode) == 0o400
        assert os.readlink(tmp_path / name) == f"{DATA}/{name}"
    assert (tmp_path / "current").read_bytes() == b"\x01" * 32
    assert os.readlink(new / "current") == "k1"
    assert not (tmp_path / DATA_TMP).exists()


def test_names_that_leave_are_unlinked_and_only_the_previous_snapshot_is_kept(
    tmp_path: Path,
) -> None:
    volume = KeyVolume(tmp_path)
    first = volume.publish({"a": b"1"}, {})
    second = volume.publish({"a": b"1", "b": b"2"}, {})
    third = volume.publish({"b": b"2", "c": b"3"}, {})
    assert not (tmp_path / "a").is_symlink()
    assert (tmp_path / "b").read_bytes() == b"2"
    assert (tmp_path / "c").read_bytes() == b"3"
    assert snapshot_dirs(tmp_path) == sorted([second.name, third.name])
    assert not first.exists()


def test_read_current_returns_the_files_of_the_snapshot_data_names(tmp_path: Path) -> None:
    volume = KeyVolume(tmp_path)
    assert volume.read_current() is None
    volume.publish({"x": b"old"}, {})
    volume.publish({"x": b"new", "y": b"2"}, {"current": "y"})
    snapshot = volume.read_current()
    assert snapshot is not None
    assert dict(snapshot.files) == {"x": b"new", "y": b"2"}


def test_tidy_removes_what_an_interrupted_publication_left(tmp_path: Path) -> None:
    volume = KeyVolume(tmp_path)
    kept = volume.publish({"a": b"1"}, {})
    orphan = tmp_path / "..2030_01_01_00_00_00.000000.abc"
    orphan.mkdir()
    (orphan / "a").write_bytes(b"half")
    os.chmod(orphan, 0o500)
    os.symlink(orphan.name, tmp_path / DATA_TMP)
    volume.tidy()
    assert snapshot_dirs(tmp_path) == [kept.name]
    assert not (tmp_path / DATA_TMP).is_symlink()


def test_a_data_link_pointing_elsewhere_is_refused(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / DATA)
    with pytest.raises(VolumeError, match="not at a snapshot"):
        KeyVolume(tmp_path).read_current()


@pytest.mark.parametrize("name", ["", "a/b", "..x", ".."])
def test_names_that_could_escape_the_snapshot_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="cannot name a file"):
        KeyVolume(tmp_path).publish({name: b"x"}, {})


def test_readers_never_see_a_partial_set_during_many_swaps(tmp_path: Path) -> None:
    """Each snapshot holds N files and a manifest of their hashes; a reader resolving ..data
    once must find every snapshot it reads complete and matching its manifest."""
    volume = KeyVolume(tmp_path)
    stop = threading.Event()
    complete: list[int] = []
    problems: list[str] = []

    def snapshot(generation: int) -> dict[str, bytes]:
        files = {f"key-{generation}-{i}": os.urandom(64) for i in range(20)}
        manifest = "\n".join(
            f"{n} {hashlib.sha256(c).hexdigest()}" for n, c in sorted(files.items())
        )
        files["manifest"] = f"{generation}\n{manifest}".encode()
        return files

    def reader() -> None:
        while not stop.is_set():
            try:
                directory = tmp_path / os.readlink(tmp_path / DATA)
                manifest = (directory / "manifest").read_text().splitlines()
            except FileNotFoundError:
                continue  # the snapshot was retired between readlink and open
            generation, entries = int(manifest[0]), manifest[1:]
            for line in entries:
                name, digest = line.split()
                try:
                    content = (directory / name).read_bytes()
                except FileNotFoundError:
                    if directory.exists():
                        problems.append(f"generation {generation}: {name} missing")
                    break
                if hashlib.sha256(content).hexdigest() != digest:
                    problems.append(f"generation {generation}: {name} differs")
                    break
            else:
                complete.append(generation)

    volume.publish(snapshot(0), {})
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for generation in range(1, 101):
        volume.publish(snapshot(generation), {})
    stop.set()
    for t in threads:
        t.join()
    assert problems == []
    assert len(set(complete)) > 10  # the readers really read during the swaps
