"""Keys in real pods: the webhook, deployed from ``kustomize/webhook`` as pods behind its Service
on both real-node clusters, injects the key sidecar into annotated pods, and the sidecar runs in
them. A master pod (SAE erin) on node-a and a slave pod (SAE frank) on node-b, in a namespace of
their own, share keys for the whole module; their app containers run ``keypods.WATCH``, whose
logs (followed from the start) are each pod's history of keys. Everything is looked at from
inside the containers with ``kubectl exec``.

The API server runs on the host and reaches the webhook through its Service: the host routes
each node's Service range to the node, where kube-proxy sends it to a webhook pod.

The last tests delete the slave pod mid-rotation and then the master, and audit every key of
the module against both key stores and every KeyRequest seen (watched from the start); then
every pod's log and every Event is scanned for key material.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controllers.keystore import KeyStore
from controllers.keystore.model import StreamCounts
from qss_api import LABEL_AUTOMATIC
from qss_api import sidecar as names
from sidecar.keyrequests import LABEL_POD_UID
from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import NAMESPACE, RealQssNetwork, served, wait_for, wait_working
from tests.integration.helpers import eventually, get
from tests.realnode import keypods
from tests.realnode.helpers import running_pod
from tests.waiting import eventually_async
from webhooks.tls import signed_by

pytestmark = pytest.mark.realnode

A, B = "node-a", "node-b"
NS = "keys-in-pods"
MASTER_SAE, SLAVE_SAE = "erin", "frank"
MASTER_POD, SLAVE_POD = "erin-app", "frank-app"
KEY_NUMBER, MAX_KEYS, KEY_BITS = 2, 6, 256
STREAM = "node-a-node-b"
CLIENT = Path(__file__).parents[1] / "integration" / "stdlib_014_client.py"
WEBHOOK = "app.kubernetes.io/name=kube-qss-webhook"
REDIS = "app.kubernetes.io/name=kube-qss-redis"
WEBHOOK_NAME = "kube-qss-webhook.kube-qss-system.svc"
# Pods start slowly on 2 shared cores: the image's Python imports alone take seconds.
POD_TIMEOUT = 300


class Follower:
    """``kubectl <args>`` running in the background, every line of its output kept."""

    def __init__(self, cluster: Cluster, *args: str) -> None:
        self.lines: list[str] = []
        self._proc = subprocess.Popen(
            [str(cluster.kubectl_binary), "--kubeconfig", str(cluster.kubeconfig), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def done(self) -> bool:
        return self._proc.poll() is not None

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(timeout=30)
        self._thread.join(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class KeyRequestWatch:
    """Every version of every KeyRequest of the namespace on one cluster, from a watch."""

    def __init__(self, cluster: Cluster) -> None:
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.follower = Follower(
            cluster, "get", "keyrequests", "-n", NS, "-w", "-o", "json", "--output-watch-events"
        )
        self._parsed = 0
        self._buffer: list[str] = []
        self._decoder = json.JSONDecoder()

    def refresh(self) -> dict[str, list[dict[str, Any]]]:
        lines = self.follower.lines
        while self._parsed < len(lines):
            self._buffer.append(lines[self._parsed])
            self._parsed += 1
            text = "\n".join(self._buffer).strip()
            try:  # kubectl prints each event as an object, on one line or indented on many
                event, end = self._decoder.raw_decode(text)
            except ValueError:
                continue
            rest = text[end:].strip()
            self._buffer = [rest] if rest else []
            obj = event["object"]
            self.versions.setdefault(obj["metadata"]["name"], []).append(obj)
        return self.versions


@dataclass
class KeyPods:
    network: RealQssNetwork
    master: dict[str, Any]  # the pod objects as stored
    slave: dict[str, Any]
    logs: dict[tuple[str, str, str], Follower]  # (cluster, pod uid, container) -> its log
    watches: dict[str, KeyRequestWatch]
    before: dict[str, StreamCounts]
    seen_keys: dict[str, bytes] = field(default_factory=dict)
    consumed_by_clients: int = 0  # keys the 014 client took, on each node
    old_slaves: list[dict[str, Any]] = field(default_factory=list)

    @property
    def a(self) -> Cluster:
        return self.network.clusters[A]

    @property
    def b(self) -> Cluster:
        return self.network.clusters[B]

    def app_log(self, cluster: str, pod: dict[str, Any]) -> Follower:
        return self.logs[(cluster, pod["metadata"]["uid"], "app")]

    def history(self, cluster: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
        snapshots, problems = keypods.history(self.app_log(cluster, pod).text)
        assert problems == [], problems
        return snapshots

    def generation(self, cluster: str, pod: dict[str, Any]) -> int:
        snapshots = self.history(cluster, pod)
        return int(snapshots[-1]["generation"]) if snapshots else -1

    def snapshot(self, cluster: Cluster, pod: dict[str, Any]) -> keypods.Snapshot:
        snapshot = keypods.read_snapshot(cluster, pod["metadata"]["name"], NS)
        self.seen_keys.update(snapshot.keys)
        return snapshot


async def counts(cluster: Cluster) -> StreamCounts:
    """The stream's counts, read from the node's Redis pod (the host routes to pod addresses)."""
    pod = running_pod(cluster, NAMESPACE, REDIS)
    store = KeyStore.from_url(f"redis://{pod['status']['podIP']}:6379/0")
    try:
        return await store.counts(stream=STREAM)
    finally:
        await store.aclose()


def sae(cluster: Cluster, name: str) -> None:
    body = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "Sae",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"saeID": name, "registration": "Automatic"},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))

    def ready() -> bool:
        got = get(cluster, "sae", name, NS)
        conditions = (got or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    eventually(ready, POD_TIMEOUT, f"Sae {name} Ready on {cluster.name}")


def master_manifest() -> dict[str, Any]:
    return keypods.key_pod(
        MASTER_POD,
        NS,
        sae=MASTER_SAE,
        peer_sae=SLAVE_SAE,
        role="master",
        service_account="erin-app",
        annotations={
            "qss.dev/key-size": str(KEY_BITS),
            "qss.dev/key-number": str(KEY_NUMBER),
            "qss.dev/refresh-interval": "1s",
            "qss.dev/max-keys": str(MAX_KEYS),
        },
    )


def slave_manifest() -> dict[str, Any]:
    return keypods.key_pod(
        SLAVE_POD,
        NS,
        sae=SLAVE_SAE,
        peer_sae=MASTER_SAE,
        role="slave",
        service_account="frank-app",
        annotations={"qss.dev/max-keys": str(MAX_KEYS)},
    )


def follow_when_ready(
    logs: dict[tuple[str, str, str], Follower], node: str, cluster: Cluster, name: str
) -> dict[str, Any]:
    """Wait until the pod's app runs (so its first keys are there); follow both its logs (from
    their first line); the pod as stored."""
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        f"pod/{name}",
        "-n",
        NS,
        f"--timeout={POD_TIMEOUT}s",
        timeout=POD_TIMEOUT + 30,
    )
    stored = get(cluster, "pod", name, NS)
    assert stored is not None
    uid = stored["metadata"]["uid"]
    for container in ("app", names.CONTAINER_NAME):
        logs[(node, uid, container)] = Follower(
            cluster, "logs", "-f", name, "-n", NS, "-c", container
        )
    return stored


def requests_left(cluster: Cluster) -> bool:
    return not cluster.kubectl("get", "keyrequests", "-n", NS, "-o", "name").stdout


@pytest.fixture(scope="module")
def key_pods(_real_network_of_the_session: RealQssNetwork) -> Iterator[KeyPods]:
    network = _real_network_of_the_session
    wait_working(network)
    a, b = network.clusters[A], network.clusters[B]
    for cluster, name in ((a, MASTER_SAE), (b, SLAVE_SAE)):
        cluster.kubectl("create", "namespace", NS)
        keypods.app_service_account(cluster, NS, f"{name}-app")
        sae(cluster, name)
    check = partial(served, (a, (NS, MASTER_SAE, MASTER_SAE)), (b, (NS, SLAVE_SAE, SLAVE_SAE)))
    wait_for(check, POD_TIMEOUT, "node-a to know SAE frank")
    for cluster in (a, b):  # the warm-up request gone, so that the watches see only the pods'
        eventually(partial(requests_left, cluster), POD_TIMEOUT, "the warm-up request gone")
    watches = {A: KeyRequestWatch(a), B: KeyRequestWatch(b)}
    before = {n: asyncio.run(counts(network.clusters[n])) for n in (A, B)}
    logs: dict[tuple[str, str, str], Follower] = {}
    # The slave first, so that it is there for the master's first keys; it is Ready only once
    # they have arrived, so both are created before either is waited for.
    b.kubectl("create", "-f", "-", stdin=json.dumps(slave_manifest()))
    a.kubectl("create", "-f", "-", stdin=json.dumps(master_manifest()))
    master = follow_when_ready(logs, A, a, MASTER_POD)
    slave = follow_when_ready(logs, B, b, SLAVE_POD)
    pods = KeyPods(network, master, slave, logs, watches, before)
    try:
        yield pods
    finally:
        # Waited for, so that no key pod of this module still asks for keys in later tests.
        for cluster in (a, b):
            cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        for cluster in (a, b):
            cluster.kubectl(
                "wait",
                "--for=delete",
                f"namespace/{NS}",
                "--timeout=300s",
                check=False,
                timeout=330,
            )
        for follower in [*logs.values(), *(w.follower for w in watches.values())]:
            follower.stop()


def in_sync(pods: KeyPods) -> bool:
    """The slave holds the master's newest key."""
    master = pods.snapshot(pods.a, pods.master)
    slave = pods.snapshot(pods.b, pods.slave)
    return slave.keys.get(master.current) == master.keys[master.current]


def test_the_webhook_pod_injected_a_native_sidecar_of_the_local_image(key_pods: KeyPods) -> None:
    for pod, node in ((key_pods.master, "node-a-worker"), (key_pods.slave, "node-b-worker")):
        assert pod["metadata"]["annotations"]["qss.dev/inject-status"] == "injected"
        (sidecar,) = [c for c in pod["spec"]["initContainers"] if c["name"] == "qss-sidecar"]
        assert sidecar["restartPolicy"] == "Always"
        assert sidecar["image"] == keypods.IMAGE
        (app,) = pod["spec"]["containers"]
        assert {"name": names.KEYS_VOLUME, "mountPath": keypods.KEYS_DIR, "readOnly": True} in app[
            "volumeMounts"
        ]
        assert pod["spec"]["nodeName"] == node
        assert pod["status"]["phase"] == "Running"


def test_master_and_slave_pods_see_byte_identical_files_under_the_same_ids_within_the_bound(
    key_pods: KeyPods,
) -> None:
    pods = key_pods
    start = pods.generation(A, pods.master)
    eventually(lambda: pods.generation(A, pods.master) >= start + 3, POD_TIMEOUT, "3 refreshes")
    eventually(lambda: in_sync(pods), POD_TIMEOUT, "the slave holding the master's newest key")
    master, slave = pods.snapshot(pods.a, pods.master), pods.snapshot(pods.b, pods.slave)
    shared = set(master.keys) & set(slave.keys)
    assert len(shared) >= KEY_NUMBER
    assert all(master.keys[k] == slave.keys[k] for k in shared)
    assert {len(v) * 8 for v in master.keys.values()} == {KEY_BITS}
    assert set(master.modes.values()) == {0o400}
    assert set(slave.modes.values()) == {0o400}
    assert [e["key_ID"] for e in master.index][-1] == master.current
    # Every snapshot either app saw: at most the bound; the master reaches it; the same short
    # hash under the same ID on both sides.
    hashes: dict[str, str] = {}
    for node, pod in ((A, pods.master), (B, pods.slave)):
        history = pods.history(node, pod)
        assert all(len(s["keys"]) <= MAX_KEYS for s in history), node
        for snapshot in history:
            for key_id, digest in snapshot["keys"].items():
                assert hashes.setdefault(key_id, digest) == digest, key_id
    assert max(len(s["keys"]) for s in pods.history(A, pods.master)) == MAX_KEYS


def _client(pods: KeyPods, cluster: Cluster, pod: dict[str, Any], *args: str) -> dict[str, Any]:
    """The standard-library 014 client, run by the app container's python (no site-packages)
    from its standard input, against the sidecar on the pod's loopback."""
    out = cluster.kubectl(
        "exec",
        "-i",
        pod["metadata"]["name"],
        "-n",
        NS,
        "-c",
        "app",
        "--",
        "python3",
        "-I",
        "-S",
        "-",
        f"http://127.0.0.1:{names.DEFAULT_KEY_API_PORT}",
        *args,
        stdin=CLIENT.read_text(),
        check=False,
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def test_an_unmodified_014_client_in_the_app_container_gets_keys_from_the_sidecar(
    key_pods: KeyPods,
) -> None:
    pods = key_pods
    status = _client(pods, pods.a, pods.master, "status", SLAVE_SAE)
    assert status["status"] == 200, status
    assert status["document"]["master_SAE_ID"] == MASTER_SAE
    assert status["document"]["slave_SAE_ID"] == SLAVE_SAE

    enc = _client(pods, pods.a, pods.master, "enc", SLAVE_SAE, "2", "256")
    assert enc["status"] == 200, enc
    keys = {k["key_ID"]: k["key"] for k in enc["document"]["keys"]}
    pods.consumed_by_clients += len(keys)
    pods.seen_keys.update({k: base64.b64decode(v) for k, v in keys.items()})
    assert len(keys) == 2
    dec = _client(pods, pods.b, pods.slave, "dec", MASTER_SAE, *keys)
    assert dec["status"] == 200, dec
    assert {k["key_ID"]: k["key"] for k in dec["document"]["keys"]} == keys
    again = _client(pods, pods.b, pods.slave, "dec", MASTER_SAE, *keys)
    assert again["status"] == 400, again


def test_the_app_container_cannot_read_the_credentials(key_pods: KeyPods) -> None:
    pods = key_pods
    secret = get(pods.a, "secret", f"{MASTER_SAE}-credentials", NS)
    assert secret is not None
    pem = base64.b64decode(secret["data"]["tls.key"]).decode().splitlines()
    needle = pem[1]  # a line of the private key itself
    name = pods.master["metadata"]["name"]
    app = keypods.exec_python(pods.a, name, NS, keypods.SECRETS_PROBE, needle)
    assert app["found"] == [], app
    assert app["readable"] == [], app
    assert keypods.KEYS_DIR.replace("/var/run", "/run") in app["searched"], app
    assert not [m for m in app["mounts"] if "credentials" in m or "token" in m], app
    # The same probe in the sidecar finds them: it can tell.
    own = keypods.exec_python(
        pods.a, name, NS, keypods.SECRETS_PROBE, needle, container=names.CONTAINER_NAME
    )
    assert any(path.endswith("tls.key") for path in own["found"]), own
    assert f"{names.CREDENTIALS_DIR}/tls.key" in own["readable"], own


def test_readers_in_the_app_containers_find_every_snapshot_complete_during_twenty_rotations(
    key_pods: KeyPods,
) -> None:
    pods = key_pods
    results: dict[str, Any] = {}

    def read(node: str, cluster: Cluster, pod: dict[str, Any]) -> None:
        results[node] = keypods.exec_python(
            cluster,
            pod["metadata"]["name"],
            NS,
            keypods.READER,
            keypods.KEYS_DIR,
            "20",
            "400",
            timeout=460,
        )

    threads = [
        threading.Thread(target=read, args=(A, pods.a, pods.master)),
        threading.Thread(target=read, args=(B, pods.b, pods.slave)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[A]["problems"] == [], results[A]
    assert results[B]["problems"] == [], results[B]
    generations = results[A]["generations"]
    assert generations[-1] - generations[0] >= 20, results[A]
    assert len(generations) >= 20  # it read each (nearly) every one, not only the ends
    assert len(results[B]["generations"]) >= 10, results[B]
    assert results[A]["reads"] > len(generations)
    # And the apps' own readers, all along.
    pods.history(A, pods.master)
    pods.history(B, pods.slave)


def _webhook_pod_certificates(cluster: Cluster) -> list[x509.Certificate]:
    """The certificate each webhook pod serves, and the Service's, fetched over TLS from the
    host (which routes to the node's pod and Service addresses)."""
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", WEBHOOK, "-o", "json").stdout
    addresses = [
        (p["status"]["podIP"], 9443)
        for p in json.loads(out)["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    service = get(cluster, "service", "kube-qss-webhook", NAMESPACE)
    assert service is not None
    addresses.append((service["spec"]["clusterIP"], 443))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    found = []
    for address in addresses:
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=WEBHOOK_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        found.append(x509.load_der_x509_certificate(der))
    return found


def _bundle(cluster: Cluster) -> bytes:
    configuration = get(cluster, "mutatingwebhookconfiguration", "kube-qss-webhook", "")
    assert configuration is not None
    return base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])


def test_a_forced_rotation_of_the_webhook_pods_ca_keeps_admission_working(
    key_pods: KeyPods,
) -> None:
    """SIGHUP to one webhook pod: a new CA joins the bundle, both replicas move their serving
    certificate to it, the old CA leaves; annotated pods are admitted (server-side dry run, so
    that none starts) all along, each with the sidecar."""
    cluster = key_pods.a
    before = _bundle(cluster)
    failures: list[str] = []
    admitted: list[str] = []
    stop = threading.Event()

    def keep_admitting() -> None:
        while not stop.is_set():
            pod = master_manifest()
            pod["metadata"]["name"] = f"dry-{uuid.uuid4().hex[:6]}"
            result = cluster.kubectl(
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
                stdin=json.dumps(pod),
                check=False,
            )
            if result.returncode != 0:
                failures.append(result.stderr)
                continue
            stored = json.loads(result.stdout)
            sidecars = [c["name"] for c in stored["spec"].get("initContainers", [])]
            (admitted if sidecars == [names.CONTAINER_NAME] else failures).append(result.stdout)

    creator = threading.Thread(target=keep_admitting)
    creator.start()
    try:
        webhook = cluster.kubectl(
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            WEBHOOK,
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ).stdout
        cluster.kubectl("exec", webhook, "-n", NAMESPACE, "--", "sh", "-c", "kill -HUP 1")

        def finished() -> bool:
            bundle = _bundle(cluster)
            cas = x509.load_pem_x509_certificates(bundle)
            return (
                len(cas) == 1
                and bundle != before
                and all(signed_by(c, cas[0]) for c in _webhook_pod_certificates(cluster))
            )

        eventually(finished, POD_TIMEOUT, "the CA change to finish on every replica")
        count = len(admitted)
        eventually(lambda: len(admitted) > count, 60, "a pod admitted after the change")
    finally:
        stop.set()
        creator.join()
    assert failures == []
    assert len(admitted) >= 3


def _automatic_owners(pods: KeyPods) -> dict[str, tuple[set[str], list[str]]]:
    """Each automatic KeyRequest of frank on node-b: the pod UIDs that ever owned it, its keys."""
    found = {}
    for name, versions in pods.watches[B].refresh().items():
        if versions[0]["metadata"].get("labels", {}).get(LABEL_AUTOMATIC) != "true":
            continue
        owners = {
            ref["uid"]
            for v in versions
            for ref in v["metadata"].get("ownerReferences", [])
            if ref["kind"] == "Pod"
        }
        ids: list[str] = next(
            (v["spec"]["keyIDs"] for v in versions if v.get("spec", {}).get("keyIDs")), []
        )
        found[name] = (owners, list(ids))
    return found


def _in_flight(pods: KeyPods, slave_uid: str) -> set[str]:
    """Automatic KeyRequests waiting for the slave pod or taken by it but not consumed yet."""
    listed = pods.b.kubectl(
        "get", "keyrequests", "-n", NS, "-l", f"{LABEL_AUTOMATIC}=true", "-o", "json"
    ).stdout
    return {
        r["metadata"]["name"]
        for r in json.loads(listed)["items"]
        if not r["metadata"].get("deletionTimestamp")
        and all(o["uid"] == slave_uid for o in r["metadata"].get("ownerReferences", []))
    }


async def test_deleting_the_slave_pod_mid_rotation_and_recreating_it_serves_no_key_twice(
    key_pods: KeyPods,
) -> None:
    pods = key_pods
    crossed: dict[str, str] = {}  # hand-over waiting while no slave pod ran -> the pod gone
    # Each replacement leaves hand-overs waiting while no slave pod runs (the master rotates every
    # second), so the new pod must take them. A few tries also aim the deletion itself at a
    # hand-over in flight (waiting, or taken by the old pod and not consumed); the sidecar takes
    # one in well under a second, so that race is not always won, and is not required.
    for _ in range(3):
        old = pods.slave
        old_uid = old["metadata"]["uid"]
        in_flight = eventually(
            partial(_in_flight, pods, old_uid), POD_TIMEOUT, "a key hand-over in flight"
        )
        pods.b.kubectl("delete", "pod", SLAVE_POD, "-n", NS, "--wait=false")
        landed = in_flight & _in_flight(pods, old_uid)
        eventually(lambda: get(pods.b, "pod", SLAVE_POD, NS) is None, POD_TIMEOUT, "slave gone")
        pods.old_slaves.append(old)
        waiting = eventually(  # owned by no pod ("" is no pod's UID)
            partial(_in_flight, pods, ""), POD_TIMEOUT, "a hand-over waiting with no slave"
        )
        crossed.update(dict.fromkeys(waiting, old_uid))
        pods.b.kubectl("create", "-f", "-", stdin=json.dumps(slave_manifest()))
        pods.slave = follow_when_ready(pods.logs, B, pods.b, SLAVE_POD)
        if landed:
            break
    eventually(lambda: in_sync(pods), POD_TIMEOUT, "the new slave holding the master's newest key")

    # Stop asking (the master pod goes, and the requests it owned with it), let the slave take
    # what is on its way, then audit every key of the module.
    master_uid = pods.master["metadata"]["uid"]
    pods.a.kubectl("delete", "pod", MASTER_POD, "-n", NS, f"--timeout={POD_TIMEOUT}s")
    eventually(
        lambda: not pods.a.kubectl("get", "keyrequests", "-n", NS, "-o", "name").stdout,
        POD_TIMEOUT,
        "the master's requests gone",
    )
    new_uid = pods.slave["metadata"]["uid"]
    eventually(lambda: not _in_flight(pods, new_uid), POD_TIMEOUT, "every hand-over consumed")

    master_keys: set[str] = set()
    for versions in pods.watches[A].refresh().values():
        if versions[0]["metadata"].get("labels", {}).get(LABEL_POD_UID) != master_uid:
            continue
        ready = [v for v in versions if v.get("status", {}).get("phase") == "Ready"]
        if ready:
            master_keys |= set(ready[-1]["status"]["keyIDs"])
    in_master_files = {k for s in pods.history(A, pods.master) for k in s["keys"]}
    files = {
        pod["metadata"]["uid"]: {k for s in pods.history(B, pod) for k in s["keys"]}
        for pod in [*pods.old_slaves, pods.slave]
    }
    automatic = _automatic_owners(pods)
    handed_over = {k for _, ids in automatic.values() for k in ids}
    taken_by: dict[str, set[str]] = {}
    for owners, ids in automatic.values():
        assert len(owners) <= 1, f"a hand-over was taken by two pods: {owners}"
        for owner in owners:
            taken_by.setdefault(owner, set()).update(ids)

    # The audit covers real traffic: many keys, each slave pod taking some.
    assert len(master_keys) >= 20, master_keys
    assert all(taken_by.get(uid) for uid in files), taken_by.keys()
    assert in_master_files <= master_keys
    assert handed_over == master_keys, "the slave side got other keys than the master"
    uids = list(files)
    for i, uid in enumerate(uids):
        for other in uids[i + 1 :]:
            assert not files[uid] & files[other], "a key was in two slave pods"
            assert not taken_by.get(uid, set()) & taken_by.get(other, set())
        assert files[uid] <= taken_by.get(uid, set()), "a pod wrote keys it never took"
    # What waited while no slave pod ran was taken by a later pod (its files keep only the newest
    # max-keys keys, so the app may never have seen them; they count as taken below).
    for name, gone_uid in crossed.items():
        owners, _ = automatic[name]
        assert owners, f"{name} was never taken"
        assert gone_uid not in owners, f"{name} taken by the pod gone before it waited"
    # Every key reached exactly one slave pod: in its files, or taken by a pod that was deleted
    # before writing it (its KeyRequest went with the pod: by design no other pod gets it).
    assert set().union(*taken_by.values()) == master_keys, "keys the master got were lost"

    async def settled() -> dict[str, StreamCounts] | None:
        now = {n: await counts(pods.network.clusters[n]) for n in (A, B)}
        return None if any(c.reserved for c in now.values()) else now

    after = await eventually_async(settled, 120, "no reservation left", poll=0.2)
    for node, c in after.items():
        assert c.available + c.reserved + c.consumed + c.dropped == c.added, (node, c)
        consumed = c.consumed - pods.before[node].consumed
        assert consumed == len(master_keys) + pods.consumed_by_clients, (
            f"{node}: {consumed} keys consumed for {len(master_keys)} delivered and "
            f"{pods.consumed_by_clients} by the 014 client"
        )


def test_keys_never_appear_in_any_pods_log_or_in_events(key_pods: KeyPods) -> None:
    pods = key_pods
    assert len(pods.seen_keys) >= 10
    needles = set()
    for key in pods.seen_keys.values():
        encoded = (base64.b64encode(key), base64.urlsafe_b64encode(key))
        needles |= {key.hex(), *(e.decode() for e in encoded)}
    texts = {str(k): f.text for k, f in pods.logs.items()}
    for cluster in (pods.a, pods.b):
        listed = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
        for pod in listed:
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            out = cluster.kubectl(
                "logs", name, "-n", ns, "--all-containers", "--prefix", check=False
            ).stdout
            texts[f"{cluster.name}/{ns}/{name}"] = out
        events = cluster.kubectl("get", "events", "-A", "-o", "json").stdout
        texts[f"{cluster.name} events"] = events
    assert sum(len(t) for t in texts.values()) > 10_000  # the scan read real logs
    leaks = [where for where, text in texts.items() if any(n in text for n in needles)]
    assert leaks == []
