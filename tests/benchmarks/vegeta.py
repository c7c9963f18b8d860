"""vegeta (github.com/tsenart/vegeta), the HTTP load generator that ``bench_loadgen`` drives:
built once from its Go module into the kube-qss cache, then run as its own process against one
URL with a fixed number of kept-alive mutual-TLS connections, its answers read back one by one.

Only the benchmarks use it; ``make test`` and ``make demo`` do not need Go or vegeta.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.cluster.images import cache_root

MODULE = "github.com/tsenart/vegeta/v12"
VERSION = "v12.12.0"
# Bound on the one-off build (a minute or two on a busy 2-core machine, module download included).
BUILD_TIMEOUT = 900.0


class VegetaUnavailable(RuntimeError):
    """vegeta is not in the cache and cannot be built here (no Go, or the build failed)."""


def tool_dir() -> Path:
    """Where this version lives: the kube-qss cache (``KUBE_QSS_CACHE``), keyed by version."""
    return cache_root().parent / "tools" / f"vegeta-{VERSION}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One build at a time per cache: another session waits, then finds the binary."""
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def binary() -> Path:
    """The vegeta binary, built with ``go install`` the first time. It is published by a rename
    once complete, so an interrupted build never looks like a cached one."""
    directory = tool_dir()
    path = directory / "vegeta"
    if os.access(path, os.X_OK):
        return path
    go = shutil.which("go")
    if go is None:
        raise VegetaUnavailable(
            f"the loadgen benchmark builds vegeta {VERSION} from its Go module and needs Go"
            f" (https://go.dev/dl/) on PATH; or put a vegeta {VERSION} binary at {path}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / ".build.lock"):
        if os.access(path, os.X_OK):
            return path
        print(f"vegeta: building {MODULE}@{VERSION} into {directory}", file=sys.stderr, flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as gobin:
            # Outside any module, so that go.mod files around the caller play no part.
            done = subprocess.run(
                [go, "install", f"{MODULE}@{VERSION}"],
                cwd=gobin,
                env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise VegetaUnavailable(
                    f"go install {MODULE}@{VERSION} failed (exit {done.returncode}):"
                    f" {done.stderr.strip()[-2000:]}"
                )
            os.replace(Path(gobin, "vegeta"), path)
        print(f"vegeta: built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return path


@dataclass(frozen=True)
class ClientTls:
    """PEM files of the client: its certificate and key, and the CA that signed the server's."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Answer:
    """One request as vegeta saw it."""

    code: int  # 0 when no HTTP answer came (see ``error``)
    started: float  # Unix time, s
    latency: float  # s
    body: bytes
    error: str


def _answer(line: str) -> Answer:
    # vegeta's JSON encoding of one result (``vegeta encode --to json``).
    raw = json.loads(line)
    body = raw.get("body") or ""
    return Answer(
        code=int(raw["code"]),
        started=datetime.fromisoformat(raw["timestamp"]).timestamp(),
        latency=int(raw["latency"]) / 1e9,
        body=base64.b64decode(body) if body else b"",
        error=str(raw.get("error", "")),
    )


async def _run(*argv: str, stdin: bytes = b"") -> bytes:
    """Run vegeta to its end; killed (by its own PID) if the caller is cancelled."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate(stdin)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:2])} exited with {process.returncode}: {err.decode()[-2000:]}"
        )
    return out


async def attack(
    vegeta: Path, url: str, *, connections: int, seconds: float, tls: ClientTls
) -> list[Answer]:
    """GET ``url`` as fast as answers come for ``seconds``, from ``connections`` workers, each
    on its own kept-alive HTTP/1.1 connection with one request in flight at a time."""
    with tempfile.TemporaryDirectory(prefix="kqss-vegeta-") as tmp:
        results = Path(tmp, "results.gob")
        await _run(
            str(vegeta),
            "attack",
            "-rate=0",  # no pacing: each worker sends its next request when the last is answered
            f"-workers={connections}",
            f"-max-workers={connections}",
            f"-connections={connections}",
            f"-max-connections={connections}",
            "-keepalive=true",
            "-http2=false",  # the KME speaks HTTP/1.1; say so rather than rely on ALPN
            f"-duration={seconds}s",
            "-timeout=60s",
            f"-cert={tls.cert}",
            f"-key={tls.key}",
            f"-root-certs={tls.ca}",
            f"-output={results}",
            stdin=f"GET {url}\n".encode(),
        )
        encoded = await _run(str(vegeta), "encode", "--to=json", str(results))
    return [_answer(line) for line in encoded.decode().splitlines() if line.strip()]
