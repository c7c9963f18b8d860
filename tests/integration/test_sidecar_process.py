"""The key sidecar as a process beside the two-node QSS network (real API servers, Redis,
controllers, QKDMs and device pair), set up as the webhook sets it up in a pod
(``tests.cluster.sidecar``): a master sidecar for SAE sc-alice on node-a, a slave for sc-bob on
node-b, each with its own key directory, service account (the shipped ClusterRole
kube-qss-sidecar) and the Sae's credentials.

A monitor thread records every snapshot either sidecar publishes, for the whole module, so the
last test can audit all of it: the same bytes under every key ID everywhere, nothing the master
got missing at the slave, no key coming back once it left, generations never going backwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qss_api import LABEL_AUTOMATIC
from sidecar.keyrequests import LABEL_POD_UID
from tests.cluster.network import QssNetwork
from tests.cluster.sidecar import (
    KeySnapshot,
    PartialSnapshot,
    SidecarPod,
    read_snapshot,
    sidecar_pod,
    wait_listening,
)
from tests.integration.helpers import eventually, kubectl_json
from tests.metrics import scrape

pytestmark = pytest.mark.cluster

A, B = "node-a", "node-b"
NS_A, NS_B = "sc-a", "sc-b"
ALICE, BOB = "sc-alice", "sc-bob"
MAX_KEYS = 6
KEY_NUMBER = 2
CLIENT = Path(__file__).with_name("stdlib_014_client.py")


@dataclass
class Monitor:
    """Every distinct snapshot each sidecar published, in the order they were seen."""

    dirs: dict[str, Path]
    seen: dict[str, list[KeySnapshot]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.seen = {role: [] for role in self.dirs}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for role, directory in self.dirs.items():
                try:
                    snapshot = read_snapshot(directory)
                except PartialSnapshot as exc:
                    self.problems.append(f"{role}: {exc}")
                    continue
                if snapshot is None:
                    continue
                history = self.seen[role]
                if not history or history[-1].generation != snapshot.generation:
                    history.append(snapshot)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def latest(self, role: str) -> KeySnapshot | None:
        history = self.seen[role]
        return history[-1] if history else None

    def generation(self, role: str) -> int:
        latest = self.latest(role)
        return latest.generation if latest else -1


@dataclass
class Pair:
    network: QssNetwork
    master: SidecarPod
    slave: SidecarPod
    monitor: Monitor


@pytest.fixture(scope="module")
def pair(qss_network: QssNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    link = qss_network.add_link(A, B, name="sidecar", rate_bps=2_000_000, capacity=200_000)
    qss_network.register_sae(A, NS_A, "alice", ALICE)
    qss_network.register_sae(B, NS_B, "bob", BOB)
    root = Path(tmp_path_factory.mktemp("sidecars"))
    master = sidecar_pod(
        qss_network,
        A,
        namespace=NS_A,
        pod_name="alice-app",
        annotations={
            "qss.dev/sae": "alice",
            "qss.dev/peer-sae": BOB,
            "qss.dev/role": "master",
            "qss.dev/key-size": "256",
            "qss.dev/key-number": str(KEY_NUMBER),
            "qss.dev/refresh-interval": "1s",
            "qss.dev/max-keys": str(MAX_KEYS),
        },
        directory=root / "master",
    )
    slave = sidecar_pod(
        qss_network,
        B,
        namespace=NS_B,
        pod_name="bob-app",
        annotations={
            "qss.dev/sae": "bob",
            "qss.dev/peer-sae": ALICE,
            "qss.dev/role": "slave",
            "qss.dev/max-keys": str(MAX_KEYS),
        },
        directory=root / "slave",
    )
    monitor = Monitor(dirs={"master": master.keys_dir, "slave": slave.keys_dir})
    monitor.start()
    for pod in (slave, master):
        pod.start()
        wait_listening(pod)
    try:
        yield Pair(network=qss_network, master=master, slave=slave, monitor=monitor)
    finally:
        monitor.stop()
        for pod in (master, slave):
            if pod.running():
                pod.stop()
        qss_network.stop_link(link.stream)


def in_sync(pair: Pair) -> bool:
    """The slave holds the master's newest keys, byte for byte."""
    master, slave = read_snapshot(pair.master.keys_dir), read_snapshot(pair.slave.keys_dir)
    if master is None or slave is None or master.current is None:
        return False
    return slave.keys.get(master.current) == master.keys[master.current]


def own_requests(pair: Pair) -> list[dict[str, Any]]:
    listed = kubectl_json(
        pair.master.cluster,
        "get",
        "keyrequests",
        "-n",
        NS_A,
        "-l",
        f"{LABEL_POD_UID}={pair.master.pod_uid}",
    )
    return [] if listed is None else list(listed["items"])


def automatic_requests(pair: Pair) -> list[dict[str, Any]]:
    listed = kubectl_json(
        pair.slave.cluster, "get", "keyrequests", "-n", NS_B, "-l", f"{LABEL_AUTOMATIC}=true"
    )
    return [] if listed is None else [o for o in listed["items"] if o["spec"]["sae"] == "bob"]


def test_master_and_slave_hold_the_same_keys_under_the_same_ids_refreshed_within_the_bound(
    pair: Pair,
) -> None:
    eventually(lambda: in_sync(pair), timeout=90, what="the slave holding the master's newest key")
    start = pair.monitor.generation("master")
    eventually(
        lambda: pair.monitor.generation("master") >= start + 3, timeout=60, what="3 refreshes"
    )
    eventually(lambda: in_sync(pair), timeout=30, what="the slave catching up again")
    master, slave = read_snapshot(pair.master.keys_dir), read_snapshot(pair.slave.keys_dir)
    assert master is not None
    assert slave is not None
    shared = set(master.keys) & set(slave.keys)
    assert len(shared) >= KEY_NUMBER
    assert all(master.keys[k] == slave.keys[k] for k in shared)
    assert set(master.sizes.values()) == {256}
    for role in ("master", "slave"):
        assert all(len(s.keys) <= MAX_KEYS for s in pair.monitor.seen[role]), role
    assert max(len(s.keys) for s in pair.monitor.seen["master"]) == MAX_KEYS


def test_metrics_count_rotations_and_keys_written_and_carry_no_key(pair: Pair) -> None:
    eventually(lambda: in_sync(pair), timeout=90, what="the slave holding the master's newest key")
    master = scrape(pair.master.metrics_url)
    rotations = master.value("qss_sidecar_rotations_total")
    assert rotations >= 1
    # Every master request asks for KEY_NUMBER keys; each delivered one is one rotation.
    assert master.value("qss_sidecar_keys_written_total") == rotations * KEY_NUMBER
    assert 1 <= master.value("qss_sidecar_keys_held") <= MAX_KEYS
    eventually(
        lambda: scrape(pair.master.metrics_url).value("qss_sidecar_rotations_total") > rotations,
        timeout=30,
        what="the next rotation counted",
    )
    slave = scrape(pair.slave.metrics_url)
    assert slave.value("qss_sidecar_rotations_total") >= 1
    assert slave.value("qss_sidecar_keys_written_total") >= KEY_NUMBER
    for pod, page in ((pair.master, master), (pair.slave, slave)):
        snapshot = read_snapshot(pod.keys_dir)
        assert snapshot is not None
        for key_id, material in snapshot.keys.items():
            assert key_id not in page.text
            assert material.hex() not in page.text


def test_files_are_owner_read_only_and_current_names_the_newest_key(pair: Pair) -> None:
    snapshot = read_snapshot(pair.master.keys_dir)
    assert snapshot is not None
    assert snapshot.current is not None
    directory = pair.master.keys_dir / snapshot.directory
    for key_id in snapshot.keys:
        assert (directory / key_id).stat().st_mode & 0o777 == 0o400
    assert list(snapshot.keys)[-1] == snapshot.current
    assert (pair.master.keys_dir / "current").resolve().name in snapshot.keys


def test_readers_find_every_snapshot_complete_during_twenty_rotations(pair: Pair) -> None:
    problems: list[str] = []
    complete: dict[str, set[int]] = {"master": set(), "slave": set()}
    stop = threading.Event()

    def reader(role: str, directory: Path) -> None:
        while not stop.is_set():
            try:
                snapshot = read_snapshot(directory)
            except PartialSnapshot as exc:
                problems.append(f"{role}: {exc}")
                continue
            if snapshot is not None:
                complete[role].add(snapshot.generation)

    threads = [
        threading.Thread(target=reader, args=("master", pair.master.keys_dir)),
        threading.Thread(target=reader, args=("slave", pair.slave.keys_dir)),
    ]
    start = pair.monitor.generation("master")
    for thread in threads:
        thread.start()
    try:
        eventually(
            lambda: pair.monitor.generation("master") >= start + 20,
            timeout=120,
            what="20 rotations",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert len(complete["master"]) >= 20
    assert len(complete["slave"]) >= 15
    assert pair.monitor.problems == []


def _client(url: str, *args: str) -> dict[str, Any]:
    """The standard-library 014 client, with no site-packages at all (-I -S)."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(CLIENT), url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_an_unmodified_stdlib_014_client_gets_keys_from_the_loopback_endpoints(pair: Pair) -> None:
    status = _client(pair.master.url, "status", BOB)
    assert status["status"] == 200, status
    assert status["document"]["master_SAE_ID"] == ALICE
    assert status["document"]["slave_SAE_ID"] == BOB

    enc = _client(pair.master.url, "enc", BOB, "2", "256")
    assert enc["status"] == 200, enc
    keys = {k["key_ID"]: k["key"] for k in enc["document"]["keys"]}
    assert len(keys) == 2
    dec = _client(pair.slave.url, "dec", ALICE, *keys)
    assert dec["status"] == 200, dec
    assert {k["key_ID"]: k["key"] for k in dec["document"]["keys"]} == keys

    enc = _client(pair.master.url, "enc-get", BOB, "1", "128")
    assert enc["status"] == 200, enc
    (key,) = enc["document"]["keys"]
    dec = _client(pair.slave.url, "dec-get", ALICE, key["key_ID"])
    assert dec["document"]["keys"] == [key]

    # Each key once: asking for the same IDs again is the node's 400, passed on as JSON.
    again = _client(pair.slave.url, "dec", ALICE, *keys)
    assert again["status"] == 400
    assert again["document"]["message"]
    # A malformed request never reaches the node.
    bad = _client(pair.master.url, "enc", BOB, "0", "256")
    assert bad["status"] == 400
    assert "number" in json.dumps(bad["document"])


def test_consumed_keyrequests_and_their_secrets_do_not_pile_up(pair: Pair) -> None:
    start = pair.monitor.generation("master")
    eventually(
        lambda: pair.monitor.generation("master") >= start + 5, timeout=60, what="5 refreshes"
    )
    # One request in flight at a time on the master's side, and the slave keeping up.
    eventually(lambda: len(own_requests(pair)) <= 1, timeout=30, what="at most one master request")
    eventually(
        lambda: len(automatic_requests(pair)) <= 1, timeout=30, what="slave requests consumed"
    )

    def secrets(cluster: Any, namespace: str) -> int:
        listed = kubectl_json(
            cluster, "get", "secrets", "-n", namespace, "-l", "qss.dev/keyrequest"
        )
        return len(listed["items"]) if listed else 0

    # The garbage collector deletes a consumed request's Secret; give it its discovery period.
    eventually(
        lambda: secrets(pair.master.cluster, NS_A) <= 2,
        timeout=120,
        what="master key Secrets collected",
    )
    eventually(
        lambda: secrets(pair.slave.cluster, NS_B) <= 2,
        timeout=120,
        what="slave key Secrets collected",
    )


def _kill_mid_rotation(pair: Pair, pod: SidecarPod, requests: Any, *, attempts: int = 20) -> None:
    """Kill ``pod`` with SIGKILL while a KeyRequest it serves is in flight and start it again.
    A kill only counts if the request was still there right after it (the fault landed where it
    meant to); a request served in the moment between looking and killing means another try."""
    for _ in range(attempts):
        in_flight = eventually(requests, timeout=60, what="a KeyRequest in flight")
        names = {r["metadata"]["name"] for r in in_flight}
        pod.kill()
        landed = names & {r["metadata"]["name"] for r in requests()}
        pod.start()
        wait_listening(pod)
        if landed:
            # Each request in flight at the kill is consumed after the restart.
            def consumed(landed: set[str] = landed) -> bool:
                return not landed & {r["metadata"]["name"] for r in requests()}

            eventually(consumed, timeout=90, what="the requests in flight at the kill consumed")
            return
    raise AssertionError(f"no kill landed while a request was in flight in {attempts} tries")


def test_kill_9_mid_rotation_and_restart_serves_no_key_twice_and_loses_none(pair: Pair) -> None:
    for _ in range(3):
        _kill_mid_rotation(pair, pair.master, lambda: own_requests(pair))
    for _ in range(2):
        _kill_mid_rotation(pair, pair.slave, lambda: automatic_requests(pair))
    assert set(pair.master.exits) == {-9}
    assert set(pair.slave.exits) == {-9}
    # Stop asking, let the slave take what is on its way, then audit everything seen.
    assert pair.master.stop() == 0
    eventually(
        lambda: all(
            r.get("status", {}).get("phase") in ("Ready", "Failed") for r in own_requests(pair)
        ),
        timeout=60,
        what="the master's last request served",
    )
    eventually(
        lambda: not automatic_requests(pair), timeout=90, what="the slave consuming every hand-over"
    )
    eventually(lambda: in_sync(pair), timeout=30, what="the slave holding the master's last keys")
    monitor = pair.monitor

    def seen_by_the_monitor() -> bool:
        """The monitor has recorded the snapshots on disk now (it polls every 20 ms, but a
        loaded machine may not run its thread for longer than that)."""
        for role, pod in (("master", pair.master), ("slave", pair.slave)):
            on_disk = read_snapshot(pod.keys_dir)
            if on_disk is not None and monitor.generation(role) != on_disk.generation:
                return False
        return True

    eventually(seen_by_the_monitor, timeout=30, what="the monitor seeing the final snapshots")
    assert monitor.problems == []

    material: dict[str, bytes] = {}
    for role in ("master", "slave"):
        history = monitor.seen[role]
        generations = [s.generation for s in history]
        assert generations == sorted(generations), f"{role} generations went backwards"
        left: set[str] = set()
        held: set[str] = set()
        for snapshot in history:
            now = set(snapshot.keys)
            assert not now & left, f"{role}: a key came back after it left: {now & left}"
            left |= held - now
            held = now
            for key_id, content in snapshot.keys.items():
                assert material.setdefault(key_id, content) == content, f"{key_id} differs"
    master_ids = {k for s in monitor.seen["master"] for k in s.keys}
    slave_ids = {k for s in monitor.seen["slave"] for k in s.keys}
    assert master_ids - slave_ids == set(), "keys the master got never reached the slave"
    assert len(master_ids) >= 20
    # The request the master had in flight when it stopped was served on both nodes; its keys
    # reached the slave and wait in the request for the master pod, which takes them when it
    # runs again.
    waiting = {
        i
        for r in own_requests(pair)
        if r["status"]["phase"] == "Ready"
        for i in r["status"]["keyIDs"]
    }
    assert slave_ids - master_ids == waiting
    pair.master.start()
    wait_listening(pair.master)
    eventually(
        lambda: not own_requests(pair) or not waiting,
        timeout=60,
        what="the waiting request consumed",
    )
    eventually(
        lambda: waiting <= {k for s in monitor.seen["master"] for k in s.keys},
        timeout=30,
        what="the waiting keys in the master's files",
    )


def test_sigterm_stops_the_sidecar_cleanly(pair: Pair) -> None:
    if not pair.master.running():
        pair.master.start()
        wait_listening(pair.master)
    assert pair.slave.stop() == 0
    assert pair.master.stop() == 0
    for pod in (pair.master, pair.slave):
        log = pod.log.read_text()
        assert "stopping" in log
        assert "Traceback" not in log
