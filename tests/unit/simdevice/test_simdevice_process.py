"""The device as its own process: the command line, the health-probe contract, shutdown, and
two processes with one pair secret yielding the same key without talking to each other."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.simdevice.helpers import SECRET


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "device_plugin.simdevice", *args]


class Process:
    def __init__(self, directory: Path, *extra: str) -> None:
        self.socket_a = directory / "a.sock"
        self.socket_b = directory / "b.sock"
        self.popen = subprocess.Popen(
            _command(
                "pair",
                "--socket-a",
                str(self.socket_a),
                "--socket-b",
                str(self.socket_b),
                *extra,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while not (self.socket_a.exists() and self.socket_b.exists()):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.popen.kill()
                self.stop()
                raise RuntimeError("the simulated device did not start")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        rc = self.popen.wait(timeout=10)
        assert self.popen.stderr is not None
        self.popen.stderr.close()
        return rc


class Line:
    """A blocking client: one JSON line out, one in."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        try:
            self.sock.connect(str(path))
        except OSError:
            # An unclosed socket would surface later as a ResourceWarning in another test.
            self.sock.close()
            raise
        self.file = self.sock.makefile("rb")

    def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(json.dumps(payload).encode() + b"\n")
        answer: dict[str, Any] = json.loads(self.file.readline())
        return answer

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(dir="/tmp"))
    (directory / "secret").write_bytes(SECRET)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _start(workdir: Path, name: str, *extra: str) -> Process:
    directory = workdir / name
    directory.mkdir()
    return Process(directory, "--secret-file", str(workdir / "secret"), *extra)


def test_health_probe_contract_is_one_line_with_healthy_true(workdir: Path) -> None:
    process = _start(workdir, "p", "--rate-bps", "1000")
    try:
        for path in (process.socket_a, process.socket_b):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                # Exactly what device_plugin.health sends.
                sock.sendall(b'{"op": "HEALTH"}\n')
                line = sock.makefile("rb").readline()
            assert line.endswith(b"\n")
            assert json.loads(line)["healthy"] is True
    finally:
        assert process.stop() == 0
    assert not process.socket_a.exists()
    assert not process.socket_b.exists()


def test_two_processes_with_one_secret_give_the_same_key(workdir: Path) -> None:
    ksid = "7d1f4a52-8c3b-4f7e-9a41-0c8e2b5d6f10"
    keys = []
    for name in ("first", "second"):
        process = _start(workdir, name, "--rate-bps", "1280000")
        a, b = Line(process.socket_a), Line(process.socket_b)
        try:
            qos = {"key_chunk_size": 32, "timeout": 5000}
            assert (
                a.ask(
                    {
                        "op": "OPEN_CONNECT",
                        "source": "x",
                        "destination": "y",
                        "key_stream_ID": ksid,
                        "qos": qos,
                    }
                )["status"]
                == 1
            )
            assert (
                b.ask(
                    {
                        "op": "OPEN_CONNECT",
                        "source": "y",
                        "destination": "x",
                        "key_stream_ID": ksid,
                        "qos": qos,
                    }
                )["status"]
                == 0
            )
            at_a = a.ask({"op": "GET_KEY", "key_stream_ID": ksid, "index": 3})
            at_b = b.ask({"op": "GET_KEY", "key_stream_ID": ksid, "index": 3})
            assert at_a["key_buffer"] == at_b["key_buffer"]
            keys.append(base64.b64decode(at_a["key_buffer"]))
        finally:
            a.close()
            b.close()
            assert process.stop() == 0
    assert keys[0] == keys[1]
    assert len(keys[0]) == 32


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["pair"],
        ["pair", "--socket-a", "/tmp/a", "--socket-b", "/tmp/b", "--rate-bps", "fast"],
        ["pair", "--socket-a", "/tmp/a", "--socket-b", "/tmp/a", "--rate-bps", "1"],
        ["pair", "--socket-a", "/nonexistent/a", "--socket-b", "/tmp/b", "--rate-bps", "1"],
        ["pair", "--socket-a", "/tmp/" + "x" * 120, "--socket-b", "/tmp/b", "--rate-bps", "1"],
        ["pair", "--socket-a", "/tmp/a", "--socket-b", "/tmp/b", "--rate-bps", "-1"],
        ["pair", "--socket-a", "/tmp/a", "--socket-b", "/tmp/b", "--rate-bps", "1", "--qber", "2"],
        [
            "pair",
            "--socket-a",
            "/tmp/a",
            "--socket-b",
            "/tmp/b",
            "--rate-bps",
            "1",
            "--secret-file",
            "/nonexistent",
        ],
        ["pair", "--socket-a", "/tmp/a", "--socket-b", "/tmp/b", "--rate-bps", "1", "--bogus"],
        ["serve"],
    ],
)
def test_malformed_invocation_prints_one_error_line_and_exits_2(args: list[str]) -> None:
    result = subprocess.run(
        _command(*args), capture_output=True, timeout=30, check=False, env=_env_without_secret()
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("qss-qkd-sim: error: ")


def test_short_secret_file_is_refused(workdir: Path) -> None:
    (workdir / "short").write_bytes(b"too short")
    result = subprocess.run(
        _command(
            "pair",
            "--socket-a",
            str(workdir / "a"),
            "--socket-b",
            str(workdir / "b"),
            "--rate-bps",
            "1",
            "--secret-file",
            str(workdir / "short"),
        ),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"at least 16" in result.stderr


def test_socket_held_by_a_live_device_is_not_stolen(workdir: Path) -> None:
    first = _start(workdir, "p", "--rate-bps", "1000")
    try:
        result = subprocess.run(
            _command(
                "pair",
                "--socket-a",
                str(first.socket_a),
                "--socket-b",
                str(workdir / "other.sock"),
                "--rate-bps",
                "1",
            ),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert b"another process is listening" in result.stderr
        line = Line(first.socket_a)
        try:
            assert line.ask({"op": "HEALTH"})["healthy"] is True
        finally:
            line.close()
    finally:
        assert first.stop() == 0


def test_stale_socket_file_is_replaced(workdir: Path) -> None:
    directory = workdir / "stale"
    directory.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(directory / "a.sock"))
    process = Process(directory, "--rate-bps", "1000")
    try:
        line = Line(process.socket_a)
        try:
            assert line.ask({"op": "HEALTH"})["status"] == 0
        finally:
            line.close()
    finally:
        assert process.stop() == 0


def _env_without_secret() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "QSS_QKD_SIM_SECRET_FILE"}
