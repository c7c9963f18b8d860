"""The five CRDs on a real kube-apiserver: samples round-trip, invalid objects are rejected with
the message a user needs, and the kubectl views (columns, explain, category) work."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from qss_api import API_VERSION, RESOURCES
from tests.cluster.localcluster import REPO_ROOT, Cluster

SAMPLES = sorted((REPO_ROOT / "kustomize" / "samples").glob("qss.dev_v1alpha1_*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _is_subset(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


def _apply(cluster: Cluster, obj: dict[str, Any], *, check: bool = False) -> tuple[int, str]:
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=tests",
        "-f",
        "-",
        stdin=json.dumps(obj),
        check=check,
    )
    return result.returncode, result.stdout + result.stderr


def test_every_kind_has_a_sample() -> None:
    kinds = {_load(p)["kind"] for p in SAMPLES}
    assert kinds == {kind for kind, _namespaced in RESOURCES.values()}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_sample_applies_server_side_and_reads_back_unchanged(
    cluster: Cluster, sample: Path
) -> None:
    obj = _load(sample)
    code, output = _apply(cluster, obj)
    assert code == 0, output
    namespace = obj["metadata"].get("namespace")
    args = ["get", obj["kind"].lower() + "." + "qss.dev", obj["metadata"]["name"], "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    stored = json.loads(cluster.kubectl(*args).stdout)
    assert stored["spec"] == obj["spec"], "the API server changed the spec of a complete sample"
    assert _is_subset(obj["metadata"]["labels"], stored["metadata"]["labels"])


def _bad(kind: str, defaults: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A ``kind`` object with a fresh name: ``defaults`` overridden by ``spec``, whose None
    values leave that field out."""
    namespaced = {k: n for k, n in RESOURCES.values()}[kind]
    metadata = {"name": f"bad-{uuid.uuid4().hex[:8]}"}
    if namespaced:
        metadata["namespace"] = "default"
    fields = {**defaults, **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": {k: v for k, v in fields.items() if v is not None},
    }


def _qkdlink(**spec: Any) -> dict[str, Any]:
    defaults = {"peerNodeID": "node-b", "peerEndpoint": "https://127.0.0.1:9443"}
    return _bad("QKDLink", defaults, spec)


def _keystream(**spec: Any) -> dict[str, Any]:
    return _bad("KeyStream", {"link": "node-b"}, spec)


def _sae(**spec: Any) -> dict[str, Any]:
    return _bad("Sae", {"saeID": "alice"}, spec)


def _keyrequest(**spec: Any) -> dict[str, Any]:
    defaults = {"sae": "alice", "slaveSaeID": "bob", "number": 1, "size": 256}
    return _bad("KeyRequest", defaults, spec)


def _route(**spec: Any) -> dict[str, Any]:
    defaults = {
        "saeID": "bob",
        "destinationNodeID": "node-b",
        "nextHopNodeID": "node-b",
        "path": ["node-a", "node-b"],
        "cost": 50,
        "length": 1,
    }
    return _bad("Route", defaults, spec)


SOME_ID = "0b0e7c7e-5d0c-4a4e-9a8e-2f2b7c1d9e01"

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("qkdlink without peer", _qkdlink(peerNodeID=None), "spec.peerNodeID: Required value"),
    ("qkdlink peer not a DNS label", _qkdlink(peerNodeID="Node_B"), "spec.peerNodeID"),
    ("qkdlink plain-http endpoint", _qkdlink(peerEndpoint="http://b:80"), "spec.peerEndpoint"),
    # Regression (issue 9): the pattern allowed any five digits, and the host part took colons.
    (
        "qkdlink endpoint port above 65535",
        _qkdlink(peerEndpoint="https://node-b:99999"),
        "peerEndpoint's port must be from 1 to 65535",
    ),
    (
        "qkdlink endpoint port 0",
        _qkdlink(peerEndpoint="https://node-b:0"),
        "peerEndpoint's port must be from 1 to 65535",
    ),
    (
        "qkdlink endpoint with two ports",
        _qkdlink(peerEndpoint="https://node-b:8443:99999"),
        "spec.peerEndpoint",
    ),
    (
        "qkdlink zero capacity",
        _qkdlink(keyBufferCapacity=0),
        "spec.keyBufferCapacity: Invalid value: 0",
    ),
    (
        "qkdlink weights outweigh c0",
        _qkdlink(cost={"c0": 50, "w1": 40, "w2": 20}),
        "cost.c0 must exceed cost.w1 + cost.w2",
    ),
    (
        "qkdlink link to itself",
        _qkdlink(localNodeID="node-b"),
        "peerNodeID must differ from localNodeID",
    ),
    (
        "qkdlink unknown field",
        _qkdlink(colour="blue"),
        ".spec.colour: field not declared in schema",
    ),
    (
        "keystream chunk not a multiple of 8",
        _keystream(qos={"keyChunkSize": 100}),
        "qos.keyChunkSize must be a multiple of 8 bits",
    ),
    (
        "keystream min above max",
        _keystream(qos={"minBps": 10, "maxBps": 5}),
        "qos.minBps must not exceed qos.maxBps",
    ),
    ("keystream malformed ksid", _keystream(ksid="not-a-uuid"), "spec.ksid"),
    ("keystream without link", _keystream(link=None), "spec.link"),
    ("sae malformed id", _sae(saeID="-alice!"), "spec.saeID"),
    ("sae too-long id", _sae(saeID="a" * 65), "spec.saeID: Too long"),
    (
        "sae manual without secret",
        _sae(registration="Manual"),
        "credentialsSecretName is required with registration Manual",
    ),
    ("keyrequest zero keys", _keyrequest(number=0), "spec.number: Invalid value: 0"),
    ("keyrequest negative size", _keyrequest(size=-8), "spec.size: Invalid value: -8"),
    (
        "keyrequest size not a multiple of 8",
        _keyrequest(size=100),
        "size must be a multiple of 8 bits",
    ),
    ("keyrequest size too large", _keyrequest(size=65536), "spec.size: Invalid value: 65536"),
    (
        "keyrequest both keyIDs and number",
        _keyrequest(keyIDs=[SOME_ID], masterSaeID="bob"),
        "either a master request",
    ),
    (
        "keyrequest master without size",
        _keyrequest(size=None),
        "a master request needs slaveSaeID, number and size",
    ),
    (
        "keyrequest slave without master SAE",
        _keyrequest(slaveSaeID=None, number=None, size=None, keyIDs=[SOME_ID]),
        "masterSaeID and keyIDs go together",
    ),
    (
        "keyrequest malformed key ID",
        _keyrequest(slaveSaeID=None, number=None, size=None, keyIDs=["nope"], masterSaeID="bob"),
        "spec.keyIDs[0]",
    ),
    (
        "keyrequest too many key IDs",
        _keyrequest(
            slaveSaeID=None,
            number=None,
            size=None,
            masterSaeID="bob",
            keyIDs=[str(uuid.UUID(int=i)) for i in range(1001)],
        ),
        "spec.keyIDs: Too many: 1001",
    ),
    (
        "keyrequest keys larger than a Secret",
        _keyrequest(number=1000, size=8192),
        "number x size must be at most 4194304 bits",
    ),
    (
        "route next hop for a local SAE",
        _route(length=0),
        "nextHopNodeID is set exactly when the destination is remote",
    ),
    ("route negative cost", _route(cost=-1), "spec.cost: Invalid value: -1"),
]


@pytest.mark.parametrize(("case", "obj", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_object_is_rejected_with_a_clear_message(
    cluster: Cluster, case: str, obj: dict[str, Any], message: str
) -> None:
    code, output = _apply(cluster, obj)
    assert code != 0, f"{case}: the API server accepted an invalid object"
    assert message in output, f"{case}: expected {message!r} in:\n{output}"
    kind = obj["kind"].lower() + ".qss.dev"
    args = ["get", kind, obj["metadata"]["name"], "--ignore-not-found", "-o", "name"]
    if "namespace" in obj["metadata"]:
        args += ["-n", obj["metadata"]["namespace"]]
    assert cluster.kubectl(*args).stdout == "", f"{case}: a rejected object was stored"


def test_keyrequest_spec_is_immutable(cluster: Cluster) -> None:
    obj = _keyrequest()
    code, output = _apply(cluster, obj)
    assert code == 0, output
    obj["spec"]["number"] = 2
    code, output = _apply(cluster, obj)
    assert code != 0
    assert "a KeyRequest's spec is immutable" in output


def test_get_keystreams_shows_the_monitoring_columns(cluster: Cluster) -> None:
    _apply(
        cluster, _load(REPO_ROOT / "kustomize/samples/qss.dev_v1alpha1_keystream.yaml"), check=True
    )
    header = cluster.kubectl("get", "keystreams").stdout.splitlines()[0].split()
    for column in ("NAME", "LINK", "PEER", "AVAILABLE", "CAPACITY", "FILL", "RATE", "STATE", "AGE"):
        assert column in header


def test_explain_keyrequest_spec_prints_field_descriptions(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "keyrequests.spec").stdout
    assert "Immutable once created" in " ".join(out.split())
    for field in ("slaveSaeID", "number", "size", "keyIDs", "masterSaeID", "timeoutSeconds"):
        assert field in out
    size = cluster.kubectl("explain", "keyrequests.spec.size").stdout
    assert "a multiple of 8" in size


def test_get_qss_lists_all_five_kinds(cluster: Cluster) -> None:
    resources = cluster.kubectl("api-resources", "--categories=qss", "-o", "name").stdout.split()
    assert sorted(resources) == sorted(f"{plural}.qss.dev" for plural in RESOURCES)
    for sample in SAMPLES:
        _apply(cluster, _load(sample), check=True)
    listed = cluster.kubectl("get", "qss", "-A", "-o", "name").stdout
    for plural, (kind, _namespaced) in RESOURCES.items():
        assert f"{kind.lower()}.qss.dev/" in listed, f"{plural} missing from `kubectl get qss`"
