"""The controller's QKDLink and KeyStream reconcilers on a real API server.

The QKDM's share of a KeyStream's status is written here by the test under the QKDM's field
manager, exactly as the QKDM writes it, so that the controller's reaction is checked alone.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.localcluster import Cluster
from tests.cluster.network import QssNetwork


@pytest.fixture
def controller(qss_network: QssNetwork) -> subprocess.Popen[bytes]:
    """node-a's controller, as the local QSS network runs it."""
    proc = qss_network.nodes["node-a"].controller
    assert proc is not None
    return proc


@pytest.fixture
def names(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """A QKDLink's and a KeyStream's names of the test's own, both deleted after it: the cluster
    is node-a's of the shared QSS network, and a stream left there towards node-b (said Up with
    keys by the test, with no QKDM and no keys in the store) would be chosen for other modules'
    requests to node-b."""
    link, stream = f"l-{uuid.uuid4().hex[:6]}", f"s-{uuid.uuid4().hex[:6]}"
    yield link, stream
    cluster.kubectl("delete", "keystream", stream, "--ignore-not-found", "--wait=false")
    cluster.kubectl("delete", "qkdlink", link, "--ignore-not-found", "--wait=false")


def _apply(
    cluster: Cluster, obj: dict[str, Any], *, manager: str = "tests", subresource: str | None = None
) -> None:
    args = ["apply", "--server-side", "--force-conflicts", f"--field-manager={manager}", "-f", "-"]
    if subresource:
        args.append(f"--subresource={subresource}")
    cluster.kubectl(*args, stdin=json.dumps(obj))


def _get(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", kind, name, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"condition not met within {timeout}s; last value {last!r}")


def _link(name: str, capacity: int = 1000) -> dict[str, Any]:
    return {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "QKDLink",
        "metadata": {"name": name},
        "spec": {
            "peerNodeID": "node-b",
            "peerEndpoint": "https://127.0.0.1:9443",
            "keyBufferCapacity": capacity,
        },
    }


def _stream(name: str, link: str) -> dict[str, Any]:
    return {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "KeyStream",
        "metadata": {"name": name},
        "spec": {"link": link},
    }


def _qkdm_reports(cluster: Cluster, stream: str, *, state: str, available: int) -> None:
    _apply(
        cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "KeyStream",
            "metadata": {"name": stream},
            "status": {"state": state, "availableKeys": available},
        },
        manager="qss-qkdm",
        subresource="status",
    )


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


def test_keystream_without_its_link_gets_LinkNotFound_and_recovers_when_link_appears(
    cluster: Cluster, controller: subprocess.Popen[bytes], names: tuple[str, str]
) -> None:
    link, stream = names
    _apply(cluster, _stream(stream, link))
    cond = _eventually(lambda: _condition(_get(cluster, "keystream", stream), "LinkFound"))
    assert cond["status"] == "False"
    assert cond["reason"] == "LinkNotFound"
    assert f"QKDLink {link!r} does not exist" in cond["message"]
    _apply(cluster, _link(link, capacity=500))

    def found() -> dict[str, Any] | None:
        obj = _get(cluster, "keystream", stream)
        c = _condition(obj, "LinkFound")
        return obj if c and c["status"] == "True" else None

    obj = _eventually(found)
    assert obj["status"]["peerNodeID"] == "node-b"
    assert obj["status"]["capacity"] == 500
    assert controller.poll() is None


def test_link_state_and_cost_follow_its_stream_without_clobbering_the_qkdm_status(
    cluster: Cluster, controller: subprocess.Popen[bytes], names: tuple[str, str]
) -> None:
    link, stream = names
    _apply(cluster, _link(link, capacity=1000))
    _apply(cluster, _stream(stream, link))
    _qkdm_reports(cluster, stream, state="Up", available=1000)

    def up() -> dict[str, Any] | None:
        st = _get(cluster, "qkdlink", link).get("status", {})
        return st if st.get("state") == "Up" and st.get("availableKeys") == 1000 else None

    status = _eventually(up)
    assert 1 <= status["cost"] <= 100 - 50 + 25  # full buffer: about c0 - w1
    _qkdm_reports(cluster, stream, state="Down", available=1000)
    down = _eventually(lambda: _get(cluster, "qkdlink", link)["status"]["state"] == "Down" or None)
    assert down
    ready = _condition(_get(cluster, "qkdlink", link), "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert stream in ready["message"]
    # The controller's LinkFound and the QKDM's own fields live side by side.
    obj = _get(cluster, "keystream", stream)
    assert obj["status"]["state"] == "Down"
    assert _condition(obj, "LinkFound") is not None

    def reasons() -> set[str]:
        events = cluster.kubectl(
            "get", "events", "-A", "--field-selector", f"involvedObject.name={link}", "-o", "json"
        ).stdout
        return {e["reason"] for e in json.loads(events)["items"]}

    # The controller records a change's Event after writing the status that shows it, and its
    # recorder posts Events from a background task: the Event may trail the status.
    _eventually(lambda: {"LinkUp", "LinkDown"} <= reasons())


def test_link_cost_rises_as_keys_drain(
    cluster: Cluster, controller: subprocess.Popen[bytes], names: tuple[str, str]
) -> None:
    link, stream = names
    _apply(cluster, _link(link, capacity=1000))
    _apply(cluster, _stream(stream, link))
    _qkdm_reports(cluster, stream, state="Up", available=800)
    full = _eventually(
        lambda: _get(cluster, "qkdlink", link).get("status", {}).get("availableKeys") == 800 or None
    )
    assert full
    cost_full = _get(cluster, "qkdlink", link)["status"]["cost"]
    _qkdm_reports(cluster, stream, state="Up", available=100)
    _eventually(lambda: _get(cluster, "qkdlink", link)["status"]["availableKeys"] == 100 or None)
    cost_drained = _get(cluster, "qkdlink", link)["status"]["cost"]
    assert cost_drained > cost_full
