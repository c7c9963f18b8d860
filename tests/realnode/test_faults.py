"""Faults on real pods, each proven to land in the middle of a burst of KeyRequests: the
controller pod deleted (its Deployment starts another) and the Redis pod deleted (its
StatefulSet starts another on the same volume, append-only file on). Every key is audited at the
end: each delivered exactly once (master and slave Secrets identical, no key in two requests),
the stores' counts account for every key, and nothing stays reserved."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

import pytest

from controllers.keystore.model import StreamCounts
from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import NAMESPACE, RealQssNetwork
from tests.integration.helpers import eventually, get
from tests.realnode.helpers import REDIS, eventually_async, running_pod, stream_counts, unique

pytestmark = pytest.mark.realnode

STREAM = "node-a-node-b"
NS = "default"
KEYS_EACH = 2
CONTROLLER = "app.kubernetes.io/name=kube-qss-controller"


def burst(cluster: Cluster, count: int) -> list[str]:
    """``count`` KeyRequests (alice -> bob) created in one call, so they arrive together."""
    prefix = unique("burst")
    names = [f"{prefix}-{i:02d}" for i in range(count)]
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


def secret_keys(cluster: Cluster, name: str) -> dict[str, bytes] | None:
    secret = get(cluster, "secret", name, NS)
    if secret is None:
        return None
    return {k: base64.b64decode(v) for k, v in secret["data"].items() if k != "keys.json"}


def fault_lands_mid_burst(cluster: Cluster, names: list[str], fault: Any) -> dict[str, Any]:
    """Wait until the burst is being served, apply ``fault``; the phases at that moment, which
    must show some requests served and some not yet."""
    eventually(lambda: "Ready" in phases(cluster, names).values(), 180, "the burst to be served")
    fault()
    at_fault = phases(cluster, names)
    served = [n for n, p in at_fault.items() if p == "Ready"]
    assert 0 < len(served) < len(names), f"the fault did not land mid-burst: {at_fault}"
    return at_fault


async def audit(
    network: RealQssNetwork, names: list[str], before: dict[str, StreamCounts]
) -> dict[str, dict[str, Any]]:
    """Every request done; each served key delivered exactly once on both nodes; the stores
    account for every key and hold no reservation."""
    a, b = network.clusters["node-a"], network.clusters["node-b"]
    done: dict[str, dict[str, Any]] = eventually(
        lambda: all_done(a, names), 420, "every request of the burst done"
    )
    delivered: dict[str, bytes] = {}
    for name, status in done.items():
        if status["phase"] == "Failed":
            assert secret_keys(a, f"{name}-keys") is None, f"{name} failed but has a Secret"
            continue
        keys = secret_keys(a, status["secretName"])
        assert keys is not None
        assert len(keys) == KEYS_EACH
        assert not set(keys) & set(delivered), "a key was delivered twice"
        delivered.update(keys)
        uid = get(a, "keyrequest", name, NS)["metadata"]["uid"]  # type: ignore[index]
        slave_name = f"bob-{uid}"
        slave = eventually(partial(all_done, b, [slave_name]), 120, "the slave")[slave_name]
        assert slave["phase"] == "Ready", slave
        assert secret_keys(b, slave["secretName"]) == keys, "the two nodes hold different keys"
    assert len(set(delivered.values())) == len(delivered), "two keys share their bytes"

    async def settled() -> dict[str, StreamCounts] | None:
        now = {n: await counts(network.clusters[n]) for n in ("node-a", "node-b")}
        return None if any(c.reserved for c in now.values()) else now

    after = await eventually_async(settled, 60, "no reservation left")
    for node, c in after.items():
        assert c.available + c.reserved + c.consumed + c.dropped == c.added, (node, c)
        assert c.added >= before[node].added, f"keys added on {node} were lost"
        assert c.consumed - before[node].consumed == len(delivered), (
            f"on {node}, {c.consumed - before[node].consumed} keys were consumed for "
            f"{len(delivered)} delivered: keys were lost or consumed twice"
        )
    return done


def delete_without_waiting(cluster: Cluster, pod: dict[str, Any]) -> None:
    """Delete ``pod`` as a node failure would take it: a 1 s grace period, no waiting."""
    name = pod["metadata"]["name"]
    cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--grace-period=1", "--wait=false")


async def test_deleting_the_controller_pod_mid_burst_delivers_each_key_exactly_once(
    real_network: RealQssNetwork,
) -> None:
    a = real_network.clusters["node-a"]
    old = running_pod(a, NAMESPACE, CONTROLLER)
    before = {n: await counts(real_network.clusters[n]) for n in ("node-a", "node-b")}
    first = burst(a, 30)

    fault_lands_mid_burst(
        a,
        first,
        partial(delete_without_waiting, a, old),
    )
    second = burst(a, 10)  # arrives while the controller is down or starting

    new = running_pod(a, NAMESPACE, CONTROLLER)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    done = await audit(real_network, first + second, before)
    assert all(s["phase"] == "Ready" for s in done.values()), done


async def test_deleting_the_redis_pod_mid_burst_loses_no_key(
    real_network: RealQssNetwork,
) -> None:
    a = real_network.clusters["node-a"]
    old = running_pod(a, NAMESPACE, REDIS)
    before = {n: await counts(real_network.clusters[n]) for n in ("node-a", "node-b")}
    first = burst(a, 30)
    added_before_fault = (await counts(a)).added
    fault_lands_mid_burst(
        a,
        first,
        partial(delete_without_waiting, a, old),
    )
    second = burst(a, 10)

    new = running_pod(a, NAMESPACE, REDIS)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # Everything added before the fault is still there (append-only file, fsynced each write).
    assert (await counts(a)).added >= added_before_fault
    await audit(real_network, first + second, before)

    # The QKDM works with the new Redis: its status of the stream shows the store's counts as
    # the burst left them (a status from before the fault would not).
    async def qkdm_reports_the_new_store() -> bool:
        stream = json.loads(a.kubectl("get", "keystream", STREAM, "-o", "json").stdout)
        return bool(stream["status"].get("consumedKeys") == (await counts(a)).consumed)

    await eventually_async(qkdm_reports_the_new_store, 120, "the QKDM to report the new store")
