"""Pods that get QKD keys through the webhook on the real nodes, and small scripts that look at
their key volume from inside the app container (``kubectl exec``, standard library only).

Used by ``tests/realnode/test_keys_in_pods.py``, ``make demo`` (``tests.cluster.demo``) and the
real-node benchmark. The app container of a ``key_pod`` runs ``WATCH``: it reads the volume the
way ``docs/keys-in-pods.md`` tells apps to, and logs one line per snapshot it sees (generation,
key IDs, a short SHA-256 of each key, never a key) and any snapshot it finds incomplete, so its
log is the pod's history of keys.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from tests.cluster import images
from tests.cluster.localcluster import Cluster
from tests.realnode.helpers import LOCKED_DOWN

IMAGE = images.LOCAL_REFS["kube-qss"]
KEYS_DIR = "/var/run/qss/keys"
APP_UID = 65532

# The app container's program: every snapshot it sees, as one JSON line.
WATCH = """
import hashlib, json, os, sys, time
root, last = sys.argv[1], None
while True:
    time.sleep(0.05)
    try:
        name = os.readlink(os.path.join(root, "..data"))
    except FileNotFoundError:
        continue
    snapshot = os.path.join(root, name)
    try:
        index = json.load(open(os.path.join(snapshot, "index.json")))
        keys, short = {}, []
        for entry in index["keys"]:
            data = open(os.path.join(snapshot, entry["key_ID"]), "rb").read()
            if len(data) * 8 != entry["size"]:
                short.append(entry["key_ID"])
            keys[entry["key_ID"]] = hashlib.sha256(data).hexdigest()[:16]
    except FileNotFoundError:
        if os.path.exists(snapshot):
            print(json.dumps({"problem": name + " lacks a file it lists"}), flush=True)
        continue
    if short:
        print(json.dumps({"problem": name + " has short keys " + ",".join(short)}), flush=True)
    if index["generation"] != last:
        last = index["generation"]
        line = {"generation": last, "current": index["current"], "keys": keys}
        print(json.dumps(line), flush=True)
"""

# Read the volume as fast as possible until the generation has moved ``argv[2]`` times (or
# ``argv[3]`` seconds passed); how many snapshots were read, their generations, and problems.
READER = """
import json, os, sys, time
root, rotations, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
generations, problems, reads, first = set(), [], 0, None
while time.monotonic() < deadline:
    try:
        name = os.readlink(os.path.join(root, "..data"))
        snapshot = os.path.join(root, name)
        index = json.load(open(os.path.join(snapshot, "index.json")))
        for entry in index["keys"]:
            data = open(os.path.join(snapshot, entry["key_ID"]), "rb").read()
            if len(data) * 8 != entry["size"]:
                problems.append(name + ": " + entry["key_ID"] + " is short")
        if index["current"] not in [e["key_ID"] for e in index["keys"]]:
            problems.append(name + ": current is not in the index")
    except FileNotFoundError:
        if os.path.exists(snapshot):
            problems.append(name + " lacks a file it lists")
        continue
    reads += 1
    generations.add(index["generation"])
    first = index["generation"] if first is None else first
    if index["generation"] >= first + rotations:
        break
print(json.dumps({"reads": reads, "generations": sorted(generations), "problems": problems}))
"""

# The current snapshot with the key bytes (base64) and each file's mode: for the test only, on
# its standard output, never in a log.
DUMP = """
import base64, json, os, stat, sys
root = sys.argv[1]
snapshot = os.path.join(root, os.readlink(os.path.join(root, "..data")))
index = json.load(open(os.path.join(snapshot, "index.json")))
keys, modes = {}, {}
for entry in index["keys"]:
    path = os.path.join(snapshot, entry["key_ID"])
    keys[entry["key_ID"]] = base64.b64encode(open(path, "rb").read()).decode()
    modes[entry["key_ID"]] = stat.S_IMODE(os.stat(path).st_mode)
print(json.dumps({"generation": index["generation"], "current": index["current"],
                  "keys": keys, "modes": modes, "index": index["keys"]}))
"""

# What of the pod's secrets the app container can reach: its mounts, whether the sidecar's
# credential and token paths exist, and which files under its mounts (not the image's own root,
# /proc, /sys, /dev) contain ``argv[1]`` (a line of the credentials' private key).
SECRETS_PROBE = """
import json, os, sys
needle = sys.argv[1].encode()
mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
searched, found = [], []
for mount in mounts:
    if mount == "/" or mount.split("/")[1] in ("proc", "sys", "dev"):
        continue
    searched.append(mount)
    paths = [mount] if os.path.isfile(mount) else [
        os.path.join(d, f) for d, _, fs in os.walk(mount) for f in fs]
    for path in paths:
        try:
            if needle in open(path, "rb").read():
                found.append(path)
        except OSError:
            pass
paths = ["/var/run/qss/credentials/tls.key", "/var/run/qss/sidecar-token/token",
         "/var/run/secrets/kubernetes.io/serviceaccount/token"]
readable = []
for path in paths:
    try:
        open(path, "rb").read()
        readable.append(path)
    except OSError:
        pass
print(json.dumps({"mounts": mounts, "searched": searched, "found": found,
                  "readable": readable}))
"""


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a key volume, read from inside a container."""

    generation: int
    current: str
    keys: dict[str, bytes]
    modes: dict[str, int]
    index: list[dict[str, Any]]


def key_pod(
    name: str,
    namespace: str,
    *,
    sae: str,
    peer_sae: str,
    role: str,
    service_account: str,
    annotations: dict[str, str] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:
    """An application pod asking for keys (label and annotations), whose app runs ``WATCH``."""
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "app",
                "image": IMAGE,
                "command": ["python3", "-c", WATCH, KEYS_DIR],
                "securityContext": LOCKED_DOWN,
            }
        ],
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "qss.dev/inject": "true"},
            "annotations": {
                "qss.dev/sae": sae,
                "qss.dev/peer-sae": peer_sae,
                "qss.dev/role": role,
                **(annotations or {}),
            },
        },
        "spec": spec,
    }


def app_service_account(cluster: Cluster, namespace: str, name: str) -> None:
    """A service account for key-consuming pods, bound to the shipped ClusterRole
    ``kube-qss-sidecar`` in its namespace (docs/keys-in-pods.md, "RBAC to bind")."""
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{name}-keys", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kube-qss-sidecar",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=body)


def exec_python(
    cluster: Cluster,
    pod: str,
    namespace: str,
    script: str,
    *args: str,
    container: str = "app",
    timeout: float = 120,
) -> Any:
    """Run ``script`` with the container's python3; its standard output, read as JSON."""
    out = cluster.kubectl(
        "exec",
        pod,
        "-n",
        namespace,
        "-c",
        container,
        "--",
        "python3",
        "-c",
        script,
        *args,
        timeout=timeout,
    )
    return json.loads(out.stdout)


def read_snapshot(cluster: Cluster, pod: str, namespace: str) -> Snapshot:
    got = exec_python(cluster, pod, namespace, DUMP, KEYS_DIR)
    return Snapshot(
        generation=got["generation"],
        current=got["current"],
        keys={k: base64.b64decode(v) for k, v in got["keys"].items()},
        modes=got["modes"],
        index=got["index"],
    )


def history(log: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What a ``WATCH`` app logged: the snapshots it saw (oldest first) and the problems."""
    snapshots, problems = [], []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "problem" in entry:
            problems.append(entry["problem"])
        elif "generation" in entry:
            snapshots.append(entry)
    return snapshots, problems
