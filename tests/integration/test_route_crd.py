"""The Route CRD on a real API server: a path is a list of node IDs that fits the rest of the
entry (issue 9 found paths of anything accepted), refused with a message that says what is
wrong.

Objects are applied with a server-side dry run: the API server runs every schema and CEL check
but stores nothing, so no routing controller running on the cluster sees (and deletes) them.
Each object has a name of its own: the cluster is shared, and a Route the routing controller
wrote in an earlier test (for carol, say) would turn the dry run into a field-manager conflict.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from qss_api import API_VERSION
from tests.cluster.localcluster import Cluster


def _route(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "saeID": "carol",
        "destinationNodeID": "node-c",
        "nextHopNodeID": "node-b",
        "path": ["node-a", "node-b", "node-c"],
        "cost": 112.75,
        "length": 2,
    }
    base.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": {"name": f"route-crd-{uuid.uuid4().hex[:8]}"},
        "spec": {k: v for k, v in base.items() if v is not None},
    }


def _dry_run(cluster: Cluster, obj: dict[str, Any]) -> tuple[int, str]:
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=tests",
        "-f",
        "-",
        stdin=json.dumps(obj),
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"path": ["node-a"], "length": 0, "nextHopNodeID": "", "destinationNodeID": "node-a"},
        {"path": ["node-a"], "length": 0, "nextHopNodeID": None, "destinationNodeID": "node-a"},
    ],
    ids=["two hops", "local", "local without next hop"],
)
def test_a_route_as_the_controller_writes_it_is_accepted(
    cluster: Cluster, spec: dict[str, Any]
) -> None:
    code, output = _dry_run(cluster, _route(**spec))
    assert code == 0, output


INVALID = [
    ("path item not a node ID", {"path": ["node-a", "Node_B", "node-c"]}, "spec.path[1]"),
    ("path item with a space", {"path": ["node-a", "bad id!", "node-c"]}, "spec.path[1]"),
    ("empty path item", {"path": ["node-a", "", "node-c"]}, "spec.path[1]"),
    ("path item too long", {"path": ["node-a", "b" * 64, "node-c"]}, "spec.path[1]"),
    ("path not a list of strings", {"path": ["node-a", 7, "node-c"]}, "spec.path[1]"),
    ("empty path", {"path": []}, "spec.path"),
    ("no path", {"path": None}, "spec.path: Required value"),
    (
        "path longer than length",
        {"path": ["node-a", "node-b", "node-x", "node-c"]},
        "path lists length + 1 node IDs",
    ),
    ("path ends elsewhere", {"path": ["node-a", "node-b", "node-x"]}, "path ends at destination"),
    (
        "path not through the next hop",
        {"path": ["node-a", "node-x", "node-c"]},
        "the second node of path is nextHopNodeID",
    ),
    (
        "path through a node twice",
        {"path": ["node-a", "node-b", "node-a", "node-c"], "length": 3},
        "path visits every node once",
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_a_route_whose_path_does_not_fit_is_refused_saying_why(
    cluster: Cluster, case: str, spec: dict[str, Any], message: str
) -> None:
    code, output = _dry_run(cluster, _route(**spec))
    assert code != 0, f"{case}: the API server accepted it"
    assert message in output, f"{case}: expected {message!r} in:\n{output}"
