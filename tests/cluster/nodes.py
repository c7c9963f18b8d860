"""Real Kubernetes nodes for the local clusters: per node a containerd, a kubelet, kube-proxy and a
cluster DNS (CoreDNS), each in the node's own network and mount namespaces, running real pods from
the images ``tests.cluster.images`` builds.

Called by ``tests.cluster.localcluster`` (``ControlPlane`` with ``real_nodes=True``). Isolation,
so that two or more nodes (and two or more harnesses) run on one machine at once:

- network: the node's namespace from ``tests.cluster.nodenet`` (its own interfaces, routes,
  iptables rules, and ``ip_forward``); kube-proxy programs Services there in iptables mode.
- mounts: a private mount namespace, held open by a ``holder`` process, with fresh tmpfs on
  ``/run``, ``/var/lib`` and ``/var/log`` and the node's own directories bound onto the fixed
  paths the kubelet and the manifests use (``/var/lib/kubelet``, ``/var/lib/cni``,
  ``/var/lib/kube-qss`` for hostPath volumes, ``/run/qss/devices`` for the simulated QKD devices'
  sockets, shared by the nodes of one harness like a fibre between two sites). containerd runs
  there too, so it resolves hostPath volumes in the same view. Nothing of it is visible on the
  host, and it all goes when the last process in the namespace exits.
- cgroups: the kubelet's ``cgroupRoot`` is ``/kube-qss-<slot>-<node>`` in every hierarchy.
- DNS: CoreDNS listens on the node's address (the NodeLocal DNS layout: no extra pod to start per
  node), serving ``cluster.local`` from the API server and the QSS nodes' names under
  ``kube-qss.test`` from a hosts file; it forwards nothing, so no query leaves the machine.

``teardown`` undoes it all: every process in the node's cgroups and mount namespace, the cgroups
themselves; ``nodenet.release`` then removes the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.cluster import images, nodenet
from tests.cluster.pki import issue

if TYPE_CHECKING:
    from tests.cluster.localcluster import Cluster, ControlPlane

CGROUP_FS = Path("/sys/fs/cgroup")
CNI_BIN_DIR = "/usr/lib/cni"
CLUSTER_DOMAIN = "cluster.local"
# Names of the harness's QSS nodes, <cluster>.kube-qss.test, answered by every node's DNS.
QSS_NODE_DOMAIN = "kube-qss.test"
# Where the kubelet's fixed paths and the manifests' hostPaths are bound inside a node.
DEVICES_PATH = "/run/qss/devices"
HOST_VOLUMES_PATH = "/var/lib/kube-qss"
_READY_TIMEOUT = 90.0


def kubeconfig(path: Path, *, name: str, server: str, ca: Path, cert: Path, key: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": name, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, ..., the named and unified ones)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        raise RuntimeError(
            "this machine uses cgroup v2 only; the real-node harness supports cgroup v1 "
            "(hybrid) hierarchies"
        )
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0]
        mount_point = Path(left.split()[4])
        if fstype in ("cgroup", "cgroup2") and mount_point.parent == CGROUP_FS:
            found.append(mount_point)
    return sorted(set(found))


def _cgroup_dirs(root_name: str) -> list[Path]:
    """Every cgroup under ``root_name`` in every hierarchy, deepest first. The kubelet and runc
    may remove some while we walk; those are skipped."""
    found: list[Path] = []
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / root_name.lstrip("/")
        for directory, _subdirs, _files in os.walk(top, topdown=False):
            found.append(Path(directory))
    return found


def _processes_in_cgroup_tree(root_name: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(root_name):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return pids


def _remove_cgroup_tree(root_name: str) -> None:
    for directory in _cgroup_dirs(root_name):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()


def _create_cgroup_root(root_name: str) -> None:
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / root_name.lstrip("/")
        top.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            # A new cpuset starts with no CPUs and no memory nodes: copy the parent's.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (top / knob).write_text((hierarchy / knob).read_text())


def mount_namespace_id(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/mnt")
    return None


def processes_in_mount_namespace(ns_id: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and mount_namespace_id(int(entry.name)) == ns_id:
            found.add(int(entry.name))
    return found


def kill_until_gone(find: Callable[[], set[int]], *, what: str, grace: float) -> None:
    """SIGTERM what ``find`` returns (with ``grace`` > 0), then SIGKILL what is left, until
    nothing is found."""
    if grace > 0:
        for pid in find():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while find() and time.monotonic() < deadline:
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while pids := find():
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of {what} survive SIGKILL: {sorted(pids)}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@dataclass(frozen=True)
class NodeRecord:
    """What ``down`` needs to undo a node even after the harness process is gone."""

    name: str
    cgroup_root: str
    mount_ns: str

    @staticmethod
    def load(data: dict[str, str]) -> NodeRecord:
        return NodeRecord(
            name=data["name"], cgroup_root=data["cgroup_root"], mount_ns=data["mount_ns"]
        )


def teardown_recorded(record: NodeRecord) -> None:
    """Stop every process of the node (pods, shims, containerd, kubelet, ...), drop its cgroups.

    The node goes away with its pods, so they get no grace period; the node's own daemons get a
    few seconds to exit cleanly (the kubelet first, so it restarts nothing meanwhile)."""

    def pods() -> set[int]:
        return _processes_in_cgroup_tree(record.cgroup_root)

    def daemons() -> set[int]:
        return processes_in_mount_namespace(record.mount_ns)

    kill_until_gone(
        lambda: {p for p in daemons() if _command(p).startswith("kubelet")},
        what=f"{record.name}'s kubelet",
        grace=5,
    )
    kill_until_gone(pods, what=f"{record.name}'s pods", grace=0)
    kill_until_gone(daemons, what=f"node {record.name}", grace=5)
    kill_until_gone(pods, what=f"{record.name}'s pods", grace=0)
    _remove_cgroup_tree(record.cgroup_root)


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


@dataclass
class RealNode:
    """One kubelet node of a local cluster, with everything it needs to run pods."""

    cluster: Cluster
    plane: ControlPlane
    addresses: nodenet.NodeAddresses
    node_bin_dir: Path
    devices_dir: Path
    hosts_file: Path
    image_archives: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    record: NodeRecord | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The kubelet node's name (not the QSS node's: that is the cluster's name)."""
        return f"{self.cluster.name}-worker"

    @property
    def directory(self) -> Path:
        return self.cluster.directory / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/kube-qss-{self.addresses.slot}-{self.addresses.index}"

    @property
    def volumes_dir(self) -> Path:
        """Host side of the node's /var/lib/kube-qss (hostPath volumes of the test overlays)."""
        return self.directory / "volumes"

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self._layout()
        _create_cgroup_root(self.cgroup_root)
        holder = self._start_holder()
        self.record = NodeRecord(
            name=self.name, cgroup_root=self.cgroup_root, mount_ns=self._holder_ns(holder)
        )
        self.plane.record_node(self.record)
        self._start_containerd()
        t0 = time.monotonic()
        self.import_images(self.image_archives.values())
        self.timings["import images"] = time.monotonic() - t0
        self.start_kubelet()
        self._start_kube_proxy()
        self._start_dns()
        self._wait_ready()
        self.timings["node start to Ready"] = time.monotonic() - started

    def _layout(self) -> None:
        d = self.directory
        for sub in ("containerd", "kubelet", "cni/net.d", "cni/state", "pod-logs", "volumes"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if len(str(self.containerd_socket)) > 100:
            raise RuntimeError(
                f"{self.containerd_socket} is too long for a Unix socket; use a shorter state dir"
            )
        pki, a = self.cluster.pki, self.addresses
        server = self.cluster.server
        issue(
            pki,
            d / "kubelet-client",
            common_name=f"system:node:{self.name}",
            organizations=("system:nodes",),
        )
        issue(
            pki,
            d / "kubelet-serving",
            common_name=self.name,
            server=True,
            ips=(a.ip,),
            dns_names=(self.name,),
        )
        issue(pki, d / "kube-proxy", common_name="system:kube-proxy")
        issue(pki, d / "coredns", common_name="kube-qss:coredns")
        for who in ("kubelet-client", "kube-proxy", "coredns"):
            kubeconfig(
                d / f"{who}.kubeconfig",
                name=self.cluster.name,
                server=server,
                ca=pki.ca_cert,
                cert=d / f"{who}.crt",
                key=d / f"{who}.key",
            )
        self._write_containerd_config()
        self._write_cni_config()
        self._write_kubelet_config()
        self._write_kube_proxy_config()
        self._write_corefile()

    def _write_containerd_config(self) -> None:
        c = self.directory / "containerd"
        sock = self.containerd_socket
        (c / "config.toml").write_text(
            f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.LOCAL_REFS["pause"]}"
  disable_apparmor = true
  # runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE over the machine's own setting).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.directory / "cni" / "net.d"}"
"""
        )

    def _write_cni_config(self) -> None:
        a = self.addresses
        config = {
            "cniVersion": "0.4.0",
            "name": "kube-qss",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,  # pods leave the node with its address
                    "hairpinMode": True,  # a pod reaches itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": a.pod_cidr, "gateway": a.pod_gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }
        (self.directory / "cni" / "net.d" / "10-kube-qss.conflist").write_text(json.dumps(config))

    def _write_kubelet_config(self) -> None:
        d, a = self.directory, self.addresses
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": a.ip,
            "readOnlyPort": 0,
            # Real authentication: the API server presents its kubelet client certificate, every
            # other caller a token the API server reviews; SubjectAccessReviews authorize them.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cluster.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(d / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(d / "kubelet-serving.key"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "clusterDNS": [a.ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "",
            "podLogsDir": str(d / "pod-logs"),
            # Inside the node's own network namespace anyway; nothing of ours needs them.
            "makeIPTablesUtilChains": False,
            # A shared build machine: never evict or collect images because of its disk or memory.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 40,
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
            "shutdownGracePeriod": "0s",
        }
        (d / "kubelet.yaml").write_text(json.dumps(config, indent=2))

    def _write_kube_proxy_config(self) -> None:
        d, a = self.directory, self.addresses
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(d / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "bindAddress": a.ip,
            "clusterCIDR": a.pod_cidr,
            "healthzBindAddress": f"{a.ip}:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{a.ip}/32"],
            # Service traffic is masqueraded, so replies come back through the node even when
            # client and backend share the pod bridge (no reliance on br_netfilter).
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # Leave the machine-wide conntrack settings alone.
            "conntrack": {
                "maxPerCore": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (d / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))

    def _write_corefile(self) -> None:
        d, ip = self.directory, self.addresses.ip
        (d / "Corefile").write_text(
            f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {ip}
    ready {ip}:8181
    errors
    cache 5
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {d / "coredns.kubeconfig"} {self.cluster.name}
        pods insecure
    }}
}}
{QSS_NODE_DOMAIN}:53 {{
    bind {ip}
    errors
    hosts {self.hosts_file} {{
        reload 1s
    }}
}}
"""
        )

    def _in_node(self, argv: list[str]) -> list[str]:
        holder = self.processes["holder"].pid
        return ["nsenter", f"--target={holder}", "--mount", "--net", "--", *argv]

    def _start_holder(self) -> subprocess.Popen[bytes]:
        d = self.directory
        script = "\n".join(
            [
                "set -e",
                # Fresh, private copies of the directories the kubelet and containerd write to
                # at fixed paths; the node's own directories bound where they must persist.
                "mount -t tmpfs -o mode=0755 kube-qss-run /run",
                "mount -t tmpfs -o mode=0755 kube-qss-var-lib /var/lib",
                "mount -t tmpfs -o mode=0755 kube-qss-var-log /var/log",
                f"mkdir -p /var/lib/kubelet /var/lib/cni {HOST_VOLUMES_PATH} {DEVICES_PATH}",
                f"mount --bind {d / 'kubelet'} /var/lib/kubelet",
                f"mount --bind {d / 'cni' / 'state'} /var/lib/cni",
                f"mount --bind {self.volumes_dir} {HOST_VOLUMES_PATH}",
                f"mount --bind {self.devices_dir} {DEVICES_PATH}",
                f"touch {d / 'holder.ready'}",
                "exec sleep infinity",
            ]
        )
        (d / "holder.ready").unlink(missing_ok=True)
        proc = self.plane.spawn(
            f"{self.cluster.name}/node-namespaces",
            [
                "nsenter",
                f"--net={self.addresses.netns_path}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ],
            d / "holder.log",
        )
        self.processes["holder"] = proc
        _wait(lambda: (d / "holder.ready").exists(), proc, "the node's namespaces", 15)
        return proc

    @staticmethod
    def _holder_ns(proc: subprocess.Popen[bytes]) -> str:
        ns = mount_namespace_id(proc.pid)
        if ns is None or ns == mount_namespace_id(os.getpid()):
            raise RuntimeError("the node's mount namespace holder is not in its own namespace")
        return ns

    def _spawn_in_node(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = self.plane.spawn(
            f"{self.cluster.name}/{name}", self._in_node(argv), self.directory / f"{name}.log"
        )
        self.processes[name] = proc
        return proc

    def _start_containerd(self) -> None:
        proc = self._spawn_in_node(
            "containerd", ["containerd", "--config", str(self.directory / "containerd/config.toml")]
        )
        _wait(self.containerd_socket.exists, proc, "containerd", 30)
        _wait(lambda: self._ctr("version", check=False).returncode == 0, proc, "containerd", 30)

    def kill_container(self, container_id: str) -> None:
        """SIGKILL every process of a container at once, as a crash (kill -9) takes it; the
        kubelet then restarts it in the same pod."""
        self._ctr("tasks", "kill", "--all", "--signal", "SIGKILL", container_id)

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )

    def import_images(self, archives: Iterable[Path]) -> None:
        for archive in archives:
            result = self._ctr("images", "import", str(archive), check=False)
            if result.returncode != 0:
                raise RuntimeError(f"importing {archive} into {self.name} failed: {result.stderr}")

    def start_kubelet(self) -> None:
        d = self.directory
        self._spawn_in_node(
            "kubelet",
            [
                str(self.node_bin_dir / "kubelet"),
                "--config",
                str(d / "kubelet.yaml"),
                "--kubeconfig",
                str(d / "kubelet-client.kubeconfig"),
                "--hostname-override",
                self.name,
                "--node-ip",
                self.addresses.ip,
                "--v=1",
            ],
        )

    def stop_kubelet(self) -> None:
        proc = self.processes.pop("kubelet")
        proc.terminate()
        proc.wait(timeout=30)

    def _start_kube_proxy(self) -> None:
        self._spawn_in_node(
            "kube-proxy",
            [
                str(self.node_bin_dir / "kube-proxy"),
                "--config",
                str(self.directory / "kube-proxy.yaml"),
                "--v=1",
            ],
        )

    def _start_dns(self) -> None:
        proc = self._spawn_in_node(
            "coredns",
            [str(self.node_bin_dir / "coredns"), "-conf", str(self.directory / "Corefile")],
        )

        def ready() -> bool:
            try:
                url = f"http://{self.addresses.ip}:8181/ready"
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _wait(ready, proc, "CoreDNS", _READY_TIMEOUT)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            kubelet = self.processes["kubelet"]
            if kubelet.poll() is not None:
                raise RuntimeError(
                    f"kubelet of {self.name} exited; see {self.directory}/kubelet.log"
                )
            out = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
            if out.returncode == 0:
                node: dict[str, Any] = json.loads(out.stdout)
                conditions = node.get("status", {}).get("conditions", [])
                ready = [c for c in conditions if c["type"] == "Ready"]
                taints = node.get("spec", {}).get("taints", [])
                if ready and ready[0]["status"] == "True" and not taints:
                    return
                last = f"Ready={ready[0]['status'] if ready else '?'}, taints={taints}"
            time.sleep(0.25)
        raise RuntimeError(f"node {self.name} not Ready within {_READY_TIMEOUT:.0f}s ({last})")

    # -- inspection ----------------------------------------------------------------------------

    def memory_bytes(self) -> dict[str, int]:
        """Resident memory of the node's processes and of its pods, by part."""
        usage: dict[str, int] = {}
        for name, proc in self.processes.items():
            if name != "holder" and proc.poll() is None:
                usage[name] = _rss(proc.pid)
        assert self.record is not None
        shims = processes_in_mount_namespace(self.record.mount_ns) - {
            p.pid for p in self.processes.values()
        }
        usage["containerd shims"] = sum(_rss(pid) for pid in shims)
        usage["pods"] = sum(_rss(pid) for pid in _processes_in_cgroup_tree(self.cgroup_root))
        return usage

    def teardown(self) -> None:
        if self.record is not None:
            teardown_recorded(self.record)
        self.processes.clear()


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _wait(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see its log")
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s")
