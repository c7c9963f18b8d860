"""Faults on real pods, each proven to land in the middle of a burst of KeyRequests: the
controller's container killed with SIGKILL (kill -9; the kubelet restarts it) and the Redis
container killed the same way (it restarts on the same volume, append-only file on, fsynced
every write). Every key is audited at the end: each delivered exactly once (master and slave
Secrets identical, no key in two requests), the stores' counts account for every key, and
nothing stays reserved."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

import pytest

from controllers.keystore.model import StreamCounts
from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import NAMESPACE, RealQssNetwork
from tests.integration.helpers import eventually
from tests.realnode.helpers import REDIS, running_pod, stream_counts, unique
from tests.waiting import eventually_async

pytestmark = pytest.mark.realnode

STREAM = "node-a-node-b"
NS = "default"
KEYS_EACH = 2
# Large enough that the served part of a burst is still running when the fault lands.
BURST = 60
CONTROLLER = "app.kubernetes.io/name=kube-qss-controller"


def burst(cluster: Cluster, count: int) -> list[str]:
    """``count`` KeyRequests (alice -> bob) created in one call, so they arrive together."""
    prefix = unique("burst")
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    items = [
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "KeyRequest",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "sae": "alice",
                "slaveSaeID": "bob",
                "number": KEYS_EACH,
                "size": 256,
                "timeoutSeconds": 300,
            },
        }
        for name in names
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=body)
    return names


def statuses(cluster: Cluster, names: list[str]) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", "keyrequests", "-n", NS, "-o", "json").stdout
    found = {o["metadata"]["name"]: o for o in json.loads(out)["items"]}
    return {n: found[n].get("status", {}) for n in names if n in found}


def phases(cluster: Cluster, names: list[str]) -> dict[str, str | None]:
    return {n: s.get("phase") for n, s in statuses(cluster, names).items()}


def all_done(cluster: Cluster, names: list[str]) -> dict[str, dict[str, Any]] | None:
    done = statuses(cluster, names)
    if len(done) == len(names) and all(
        s.get("phase") in ("Ready", "Failed") for s in done.values()
    ):
        return done
    return None


async def counts(cluster: Cluster) -> StreamCounts:
    return await stream_counts(cluster, STREAM)


def items(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", kind, "-n", NS, "-o", "json").stdout
    )["items"]
    return found


def secrets(cluster: Cluster) -> dict[str, dict[str, bytes]]:
    """Every Secret in the namespace (one read for the whole audit): name -> key ID -> key."""
    return {
        o["metadata"]["name"]: {
            k: base64.b64decode(v) for k, v in o.get("data", {}).items() if k != "keys.json"
        }
        for o in items(cluster, "secrets")
    }


def fault_lands_mid_burst(cluster: Cluster, names: list[str], fault: Any) -> dict[str, Any]:
    """Wait until the burst is being served, apply ``fault``; the phases right after it, which
    must show some requests served and some not yet (a killed process serves nothing more, and
    its restart takes seconds)."""
    eventually(lambda: "Ready" in phases(cluster, names).values(), 180, "the burst to be served")
    fault()
    at_fault = phases(cluster, names)
    served = [n for n, p in at_fault.items() if p == "Ready"]
    assert 0 < len(served) < len(names), f"the fault did not land mid-burst: {at_fault}"
    return at_fault


def kill_9(cluster: Cluster, pod: dict[str, Any], container: str) -> None:
    """SIGKILL the processes of ``container`` in ``pod``, on its node's containerd."""
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == container)
    assert cluster.node is not None
    cluster.node.kill_container(status["containerID"].removeprefix("containerd://"))


def restarts(pod: dict[str, Any], container: str) -> int:
    return int(
        next(c for c in pod["status"]["containerStatuses"] if c["name"] == container)[
            "restartCount"
        ]
    )


def restarted(cluster: Cluster, old: dict[str, Any], selector: str, container: str) -> None:
    """The pod's container restarted by the kubelet (same pod, one more restart) and Ready."""

    def again() -> bool:
        pod = running_pod(cluster, NAMESPACE, selector)
        return bool(
            pod["metadata"]["uid"] == old["metadata"]["uid"]
            and restarts(pod, container) > restarts(old, container)
        )

    eventually(again, 300, f"{container} restarted in its pod on {cluster.name}")


async def audit(
    network: RealQssNetwork, names: list[str], before: dict[str, StreamCounts]
) -> dict[str, dict[str, Any]]:
    """Every request done; each served key delivered exactly once on both nodes; the stores
    account for every key and hold no reservation."""
    a, b = network.clusters["node-a"], network.clusters["node-b"]
    done: dict[str, dict[str, Any]] = eventually(
        lambda: all_done(a, names), 420, "every request of the burst done"
    )
    uids = {o["metadata"]["name"]: o["metadata"]["uid"] for o in items(a, "keyrequests")}
    served = [n for n in names if done[n]["phase"] == "Ready"]
    slaves = {n: f"bob-{uids[n]}" for n in served}
    slave_done = eventually(
        lambda: all_done(b, list(slaves.values())), 180, "every automatic slave request done"
    )
    secrets_a, secrets_b = secrets(a), secrets(b)
    delivered: dict[str, bytes] = {}
    for name, status in done.items():
        if status["phase"] == "Failed":
            assert f"{name}-keys" not in secrets_a, f"{name} failed but has a Secret"
            continue
        keys = secrets_a[status["secretName"]]
        assert len(keys) == KEYS_EACH
        assert not set(keys) & set(delivered), "a key was delivered twice"
        delivered.update(keys)
        slave = slave_done[slaves[name]]
        assert slave["phase"] == "Ready", slave
        assert secrets_b[slave["secretName"]] == keys, "the two nodes hold different keys"
    assert len(set(delivered.values())) == len(delivered), "two keys share their bytes"

    async def settled() -> dict[str, StreamCounts] | None:
        now = {n: await counts(network.clusters[n]) for n in ("node-a", "node-b")}
        return None if any(c.reserved for c in now.values()) else now

    # Pools agreed ahead of demand go back once idle (30 s by default), so allow for that.
    after = await eventually_async(settled, 180, "no reservation left", poll=0.2)
    for node, c in after.items():
        assert c.available + c.reserved + c.consumed + c.dropped == c.added, (node, c)
        assert c.added >= before[node].added, f"keys added on {node} were lost"
        assert c.consumed - before[node].consumed == len(delivered), (
            f"on {node}, {c.consumed - before[node].consumed} keys were consumed for "
            f"{len(delivered)} delivered: keys were lost or consumed twice"
        )
    return done


async def test_killing_the_controller_mid_burst_delivers_each_key_exactly_once(
    real_network: RealQssNetwork,
) -> None:
    a = real_network.clusters["node-a"]
    old = running_pod(a, NAMESPACE, CONTROLLER)
    before = {n: await counts(real_network.clusters[n]) for n in ("node-a", "node-b")}
    first = burst(a, BURST)

    fault_lands_mid_burst(a, first, partial(kill_9, a, old, "controller"))
    second = burst(a, 10)  # arrives while the controller is down or starting

    restarted(a, old, CONTROLLER, "controller")
    done = await audit(real_network, first + second, before)
    assert all(s["phase"] == "Ready" for s in done.values()), done


async def test_killing_redis_mid_burst_loses_no_key(
    real_network: RealQssNetwork,
) -> None:
    a = real_network.clusters["node-a"]
    old = running_pod(a, NAMESPACE, REDIS)
    before = {n: await counts(real_network.clusters[n]) for n in ("node-a", "node-b")}
    first = burst(a, BURST)
    added_before_fault = (await counts(a)).added
    fault_lands_mid_burst(a, first, partial(kill_9, a, old, "redis"))
    second = burst(a, 10)

    restarted(a, old, REDIS, "redis")
    # Everything added before the fault is still there (append-only file, fsynced each write).
    assert (await counts(a)).added >= added_before_fault
    await audit(real_network, first + second, before)

    # The QKDM works with the restarted Redis: its status of the stream shows the store's counts as
    # the burst left them (a status from before the fault would not).
    async def qkdm_reports_the_new_store() -> bool:
        stream = json.loads(a.kubectl("get", "keystream", STREAM, "-o", "json").stdout)
        return bool(stream["status"].get("consumedKeys") == (await counts(a)).consumed)

    await eventually_async(
        qkdm_reports_the_new_store, 120, "the QKDM to report the new store", poll=0.2
    )
