"""Writing sets of files so that a reader never sees a partial set: the kubelet's AtomicWriter
scheme (the one behind Secret and ConfigMap volumes), with one change.

A set of files is a *snapshot*, published in four steps:

1. the files are written into a new directory ``..<UTC timestamp>.<random>`` (files 0400,
   then the directory made read-only);
2. names the app uses (``<root>/<name> -> ..data/<name>``) are linked for files that are new;
   they dangle until step 3, but no index yet names them;
3. a symlink ``..data_tmp -> ..<timestamp>...`` is renamed over ``..data``: one atomic step,
   after which every path through ``..data`` is in the new snapshot;
4. names no longer in the snapshot are unlinked, and old snapshot directories removed (each
   renamed away in one step first, so no reader ever finds one half deleted).

The change from the kubelet: the snapshot ``..data`` pointed to before step 3 is kept until
the next publication, so a reader that resolved ``..data`` just before a swap finishes reading
a complete set (the kubelet removes it at once). Readers that want a consistent set resolve
``..data`` once (``os.readlink``/``realpath``) and read everything beneath it.

``KeyVolume`` is used by ``sidecar.agent``; ``read_current`` is how a restarted sidecar (and the
tests) read the newest snapshot back.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

DATA: Final = "..data"
DATA_TMP: Final = "..data_tmp"
# A snapshot being deleted (see _remove); still a "..name", so tidy() finishes the job.
RETIRED_PREFIX: Final = "..retired."
FILE_MODE: Final = 0o400
# Owner-only read and search: the app runs as the same user (see webhooks.injection.app_user).
DIR_MODE: Final = 0o500


class VolumeError(Exception):
    """The volume holds something this writer did not write; the message says what."""


@dataclass(frozen=True)
class Snapshot:
    directory: Path
    files: Mapping[str, bytes] = field(repr=False)


def _is_snapshot_name(name: str) -> bool:
    return name.startswith("..") and name not in (DATA, DATA_TMP)


class KeyVolume:
    """Publishes snapshots of files (and one relative symlink each) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def current_directory(self) -> Path | None:
        try:
            target = os.readlink(self.root / DATA)
        except FileNotFoundError:
            return None
        if "/" in target or not _is_snapshot_name(target):
            raise VolumeError(f"{self.root / DATA} points at {target!r}, not at a snapshot")
        return self.root / target

    def read_current(self) -> Snapshot | None:
        """The files of the snapshot ``..data`` names (links are not followed), or None."""
        directory = self.current_directory()
        if directory is None:
            return None
        files: dict[str, bytes] = {}
        try:
            for entry in os.scandir(directory):
                if entry.is_file(follow_symlinks=False):
                    files[entry.name] = Path(entry.path).read_bytes()
        except OSError as exc:
            raise VolumeError(f"cannot read snapshot {directory}: {exc.strerror}") from None
        return Snapshot(directory=directory, files=files)

    def publish(self, files: Mapping[str, bytes], links: Mapping[str, str]) -> Path:
        """Make ``files`` (name -> content) and ``links`` (name -> relative target within the
        snapshot) the set readers see, atomically. Returns the new snapshot directory."""
        names = set(files) | set(links)
        for name in names:
            if not name or "/" in name or name.startswith("..") or name in (".", ".."):
                raise ValueError(f"{name!r} cannot name a file of a snapshot")
        self.root.mkdir(parents=True, exist_ok=True)
        previous = self.current_directory()
        stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f.")
        new = Path(tempfile.mkdtemp(prefix=stamp, dir=self.root))
        try:
            for name, content in files.items():
                fd = os.open(
                    new / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE
                )
                try:
                    os.write(fd, content)
                finally:
                    os.close(fd)
            for name, target in links.items():
                os.symlink(target, new / name)
            os.chmod(new, DIR_MODE)
        except BaseException:
            _remove(new)
            raise
        visible = {e.name for e in os.scandir(self.root) if not e.name.startswith("..")}
        for name in sorted(names - visible):
            os.symlink(f"{DATA}/{name}", self.root / name)
        tmp = self.root / DATA_TMP
        tmp.unlink(missing_ok=True)
        os.symlink(new.name, tmp)
        os.rename(tmp, self.root / DATA)
        for name in sorted(visible - names):
            path = self.root / name
            if path.is_symlink() and os.readlink(path) == f"{DATA}/{name}":
                path.unlink()
        self._remove_old(keep={new.name, previous.name if previous else ""})
        return new

    def tidy(self) -> None:
        """Remove what an interrupted publication left: ``..data_tmp`` and snapshot directories
        other than the current one."""
        if not self.root.is_dir():
            return  # nothing published yet
        (self.root / DATA_TMP).unlink(missing_ok=True)
        current = self.current_directory()
        self._remove_old(keep={current.name if current else ""})

    def _remove_old(self, *, keep: set[str]) -> None:
        for entry in os.scandir(self.root):
            stale = _is_snapshot_name(entry.name) and entry.name not in keep
            if stale and entry.is_dir(follow_symlinks=False):
                _remove(Path(entry.path))


def _remove(directory: Path) -> None:
    """Retire a snapshot: renamed away first (one atomic step, so a reader still holding its
    path finds it gone as a whole, never half emptied), then deleted."""
    doomed = directory.with_name(f"{RETIRED_PREFIX}{directory.name.removeprefix('..')}")
    try:
        os.rename(directory, doomed)
        # The snapshot directory is read-only; make it writable again to empty it.
        os.chmod(doomed, stat.S_IRWXU)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)
