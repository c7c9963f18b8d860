"""Container images with no registry: built from Debian's packages and the repository's own
Containerfile, cached outside the repository by the hash of their inputs.

- ``python-base``: Debian bookworm with python3 (3.11) and its venv module, made by mmdebstrap;
  the stand-in for the official slim Python image, which cannot be pulled here.
- ``kube-qss``: the repository's ``Containerfile``, built by buildah on that base
  (``--build-arg BASE=...``), so the file users build is the file the tests run.
- ``redis``: Debian's redis-server (the manifests' ``redis`` image).
- ``pause``: busybox-static's ``sleep``, the pod sandbox image of the test nodes' containerd.

Called by ``make image`` (``python -m tests.cluster.images build kube-qss``) and by the real-node
harness (``tests.cluster.nodes``), which imports the archives into each node's containerd.
Every image ends as a docker-archive file under ``<cache>/images`` whose name carries its input
hash; the image inside is named as the test overlays name it (``LOCAL_REFS``). buildah keeps its
own storage there too, so a warm cache costs a file lookup.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "Containerfile"
CONTAINERIGNORE = REPO_ROOT / ".dockerignore"

# Names the test overlays (kustomize/test/...) map the public images to, and the sandbox image
# each test node's containerd is configured with.
LOCAL_REFS = {
    "kube-qss": "localhost/kube-qss/kube-qss:test",
    "redis": "localhost/kube-qss/redis:test",
    "pause": "localhost/kube-qss/pause:test",
}
# What `make image` tags the kube-qss image as in buildah's storage, as the manifests name it.
PUBLIC_TAG = "localhost/kube-qss:0.1.0"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Small images: no documentation, manual pages or translations (licences stay).
_DPKG_OPTS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
# Packages of the Debian-made images; part of their cache keys.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
REDIS_PACKAGES = ("redis-server",)
# The TLS-intercepting proxy of some build machines: pip in the build trusts what the host's
# pip trusts, through the Containerfile's PIP_CERT build argument and a read-only volume.
_BUILD_CA_PATH = "/run/kube-qss-build-ca.crt"
# An image made from scratch has no environment; its processes need Debian's usual PATH.
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_root() -> Path:
    env = os.environ.get("KUBE_QSS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base if env else base / "kube-qss") / "images"


def _log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    _log(f"{what} in {time.monotonic() - started:.0f}s")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build at a time per cache (another session waits, then finds the archive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def containerfile_sources(containerfile: Path = CONTAINERFILE) -> list[str]:
    """The build-context paths the Containerfile copies (``COPY`` lines without ``--from``)."""
    sources: list[str] = []
    for line in containerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += args[:-1]
    return sources


def _context_files(sources: list[str]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = REPO_ROOT / source.rstrip("/")
        if path.is_file():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc":
                files.append(found)
    return files


@dataclass(frozen=True)
class Buildah:
    """buildah with its own storage under the image cache (nothing in /var/lib/containers)."""

    root: Path

    @property
    def argv(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
        ]

    def _env(self) -> dict[str, str]:
        """buildah's configuration: its network state in the cache too (it would otherwise keep
        lock files in /etc/cni and /etc/containers even for builds on the host's network)."""
        conf = self.root / "containers.conf"
        if not conf.exists():
            (self.root / "cni").mkdir(parents=True, exist_ok=True)
            conf.write_text(
                f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{self.root / "cni"}"\n'
            )
        return {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            [*self.argv, *args],
            env=self._env(),
            check=False,
            stdout=subprocess.PIPE if capture else sys.stderr,
            stderr=subprocess.PIPE if capture else sys.stderr,
            text=True,
        )
        if result.returncode != 0:
            detail = (result.stderr or "").strip()[-2000:] if capture else "see the output above"
            raise RuntimeError(f"buildah {args[0]} failed ({result.returncode}): {detail}")
        return result.stdout or ""

    def has_image(self, ref: str) -> bool:
        inspect = [*self.argv, "inspect", "--type", "image", ref]
        result = subprocess.run(inspect, capture_output=True, check=False, env=self._env())
        return result.returncode == 0

    def build(self, context: Path, containerfile: Path, tag: str, *extra: str) -> None:
        self(
            "bud",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--pull=never",
            "--layers=false",
            "-f",
            str(containerfile),
            "-t",
            tag,
            *extra,
            str(context),
        )

    def export(self, ref: str, archive: Path, name: str) -> None:
        """Write ``ref`` as a docker-archive that names the image ``name`` (atomically)."""
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        self("push", "--quiet", ref, f"docker-archive:{partial}:{name}")
        partial.rename(archive)


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: run `make setup` (it installs them from Debian)"
        )


def _debian_rootfs(packages: tuple[str, ...], out: Path) -> None:
    """A Debian root file system with ``packages`` (and the minimal base, as Debian's own
    bookworm-slim image has it), as a tar file."""
    _need("mmdebstrap")
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        *(f"--dpkgopt={opt}" for opt in _DPKG_OPTS),
        SUITE,
        str(out),
        MIRROR,
    ]
    subprocess.run(argv, check=True, stdout=sys.stderr)


def _debian_image(
    buildah: Buildah, *, name: str, packages: tuple[str, ...], config: list[str]
) -> str:
    """A Debian image of ``packages`` in buildah's storage; returns its reference."""
    recipe = repr((SUITE, MIRROR, _DPKG_OPTS, "minbase", _PATH, packages, config)).encode()
    ref = f"localhost/kube-qss/{name}:{_digest(recipe)}"
    if buildah.has_image(ref):
        return ref
    with tempfile.TemporaryDirectory(prefix="kube-qss-image-", dir=buildah.root) as tmp:
        context = Path(tmp)
        with _timed(f"made the {name} root file system with mmdebstrap"):
            _debian_rootfs(packages, context / "rootfs.tar")
        (context / "Containerfile").write_text(
            "\n".join(["FROM scratch", "ADD rootfs.tar /", f"ENV PATH={_PATH}", *config]) + "\n"
        )
        with _timed(f"built the {name} image"):
            buildah.build(context, context / "Containerfile", ref)
    return ref


def python_base(buildah: Buildah) -> str:
    return _debian_image(
        buildah, name="python-base", packages=BASE_PACKAGES, config=['CMD ["python3"]']
    )


def kube_qss_key(base_ref: str) -> str:
    """The kube-qss image's cache key: the base, the Containerfile and everything it copies."""
    parts = [base_ref.encode(), CONTAINERFILE.read_bytes(), CONTAINERIGNORE.read_bytes()]
    for path in _context_files(containerfile_sources()):
        parts += [str(path.relative_to(REPO_ROOT)).encode(), path.read_bytes()]
    return _digest(*parts)


def _build_args_for_pip() -> tuple[list[str], str | None]:
    """Build arguments (and a CA file to mount) so pip in the build reaches the index the host's
    pip reaches; nothing when the host uses none of them."""
    args: list[str] = []
    index = os.environ.get("PIP_INDEX_URL")
    if index:
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():
        args += ["--build-arg", f"PIP_CERT={_BUILD_CA_PATH}", "-v", f"{ca}:{_BUILD_CA_PATH}:ro"]
        return args, ca
    return args, None


def build_kube_qss(buildah: Buildah, cache: Path) -> Path:
    base = python_base(buildah)
    key = kube_qss_key(base)
    archive = cache / f"kube-qss-{key}.tar"
    if archive.exists():
        return archive
    ref = f"localhost/kube-qss/kube-qss:{key}"
    pip_args, _ca = _build_args_for_pip()
    with _timed("built the kube-qss image from the Containerfile"):
        buildah.build(REPO_ROOT, CONTAINERFILE, ref, "--build-arg", f"BASE={base}", *pip_args)
    buildah("tag", ref, PUBLIC_TAG)
    with _timed("exported the kube-qss image"):
        buildah.export(ref, archive, LOCAL_REFS["kube-qss"])
    return archive


def build_redis(buildah: Buildah, cache: Path) -> Path:
    # The official image's defaults: redis-server as the entrypoint, uid 999, data in /data.
    ref = _debian_image(
        buildah,
        name="redis",
        packages=REDIS_PACKAGES,
        config=['ENTRYPOINT ["redis-server"]', "USER 999:999", "WORKDIR /data"],
    )
    archive = cache / f"redis-{ref.rsplit(':', 1)[1]}.tar"
    if not archive.exists():
        buildah.export(ref, archive, LOCAL_REFS["redis"])
    return archive


def build_pause(buildah: Buildah, cache: Path) -> Path:
    """The pod sandbox: a static busybox that sleeps until killed."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("/bin/busybox not found: run `make setup` (Debian's busybox-static)")
    containerfile = "\n".join(
        [
            "FROM scratch",
            "COPY busybox /bin/busybox",
            'ENTRYPOINT ["/bin/busybox", "sleep", "infinity"]',
        ]
    )
    key = _digest(containerfile.encode(), busybox.read_bytes())
    archive = cache / f"pause-{key}.tar"
    if archive.exists():
        return archive
    with tempfile.TemporaryDirectory(prefix="kube-qss-image-", dir=buildah.root) as tmp:
        context = Path(tmp)
        shutil.copy2(busybox, context / "busybox")
        (context / "Containerfile").write_text(containerfile)
        ref = f"localhost/kube-qss/pause:{key}"
        buildah.build(context, context / "Containerfile", ref)
    buildah.export(ref, archive, LOCAL_REFS["pause"])
    return archive


BUILDERS = {"kube-qss": build_kube_qss, "redis": build_redis, "pause": build_pause}


def build(names: list[str] | None = None) -> dict[str, Path]:
    """Build (or find in the cache) the named images; their docker-archive files by name."""
    _need("buildah")
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    buildah = Buildah(root=cache)
    archives: dict[str, Path] = {}
    with _locked(cache / ".build.lock"):
        for name in names or list(BUILDERS):
            archives[name] = BUILDERS[name](buildah, cache)
            os.utime(archives[name])  # in use: the newest, whatever its age
        prune(buildah, cache)
    return archives


def prune(buildah: Buildah, cache: Path, *, keep: int = 2) -> None:
    """Keep the ``keep`` newest archives of each image (another checkout may be using an older
    one), and drop the rest with their images in buildah's storage."""
    for name in BUILDERS:
        archives = sorted(
            (
                p
                for p in cache.glob(f"{name}-*.tar")
                if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.tar", p.name)
            ),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in archives[keep:]:
            key = old.stem.rsplit("-", 1)[1]
            old.unlink(missing_ok=True)
            with contextlib.suppress(RuntimeError):
                buildah("rmi", f"localhost/kube-qss/{name}:{key}", capture=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or find in the cache) images; print their archives")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(BUILDERS)} (default all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown image {unknown[0]!r}; choose from {', '.join(BUILDERS)}")
    try:
        archives = build(list(args.names) or None)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    for name, path in archives.items():
        print(f"{name}: {path} ({LOCAL_REFS[name]})")
    if "kube-qss" in archives:
        print(f"kube-qss: also tagged {PUBLIC_TAG} in buildah storage {cache_root() / 'storage'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
