"""A real local Kubernetes control plane: one etcd, and per logical cluster one kube-apiserver
(with its own ``--etcd-prefix``) and one kube-controller-manager, all on loopback.

Used by the pytest fixtures (``tests/fixtures/cluster.py``) and, through its command line, by the
demo (``make demo``):

    python -m tests.cluster.localcluster up --clusters node-a,node-b   # start, print kubeconfigs
    python -m tests.cluster.localcluster down                          # stop what `up` started

``up`` leaves the processes running in their own sessions and records their PIDs in
``<state-dir>/pids.json``; ``down`` stops exactly those PIDs. Each cluster's admin kubeconfig is
written to ``<state-dir>/<cluster>/kubeconfig`` (default state dir: /tmp/kube-qss).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.pki import ClusterPki, create_cluster_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build-control-plane.sh"
DEFAULT_STATE_DIR = Path("/tmp/kube-qss")
_READY_TIMEOUT = 120.0  # a cold kube-apiserver bootstraps RBAC and APF objects; on 2 cores ~10 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_argv(*, port: int, data_dir: Path) -> list[str]:
    """A redis-server on loopback as kube-qss runs it: every write in the append-only file,
    fsynced, so a restart loses nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run `make setup` first")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--protected-mode",
        "yes",
    ]


def control_plane_binaries() -> Path:
    """Build (or find in the cache) etcd, kube-apiserver, kube-controller-manager and kubectl."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


@dataclass
class Cluster:
    """One logical cluster: its API server URL, PKI and admin kubeconfig."""

    name: str
    directory: Path
    port: int
    pki: ClusterPki
    kubectl_binary: Path

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the control plane's own kubectl against this cluster."""
        return subprocess.run(
            [str(self.kubectl_binary), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{self.name}-admin",
                    "user": {
                        "client-certificate": str(self.pki.admin_cert),
                        "client-key": str(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": self.name, "context": {"cluster": self.name, "user": f"{self.name}-admin"}}
            ],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)


@dataclass
class ControlPlane:
    """etcd plus any number of logical clusters, all processes owned by this object."""

    state_dir: Path
    bin_dir: Path
    detach: bool = False  # True for the CLI: processes outlive this Python process
    clusters: dict[str, Cluster] = field(default_factory=dict)
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _etcd_url: str = ""

    def spawn(
        self, name: str, argv: list[str], log: Path, *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process owned by this control plane (stopped by `stop` or `down`)."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
                env=env,
            )
        self._processes.append((name, proc))
        self._record_pids()
        return proc

    def _record_pids(self) -> None:
        pids = [{"name": n, "pid": p.pid} for n, p in self._processes]
        (self.state_dir / "pids.json").write_text(json.dumps(pids, indent=2))

    def start_etcd(self) -> None:
        data = self.state_dir / "etcd"
        data.mkdir(parents=True, exist_ok=True)
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        proc = self.spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name",
                "kube-qss",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                self._etcd_url,
                "--advertise-client-urls",
                self._etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"kube-qss=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # test data only: fsync would dominate CRUD latency
                "--quota-backend-bytes",
                str(2 * 1024**3),
                "--log-level",
                "warn",
            ],
            self.state_dir / "etcd.log",
        )
        self._wait_http(f"{self._etcd_url}/health", proc, "etcd", context=None)

    def start_cluster(self, name: str) -> Cluster:
        """Start kube-apiserver and kube-controller-manager for one more logical cluster."""
        if not self._etcd_url:
            self.start_etcd()
        directory = self.state_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        pki = create_cluster_pki(directory / "pki", cluster=name)
        cluster = Cluster(
            name=name,
            directory=directory,
            port=free_port(),
            pki=pki,
            kubectl_binary=self.bin_dir / "kubectl",
        )
        cluster.write_kubeconfig()
        self.start_apiserver(cluster)
        self.spawn(
            f"{name}/kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--authentication-kubeconfig",
                str(cluster.kubeconfig),
                "--authorization-kubeconfig",
                str(cluster.kubeconfig),
                # Garbage collection (owned Secrets) and namespace deletion are what our tests
                # rely on; service accounts so that pods and token requests work.
                "--controllers",
                "garbagecollector,namespace,serviceaccount,serviceaccount-token",
                "--service-account-private-key-file",
                str(pki.sa_private),
                "--root-ca-file",
                str(pki.ca_cert),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--concurrent-gc-syncs",
                "5",
            ],
            directory / "kube-controller-manager.log",
        )
        self.clusters[name] = cluster
        return cluster

    def start_apiserver(self, cluster: Cluster) -> None:
        """Start the cluster's kube-apiserver (again: on the same port, PKI and etcd prefix)."""
        pki = cluster.pki
        apiserver = self.spawn(
            f"{cluster.name}/kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                "--etcd-servers",
                self._etcd_url,
                "--etcd-prefix",
                f"/kube-qss/{cluster.name}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(cluster.port),
                "--tls-cert-file",
                str(pki.serving_cert),
                "--tls-private-key-file",
                str(pki.serving_key),
                "--client-ca-file",
                str(pki.ca_cert),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(pki.sa_public),
                "--service-account-signing-key-file",
                str(pki.sa_private),
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--authorization-mode",
                "RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type",
                "none",
            ],
            cluster.directory / "kube-apiserver.log",
        )
        self._wait_http(
            f"{cluster.server}/readyz", apiserver, "kube-apiserver", context=cluster.ssl_context()
        )

    def stop_apiserver(self, cluster: Cluster) -> None:
        """SIGKILL the cluster's kube-apiserver, as a crash would (``start_apiserver`` again)."""
        for name, proc in self._processes:
            if name == f"{cluster.name}/kube-apiserver" and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)

    @staticmethod
    def _wait_http(
        url: str, proc: subprocess.Popen[bytes], what: str, *, context: ssl.SSLContext | None
    ) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode}; see its log")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready at {url} within {_READY_TIMEOUT:.0f}s: {last}")

    def stop(self) -> None:
        """Stop every process this object started, newest first, by PID."""
        for _name, proc in reversed(self._processes):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self._processes):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._processes.clear()
        self._record_pids()


def install_crds(cluster: Cluster) -> None:
    """Install kube-qss's CRDs and wait until the API server serves them."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "kustomize" / "crd"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=kube-qss",
    )


def stop_recorded(state_dir: Path) -> int:
    """Stop the processes a detached `up` recorded; returns how many were still running."""
    pid_file = state_dir / "pids.json"
    if not pid_file.exists():
        return 0
    entries = json.loads(pid_file.read_text())
    running = 0
    for entry in reversed(entries):
        try:
            os.kill(int(entry["pid"]), signal.SIGTERM)
            running += 1
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    for entry in entries:
        pid = int(entry["pid"])
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink()
    return running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where etcd data, PKI, logs and kubeconfigs go (default %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd and the named clusters, then return")
    up.add_argument(
        "--clusters", default="node-a", help="comma-separated cluster names (default %(default)s)"
    )
    sub.add_parser("down", help="stop the processes `up` started")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir

    if args.command == "down":
        stopped = stop_recorded(state_dir)
        print(f"stopped {stopped} control-plane processes")
        return 0

    names = [n.strip() for n in args.clusters.split(",") if n.strip()]
    if stop_recorded(state_dir):
        print("stopped a previous local control plane", file=sys.stderr)
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    plane = ControlPlane(state_dir=state_dir, bin_dir=control_plane_binaries(), detach=True)
    try:
        for name in names:
            cluster = plane.start_cluster(name)
            print(f"{name}: {cluster.server}  KUBECONFIG={cluster.kubeconfig}")
    except Exception:
        plane.stop()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
