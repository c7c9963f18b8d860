"""A real local Kubernetes control plane: one etcd, and per logical cluster one kube-apiserver
(with its own ``--etcd-prefix``) and one kube-controller-manager, all on loopback; optionally
(``--real-nodes``) each cluster also gets a real node (``tests.cluster.nodes``: containerd,
kubelet, kube-proxy, DNS in the node's own namespaces) and a kube-scheduler, and its API server
listens on the harness's bridge (``tests.cluster.nodenet``) instead of loopback.

Used by the pytest fixtures (``tests/fixtures/cluster.py``, ``tests/fixtures/realnodes.py``) and,
through its command line, by the demo (``make demo``):

    python -m tests.cluster.localcluster up --clusters node-a,node-b   # start, print kubeconfigs
    python -m tests.cluster.localcluster up --real-nodes ...           # ... each with a node
    python -m tests.cluster.localcluster down                          # stop what `up` started

``up`` leaves the processes running in their own sessions and records their PIDs in
``<state-dir>/pids.json`` (and the real nodes' namespaces, cgroups and network slot in
``<state-dir>/realnodes.json``); ``down`` stops exactly those PIDs, every process in those
namespaces and cgroups, and removes what ``up`` created. Each cluster's admin kubeconfig is
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
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster import images, nodenet
from tests.cluster.nodes import NodeRecord, RealNode, kubeconfig, teardown_recorded
from tests.cluster.pki import ClusterPki, create_cluster_pki, issue

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build-control-plane.sh"
DEFAULT_STATE_DIR = Path("/tmp/kube-qss")
SOCKET_DIRS_FILE = "socket-dirs.json"  # in the state dir: what `down` removes besides processes
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
    return _build("control-plane")


def node_binaries() -> Path:
    """Build (or find in the cache) kubelet, kube-scheduler, kube-proxy and CoreDNS."""
    return _build("node")


def _build(target: str) -> Path:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), target], check=True, stdout=subprocess.PIPE, text=True
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
    host: str = "127.0.0.1"  # the harness bridge's address when the cluster has a real node
    addresses: nodenet.NodeAddresses | None = None  # its real node's, if it has one
    node: RealNode | None = None

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the control plane's own kubectl against this cluster (killed after ``timeout``
        seconds: give a longer one to commands that wait, such as ``rollout status``)."""
        return subprocess.run(
            [str(self.kubectl_binary), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def write_kubeconfig(self) -> None:
        kubeconfig(
            self.kubeconfig,
            name=self.name,
            server=self.server,
            ca=self.pki.ca_cert,
            cert=self.pki.admin_cert,
            key=self.pki.admin_key,
        )


def wait_http(
    url: str, proc: subprocess.Popen[bytes], what: str, *, context: ssl.SSLContext | None = None
) -> None:
    """Until ``url`` answers 200 (``what``, run by ``proc``, is ready), for up to 120 s; fails at
    once if ``proc`` exits."""
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


@dataclass
class ControlPlane:
    """etcd plus any number of logical clusters, all processes owned by this object."""

    state_dir: Path
    bin_dir: Path
    detach: bool = False  # True for the CLI: processes outlive this Python process
    real_nodes: bool = False  # give every cluster a real node (kubelet, containerd, ...)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _etcd_url: str = ""
    _slot: nodenet.Slot | None = None
    _node_records: list[NodeRecord] = field(default_factory=list)
    _node_bin_dir: Path | None = None
    _image_archives: dict[str, Path] = field(default_factory=dict)
    _socket_dirs: list[Path] = field(default_factory=list)

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

    def socket_dir(self) -> Path:
        """A new directory with a short path under /tmp, for Unix sockets (a socket's path
        must fit 107 bytes; the state dir's may not); removed by `stop` or `down`."""
        path = Path(tempfile.mkdtemp(prefix="kqss-"))
        self._socket_dirs.append(path)
        self._record_socket_dirs()
        return path

    def _record_socket_dirs(self) -> None:
        dirs = [str(d) for d in self._socket_dirs]
        (self.state_dir / SOCKET_DIRS_FILE).write_text(json.dumps(dirs, indent=2))

    def _record_pids(self) -> None:
        pids = [{"name": n, "pid": p.pid} for n, p in self._processes]
        (self.state_dir / "pids.json").write_text(json.dumps(pids, indent=2))

    def record_node(self, record: NodeRecord) -> None:
        """Remember a real node's namespaces and cgroups, so `down` can undo them."""
        self._node_records.append(record)
        self._record_nodes()

    def _record_nodes(self) -> None:
        path = self.state_dir / "realnodes.json"
        if self._slot is None:
            path.unlink(missing_ok=True)
            return
        data = {"slot": self._slot.number, "nodes": [vars(r) for r in self._node_records]}
        path.write_text(json.dumps(data, indent=2))

    @property
    def slot(self) -> nodenet.Slot:
        """The harness's network slot (claimed on first use)."""
        if self._slot is None:
            self._slot = nodenet.claim()
            self._record_nodes()
        return self._slot

    @property
    def devices_dir(self) -> Path:
        """Host side of every node's /run/qss/devices (the simulated QKD devices' sockets)."""
        return self.state_dir / "devices"

    @property
    def hosts_file(self) -> Path:
        """The QSS nodes' names, <cluster>.kube-qss.test, for the nodes' DNS."""
        return self.state_dir / "qss-nodes.hosts"

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
        wait_http(f"{self._etcd_url}/health", proc, "etcd", context=None)

    def start_cluster(self, name: str) -> Cluster:
        """Start kube-apiserver and kube-controller-manager for one more logical cluster (and,
        with ``real_nodes``, a kube-scheduler and a real node)."""
        if not self._etcd_url:
            self.start_etcd()
        directory = self.state_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        node_addresses = self.slot.node(len(self.clusters)) if self.real_nodes else None
        host = self.slot.host_ip if node_addresses else "127.0.0.1"
        pki = create_cluster_pki(
            directory / "pki",
            cluster=name,
            apiserver_ips=(host, node_addresses.kubernetes_service_ip) if node_addresses else (),
        )
        cluster = Cluster(
            name=name,
            directory=directory,
            port=free_port(),
            pki=pki,
            kubectl_binary=self.bin_dir / "kubectl",
            host=host,
            addresses=node_addresses,
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
                # rely on; service accounts so that pods and token requests work; with a real
                # node also the workload controllers, Service endpoints, the node's lifecycle
                # (its not-ready taint), kube-root-ca.crt and binding claims to volumes.
                "--controllers",
                ",".join(
                    [
                        "garbagecollector",
                        "namespace",
                        "serviceaccount",
                        "serviceaccount-token",
                        *(REAL_NODE_CONTROLLERS if node_addresses else ()),
                    ]
                ),
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
        if node_addresses is not None:
            self._start_real_node(cluster, node_addresses)
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
                cluster.host,
                "--advertise-address",
                cluster.host,
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
                "--allow-privileged=true",
                "--profiling=false",
                *(
                    self._real_node_apiserver_args(cluster, cluster.addresses)
                    if cluster.addresses
                    else [
                        "--service-cluster-ip-range",
                        "10.96.0.0/16",
                        "--authorization-mode",
                        "RBAC",
                        "--endpoint-reconciler-type",
                        "none",
                    ]
                ),
            ],
            cluster.directory / "kube-apiserver.log",
        )
        wait_http(
            f"{cluster.server}/readyz", apiserver, "kube-apiserver", context=cluster.ssl_context()
        )

    def stop_apiserver(self, cluster: Cluster) -> None:
        """SIGKILL the cluster's kube-apiserver, as a crash would (``start_apiserver`` again)."""
        for name, proc in self._processes:
            if name == f"{cluster.name}/kube-apiserver" and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)

    @staticmethod
    def _real_node_apiserver_args(cluster: Cluster, node: nodenet.NodeAddresses) -> list[str]:
        pki = cluster.pki
        client_crt, client_key = issue(
            pki,
            pki.ca_cert.parent / "apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=("system:masters",),
        )
        return [
            "--service-cluster-ip-range",
            node.service_cidr,
            # Kubelets act only on their own Node and the pods bound to it.
            "--authorization-mode",
            "Node,RBAC",
            "--enable-admission-plugins",
            "NodeRestriction",
            # `kubectl logs/exec`: the API server calls the kubelet at its node address with a
            # client certificate and verifies the kubelet's serving certificate.
            "--kubelet-client-certificate",
            str(client_crt),
            "--kubelet-client-key",
            str(client_key),
            "--kubelet-certificate-authority",
            str(pki.ca_cert),
            "--kubelet-preferred-address-types",
            "InternalIP",
            # Service `kubernetes` gets this API server as its endpoint, for pods.
            "--endpoint-reconciler-type",
            "lease",
        ]

    def _start_real_node(self, cluster: Cluster, addresses: nodenet.NodeAddresses) -> None:
        if self._node_bin_dir is None:
            self._node_bin_dir = node_binaries()
            self._image_archives = images.build()
            self.devices_dir.mkdir(parents=True, exist_ok=True)
        nodenet.add_node(self.slot, addresses.index)
        with self.hosts_file.open("a") as hosts:
            hosts.write(f"{addresses.ip} {cluster.name}.kube-qss.test\n")
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(_COREDNS_RBAC))
        scheduler_crt, scheduler_key = issue(
            cluster.pki, cluster.directory / "kube-scheduler", common_name="system:kube-scheduler"
        )
        scheduler_config = kubeconfig(
            cluster.directory / "kube-scheduler.kubeconfig",
            name=cluster.name,
            server=cluster.server,
            ca=cluster.pki.ca_cert,
            cert=scheduler_crt,
            key=scheduler_key,
        )
        self.spawn(
            f"{cluster.name}/kube-scheduler",
            [
                str(self._node_bin_dir / "kube-scheduler"),
                "--kubeconfig",
                str(scheduler_config),
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
            ],
            cluster.directory / "kube-scheduler.log",
        )
        node = RealNode(
            cluster=cluster,
            plane=self,
            addresses=addresses,
            node_bin_dir=self._node_bin_dir,
            devices_dir=self.devices_dir,
            hosts_file=self.hosts_file,
            image_archives=self._image_archives,
        )
        cluster.node = node
        node.start()

    def stop(self) -> None:
        """Stop every process this object started, newest first, by PID; with real nodes
        first every process of the nodes (pods included), then their cgroups and network.
        Every step runs even when an earlier one fails; the first failure is raised at the end."""
        errors: list[BaseException] = []
        for record in reversed(self._node_records):
            _attempt(errors, teardown_recorded, record)
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
        for path in self._socket_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._socket_dirs.clear()
        self._record_socket_dirs()
        if self._slot is not None:
            _attempt(errors, nodenet.release, self._slot.number)
            if not errors:
                self._slot = None
                self._node_records.clear()
                self._record_nodes()
        if errors:
            raise errors[0]


def _attempt(errors: list[BaseException], step: Any, *args: Any) -> None:
    try:
        step(*args)
    except Exception as exc:
        print(f"localcluster: {exc}", file=sys.stderr)
        errors.append(exc)


# kube-controller-manager's controllers a cluster with a real node needs besides the usual ones.
REAL_NODE_CONTROLLERS = (
    "deployment",
    "replicaset",
    "statefulset",
    "daemonset",
    "endpointslice",
    "nodelifecycle",
    "root-ca-cert-publisher",
    "persistentvolume-binder",
)

# What the nodes' CoreDNS (user kube-qss:coredns) may read: CoreDNS's own published ClusterRole.
_COREDNS_RBAC: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kube-qss:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kube-qss:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kube-qss:coredns",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "kube-qss:coredns",
                }
            ],
        },
    ],
}


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
    """Stop the processes a detached `up` recorded (and undo its real nodes); returns how many
    recorded processes were still running."""
    nodes_file = state_dir / "realnodes.json"
    nodes = json.loads(nodes_file.read_text()) if nodes_file.exists() else None
    errors: list[BaseException] = []
    for record in reversed((nodes or {}).get("nodes", [])):
        _attempt(errors, teardown_recorded, NodeRecord.load(record))
    running = _stop_recorded_pids(state_dir)
    _remove_recorded_socket_dirs(state_dir)
    if nodes is not None:
        _attempt(errors, nodenet.release, int(nodes["slot"]))
        if errors:  # keep the record: a second `down` tries again
            raise RuntimeError(f"down did not undo everything: {errors[0]}")
        nodes_file.unlink()
    return running


def _remove_recorded_socket_dirs(state_dir: Path) -> None:
    record = state_dir / SOCKET_DIRS_FILE
    if record.exists():
        for path in json.loads(record.read_text()):
            shutil.rmtree(path, ignore_errors=True)
        record.unlink()


def _stop_recorded_pids(state_dir: Path) -> int:
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
    up.add_argument(
        "--real-nodes",
        action="store_true",
        help="give each cluster a real node (kubelet, containerd) that runs pods",
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
    plane = ControlPlane(
        state_dir=state_dir,
        bin_dir=control_plane_binaries(),
        detach=True,
        real_nodes=args.real_nodes,
    )
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
