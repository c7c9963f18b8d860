"""A local QSS network: QSS nodes (a cluster, a Redis and a controller each) joined by QKD links
(a simulated device pair, a QKDLink and a KeyStream on both clusters, and a QKDM per end).

Used by the demo (``tests.cluster.demo``) and the end-to-end tests (``tests/fixtures/qss.py``).
Every process is started through the ``ControlPlane`` that owns the clusters, so ``stop()`` (or
``localcluster down`` for the demo) stops all of them by PID. Processes run from this checkout's
Python (``sys.executable -m ...``), as a pod would run the console scripts.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controllers import pki
from qss_api.qkd004 import MAX_INDEX, DeviceState, Fault, GetKey, Health, Refusal
from qss_api.qkd004_client import request_sync
from tests.cluster.localcluster import (
    Cluster,
    ControlPlane,
    control_plane_binaries,
    free_port,
    install_crds,
    redis_argv,
    wait_http,
)

if TYPE_CHECKING:
    from tests.cluster.topology import NetworkTopology

API_VERSION = "qss.dev/v1alpha1"
NODE_NAMESPACE = "kube-qss-system"


@dataclass
class QssNode:
    """One QSS node: its cluster, key store and controller."""

    name: str
    cluster: Cluster
    redis_port: int
    redis_dir: Path
    ca: pki.Credentials
    channel_port: int
    key_api_port: int
    controller: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    qkdms: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Extra environment of the node's controller (e.g. QSS_DELIVERY_* settings of a test).
    controller_env: dict[str, str] = field(default_factory=dict)
    # The health ports (/healthz, /metrics) of the controller and of each stream's QKDM.
    health_port: int = 0
    qkdm_health_ports: dict[str, int] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        """The controller's Prometheus metrics."""
        return f"http://127.0.0.1:{self.health_port}/metrics"

    def qkdm_metrics_url(self, stream: str) -> str:
        return f"http://127.0.0.1:{self.qkdm_health_ports[stream]}/metrics"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def channel_url(self) -> str:
        return f"https://127.0.0.1:{self.channel_port}"

    @property
    def key_api_url(self) -> str:
        """The node's ETSI GS QKD 014 key API."""
        return f"https://127.0.0.1:{self.key_api_port}"


@dataclass
class QkdLinkPair:
    """A QKD link between two nodes: the device pair and the stream's name on both."""

    a: str
    b: str
    stream: str
    socket_a: Path
    socket_b: Path
    device: subprocess.Popen[bytes] | None = None
    argv: list[str] = field(default_factory=list)  # how the device pair was started
    named: bool = False  # the QKDLinks carry the stream's name, not the peer's


@dataclass
class QssNetwork:
    plane: ControlPlane
    nodes: dict[str, QssNode] = field(default_factory=dict)
    links: dict[str, QkdLinkPair] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.plane.state_dir

    def _env(self, node: QssNode, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(KUBECONFIG=str(node.cluster.kubeconfig), QSS_NODE_ID=node.name, **extra)
        return env

    # -- nodes ---------------------------------------------------------------------------------

    def add_node(
        self, name: str, cluster: Cluster, *, controller_env: dict[str, str] | None = None
    ) -> QssNode:
        directory = cluster.directory
        node = QssNode(
            name=name,
            cluster=cluster,
            redis_port=free_port(),
            redis_dir=directory / "redis",
            ca=pki.create_ca(f"kube-qss {name} node CA"),
            channel_port=free_port(),
            key_api_port=free_port(),
            controller_env=dict(controller_env or {}),
        )
        node.redis_dir.mkdir(parents=True, exist_ok=True)
        self.nodes[name] = node
        # The node's CA is supplied, as an operator would, so peers can be told to trust it
        # before the node first starts; the controller issues its own certificate from it.
        cluster.kubectl("create", "namespace", NODE_NAMESPACE, check=False)
        create_secret(
            cluster, "qss-node-ca", {"ca.crt": node.ca.cert_pem, "ca.key": node.ca.key_pem}
        )
        self.start_redis(node)
        self.start_controller(node)
        self._wait_controller_ready(node)
        return node

    def _wait_controller_ready(self, node: QssNode) -> None:
        """Until the controller's /healthz says its start-up is done (503 before). On a cluster
        just started, a first list may be refused (429: "storage is (re)initializing") and the
        start-up is tried again 2 s later; tests that wait for the controller's work must not
        count that time, so the wait is here."""
        assert node.controller is not None
        wait_http(
            f"http://127.0.0.1:{node.health_port}/healthz",
            node.controller,
            f"the controller of {node.name}",
        )

    def start_redis(self, node: QssNode) -> None:
        node.redis = self.plane.spawn(
            f"{node.name}/redis",
            redis_argv(port=node.redis_port, data_dir=node.redis_dir),
            node.cluster.directory / "redis.log",
        )
        _wait_tcp(node.redis_port, node.redis, "redis-server")

    def stop_redis(self, node: QssNode) -> None:
        _stop(node.redis)
        node.redis = None

    def start_controller(self, node: QssNode) -> None:
        port = node.health_port = free_port()
        node.controller = self.plane.spawn(
            f"{node.name}/qss-controller",
            [
                sys.executable,
                "-m",
                "controllers.main",
                "--health-endpoint",
                f"http://127.0.0.1:{port}/healthz",
            ],
            node.cluster.directory / "qss-controller.log",
            env=self._env(
                node,
                QSS_REDIS_URL=node.redis_url,
                QSS_NAMESPACE=NODE_NAMESPACE,
                QSS_CHANNEL_ADDRESS=f"127.0.0.1:{node.channel_port}",
                QSS_ETSI014_HOST="127.0.0.1",
                QSS_ETSI014_PORT=str(node.key_api_port),
                QSS_NODE_IPS="127.0.0.1",
                **node.controller_env,
            ),
        )

    def kill_controller(self, node: str) -> None:
        """SIGKILL the node's controller, as a crash would (no clean-up runs)."""
        proc = self.nodes[node].controller
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        self.nodes[node].controller = None

    # -- links ---------------------------------------------------------------------------------

    def add_link(
        self,
        a: str,
        b: str,
        *,
        rate_bps: int,
        name: str | None = None,
        capacity: int = 100_000,
        chunk_bits: int = 256,
        min_bps: int | None = None,
        buffer_bits: int | None = None,
    ) -> QkdLinkPair:
        """A device pair between nodes a and b, the QKDLinks and KeyStreams, a QKDM per end.

        The QKDLink on each side is named after the peer node, or ``name`` (then the KeyStream
        too) when a test wants several links between the same two nodes."""
        stream = name or f"{min(a, b)}-{max(a, b)}"
        sockets = self.plane.socket_dir()
        pair = QkdLinkPair(
            a=a,
            b=b,
            stream=stream,
            socket_a=sockets / "a.sock",
            socket_b=sockets / "b.sock",
            named=name is not None,
        )
        secret_file = sockets / "pair.secret"
        secret_file.write_bytes(secrets.token_bytes(32))
        secret_file.chmod(0o600)
        argv = [
            sys.executable,
            "-m",
            "device_plugin.simdevice",
            "pair",
            "--socket-a",
            str(pair.socket_a),
            "--socket-b",
            str(pair.socket_b),
            "--rate-bps",
            str(rate_bps),
            "--secret-file",
            str(secret_file),
        ]
        if buffer_bits is not None:
            argv += ["--buffer-bits", str(buffer_bits)]
        pair.argv = argv
        pair.device = self.plane.spawn(
            f"device/{stream}", argv, self.state_dir / f"device-{stream}.log"
        )
        _wait_unix(pair.socket_a, pair.device, "simulated QKD device")
        _wait_unix(pair.socket_b, pair.device, "simulated QKD device")
        self.links[stream] = pair
        for here, there, sock in ((a, b, pair.socket_a), (b, a, pair.socket_b)):
            node = self.nodes[here]
            create_secret(node.cluster, f"{there}-ca", {"ca.crt": self.nodes[there].ca.cert_pem})
            qos: dict[str, Any] = {"keyChunkSize": chunk_bits}
            if min_bps is not None:
                qos["minBps"] = min_bps
            apply(
                node.cluster,
                {
                    "apiVersion": API_VERSION,
                    "kind": "QKDLink",
                    "metadata": {"name": name or there},
                    "spec": {
                        "peerNodeID": there,
                        "peerEndpoint": self.nodes[there].channel_url,
                        "peerCASecretName": f"{there}-ca",
                        "keyBufferCapacity": capacity,
                    },
                },
            )
            apply(
                node.cluster,
                {
                    "apiVersion": API_VERSION,
                    "kind": "KeyStream",
                    "metadata": {"name": stream},
                    "spec": {"link": name or there, "qos": qos},
                },
            )
            self.start_qkdm(node, stream, sock)
        return pair

    def start_qkdm(self, node: QssNode, stream: str, device: Path) -> None:
        port = node.qkdm_health_ports[stream] = free_port()
        node.qkdms[stream] = self.plane.spawn(
            f"{node.name}/qss-qkdm-{stream}",
            [
                sys.executable,
                "-m",
                "controllers.qkdm.main",
                "--health-endpoint",
                f"http://127.0.0.1:{port}/healthz",
            ],
            node.cluster.directory / f"qss-qkdm-{stream}.log",
            env=self._env(
                node,
                QSS_REDIS_URL=node.redis_url,
                QSS_KEYSTREAM=stream,
                QSS_QKD_DEVICE_PATH=str(device),
            ),
        )

    def stop_link(self, stream: str) -> None:
        """Stop the link's QKDMs and device pair (its objects and stored keys stay), so that
        finished tests leave no processes loading the machine."""
        pair = self.links.pop(stream)
        for node in (pair.a, pair.b):
            proc = self.nodes[node].qkdms.pop(stream, None)
            _stop(proc)
        _stop(pair.device)
        shutil.rmtree(pair.socket_a.parent, ignore_errors=True)

    def remove_link(self, stream: str) -> None:
        """Stop the link and delete its QKDLinks and KeyStreams on both clusters."""
        pair = self.links[stream]
        self.stop_link(stream)
        for here, there in ((pair.a, pair.b), (pair.b, pair.a)):
            cluster = self.nodes[here].cluster
            link = stream if pair.named else there
            cluster.kubectl("delete", "qkdlink", link, "--ignore-not-found", "--wait=false")
            cluster.kubectl("delete", "keystream", stream, "--ignore-not-found", "--wait=false")

    def kill_qkdm(self, node: str, stream: str) -> None:
        proc = self.nodes[node].qkdms.pop(stream)
        proc.kill()
        proc.wait(timeout=10)

    def restart_qkdm(self, node: str, stream: str) -> None:
        pair = self.links[stream]
        device = pair.socket_a if node == pair.a else pair.socket_b
        self.start_qkdm(self.nodes[node], stream, device)

    def register_sae(self, node: str, namespace: str, name: str, sae_id: str) -> None:
        """Apply an Automatic Sae on ``node`` and wait until it is Ready."""
        cluster = self.nodes[node].cluster
        cluster.kubectl("create", "namespace", namespace, check=False)
        apply(
            cluster,
            {
                "apiVersion": API_VERSION,
                "kind": "Sae",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"saeID": sae_id},
            },
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cluster.kubectl("get", "sae", name, "-n", namespace, "-o", "json").stdout
            conditions = json.loads(out).get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Sae {namespace}/{name} on {node} not Ready within 60 s")

    def sae_credentials(self, node: str, namespace: str, name: str) -> dict[str, bytes]:
        """The Sae's issued credentials Secret: tls.crt, tls.key, ca.crt (PEM)."""
        cluster = self.nodes[node].cluster
        out = cluster.kubectl(
            "get", "secret", f"{name}-credentials", "-n", namespace, "-o", "json"
        ).stdout
        data = json.loads(out)["data"]
        return {k: base64.b64decode(v) for k, v in data.items()}

    def device_fault(self, stream: str, **faults: Any) -> DeviceState:
        """Switch a fault of the link's device pair (link_down, rate_bps, qber)."""
        reply = request_sync(self.links[stream].socket_a, Fault(**faults))
        assert isinstance(reply, DeviceState), reply
        return reply

    def device_chunks(self, stream: str) -> int:
        """How many chunks the link's device has generated on the stream's current KSID (the
        stream must be open at end A): GET_KEY far ahead is refused with that count."""
        pair = self.links[stream]
        ksid = next(
            s.key_stream_ID
            for s in self.device_health(stream).streams
            if s.peer_connected and not s.aborted
        )
        reply = request_sync(pair.socket_a, GetKey(key_stream_ID=ksid, index=MAX_INDEX))
        assert isinstance(reply, Refusal), reply
        assert reply.next_index is not None, reply
        return reply.next_index

    def device_health(self, stream: str) -> DeviceState:
        reply = request_sync(self.links[stream].socket_a, Health())
        assert isinstance(reply, DeviceState), reply
        return reply

    def restart_device(self, stream: str) -> None:
        """Stop the link's device pair and start it again: it forgets every key stream, as a
        real device does when it restarts."""
        pair = self.links[stream]
        _stop(pair.device)
        pair.device = self.plane.spawn(
            f"device/{stream}", pair.argv, self.state_dir / f"device-{stream}.log"
        )
        _wait_unix(pair.socket_a, pair.device, "simulated QKD device")
        _wait_unix(pair.socket_b, pair.device, "simulated QKD device")


@contextmanager
def running_network(
    state_dir: Path,
    *,
    nodes: tuple[str, ...] = ("node-a", "node-b"),
    detach: bool = False,
    topology: NetworkTopology | None = None,
) -> Iterator[QssNetwork]:
    """A local QSS network outside pytest (benchmarks, the demo): control plane, clusters with
    the CRDs, and the nodes' Redis and controllers; with a ``topology``
    (``tests.cluster.topology``), its nodes, links and SAEs instead. Stopped on exit unless
    ``detach``."""
    if topology is not None:
        nodes = tuple(topology.nodes)
    state_dir.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(state_dir=state_dir, bin_dir=control_plane_binaries(), detach=detach)
    try:
        network = QssNetwork(plane=plane)
        for name in nodes:
            cluster = plane.start_cluster(name)
            install_crds(cluster)
            network.add_node(name, cluster)
        if topology is not None:
            topology.build(network)
        yield network
    except BaseException:
        plane.stop()
        raise
    if not detach:
        plane.stop()


def create_secret(cluster: Cluster, name: str, data: dict[str, bytes]) -> None:
    """Create or replace an Opaque Secret in the node namespace."""
    apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NODE_NAMESPACE},
            "type": "Opaque",
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )


def apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=qss-network",
        "-f",
        "-",
        stdin=json.dumps(obj),
    )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 s (as the kubelet does after a pod's
    grace period): a process still importing on a busy machine may not have its handler yet."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 15 s")


def _wait_unix(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not create {path} within 15 s")
