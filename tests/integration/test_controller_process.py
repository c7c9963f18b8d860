"""The qss-controller process starts under kopf against a real cluster, reports ready on its
health endpoint, keeps kopf's state under our prefix, and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tests.cluster.localcluster import Cluster, free_port
from tests.tcprelay import TcpRelay
from tests.waiting import eventually


def _start_controller(
    cluster: Cluster, port: int, *, kubeconfig: Path | None = None, output: IO[str] | None = None
) -> subprocess.Popen[str]:
    """The controller on ``cluster`` (through ``kubeconfig`` if given), its output piped or
    written to ``output``."""
    # Its own namespace for the node's Secrets, and any free ports for its servers.
    cluster.kubectl("create", "namespace", "qss-process-test", check=False)
    env = dict(
        os.environ,
        KUBECONFIG=str(kubeconfig or cluster.kubeconfig),
        QSS_NODE_ID="node-a",
        QSS_NAMESPACE="qss-process-test",
        QSS_CHANNEL_ADDRESS="127.0.0.1:0",
        QSS_ETSI014_HOST="127.0.0.1",
        QSS_ETSI014_PORT="0",
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controllers.main",
            "--health-endpoint",
            f"http://127.0.0.1:{port}/healthz",
        ],
        env=env,
        stdout=subprocess.PIPE if output is None else output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"controller exited early:\n{proc.communicate()[0]}"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"controller not healthy at {url} within {timeout}s")


def test_controller_reports_ready_and_exits_zero_on_sigterm(cluster: Cluster) -> None:
    port = free_port()
    proc = _start_controller(cluster, port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "Traceback" not in output


def test_controller_without_node_id_exits_2_with_one_clear_line(cluster: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QSS_NODE_ID"}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    result = subprocess.run(
        [sys.executable, "-m", "controllers.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "qss-controller: no node ID: set QSS_NODE_ID or pass --node-id"
    )


def test_a_controller_started_before_its_api_server_is_reachable_starts_soon_after(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The controller's kubeconfig names an address where nothing listens yet.
    late = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        cluster.kubeconfig.read_text().replace(cluster.server, f"https://127.0.0.1:{late}")
    )
    assert f"127.0.0.1:{late}" in kubeconfig.read_text()
    port = free_port()
    log = tmp_path / "controller.log"
    with log.open("w") as output:
        proc = _start_controller(cluster, port, kubeconfig=kubeconfig, output=output)
    relay: TcpRelay | None = None
    try:
        # Its start-up fails and is tried again in seconds (kopf's default is a minute).
        eventually(
            lambda: log.read_text().count("'_startup' failed with an exception") >= 2,
            timeout=60,
            what="two failed start-ups",
        )
        assert "will try again in 2.0 seconds" in log.read_text()
        relay = TcpRelay(cluster.port, listen_port=late)
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        # Each retry started afresh: one node started, its servers bound once.
        assert log.read_text().count("QSS node node-a started") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if relay is not None:
            relay.cut()
