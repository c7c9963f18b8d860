"""Two clusters with real nodes, kube-qss applied on each with ``kubectl apply -k``: a KeyRequest
on node-a gives byte-identical Secrets on both, ETSI GS QKD 014 works through the Service with
hostname verification, and the controller runs each stream end's QKDM as a Deployment the
KeyStream owns."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.cluster.localcluster import REPO_ROOT, Cluster
from tests.cluster.realnetwork import NAMESPACE, RealQssNetwork
from tests.integration.helpers import eventually, get, keyrequest, phase_of, secret_keys
from tests.metrics import Page, scrape
from tests.realnode.helpers import apply_json, pod_manifest, run_to_completion, running_pod, unique

pytestmark = pytest.mark.realnode

KEY_API = "https://kube-qss.kube-qss-system.svc:9443"  # the Service name, as in-cluster SAEs use


def test_a_keyrequest_on_node_a_gives_byte_identical_secrets_on_both_nodes(
    real_network: RealQssNetwork,
) -> None:
    a, b = real_network.clusters["node-a"], real_network.clusters["node-b"]

    name = keyrequest(a, "default", sae="alice", slaveSaeID="bob", number=5, size=512)

    status = eventually(lambda: phase_of(a, name, "default"), 120, "the master request")
    assert status["phase"] == "Ready", status
    uid = get(a, "keyrequest", name, "default")["metadata"]["uid"]  # type: ignore[index]
    slave = eventually(lambda: phase_of(b, f"bob-{uid}", "default"), 120, "the slave request")
    assert slave["phase"] == "Ready", slave
    keys_a = secret_keys(a, status["secretName"], "default")
    keys_b = secret_keys(b, slave["secretName"], "default")
    assert len(keys_a) == 5
    assert keys_a == keys_b
    assert all(len(key) == 64 for key in keys_a.values())


def _client_pod(cluster: Cluster, sae: str, args: list[str]) -> dict[str, Any]:
    """A pod of SAE ``sae`` running the tests' ETSI 014 client (from the standard's text) with
    the SAE's credentials; it prints key IDs and SHA-256 digests of the keys, never a key."""
    runner = """
import asyncio, hashlib, json, sys
sys.path.insert(0, "/client")
from etsi014_client import Etsi014Client, key_map
url, op, peer, *rest = sys.argv[1:]
read = lambda n: open(f"/creds/{n}", "rb").read()
async def main():
    async with Etsi014Client(url, cert_pem=read("tls.crt"), key_pem=read("tls.key"),
                             ca_pem=read("ca.crt")) as sae:
        if op == "enc":
            container = await sae.enc_keys(peer, number=int(rest[0]), size=256)
        else:
            container = await sae.dec_keys(peer, rest)
    keys = key_map(container)
    print(json.dumps({i: hashlib.sha256(k).hexdigest() for i, k in keys.items()}))
asyncio.run(main())
"""
    files = {
        "etsi014_client.py": (REPO_ROOT / "tests" / "etsi014_client.py").read_text(),
        "run.py": runner,
    }
    apply_json(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "etsi014-client", "namespace": "default"},
            "data": files,
        },
    )
    return pod_manifest(
        unique(f"{sae}-014"),
        "default",
        ["python3", "/client/run.py", KEY_API, *args],
        volumeMounts=[
            {"name": "client", "mountPath": "/client", "readOnly": True},
            {"name": "creds", "mountPath": "/creds", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        pod_spec={
            "volumes": [
                {"name": "client", "configMap": {"name": "etsi014-client"}},
                {"name": "creds", "secret": {"secretName": f"{sae}-credentials"}},
                {"name": "tmp", "emptyDir": {"medium": "Memory"}},
            ]
        },
    )


def test_etsi014_enc_keys_and_dec_keys_through_the_service_with_hostname_verification(
    real_network: RealQssNetwork,
) -> None:
    a, b = real_network.clusters["node-a"], real_network.clusters["node-b"]

    phase, out = run_to_completion(a, _client_pod(a, "alice", ["enc", "bob", "3"]))
    assert phase == "Succeeded", out
    at_alice = json.loads(out.splitlines()[-1])
    phase, out = run_to_completion(b, _client_pod(b, "bob", ["dec", "alice", *at_alice]))
    assert phase == "Succeeded", out
    at_bob = json.loads(out.splitlines()[-1])

    assert len(at_alice) == 3
    assert at_bob == at_alice


def test_hostname_verification_is_on_a_name_the_certificate_lacks_is_refused(
    real_network: RealQssNetwork,
) -> None:
    a = real_network.clusters["node-a"]
    service = json.loads(
        a.kubectl("get", "service", "kube-qss", "-n", NAMESPACE, "-o", "json").stdout
    )
    # The same server through the same Service, by its address: not a name in the certificate.
    by_address = KEY_API.replace("kube-qss.kube-qss-system.svc", service["spec"]["clusterIP"])
    manifest = _client_pod(a, "alice", ["enc", "bob", "1"])
    manifest["spec"]["containers"][0]["command"][2] = by_address

    phase, out = run_to_completion(a, manifest)

    assert phase == "Failed"
    assert "CERTIFICATE_VERIFY_FAILED" in out, out
    assert "IP address mismatch" in out, out


def _qkdm_deployments(cluster: Cluster) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl(
        "get", "deploy", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=kube-qss-qkdm", "-o", "json"
    ).stdout
    return {d["metadata"]["name"]: d for d in json.loads(out)["items"]}


def test_each_stream_ends_qkdm_is_a_deployment_the_keystream_owns(
    real_network: RealQssNetwork,
) -> None:
    for node in ("node-a", "node-b"):
        cluster = real_network.clusters[node]
        stream = json.loads(
            cluster.kubectl("get", "keystream", "node-a-node-b", "-o", "json").stdout
        )
        deployment = _qkdm_deployments(cluster)["kube-qss-qkdm-node-a-node-b"]
        (owner,) = deployment["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "KeyStream",
            "node-a-node-b",
            stream["metadata"]["uid"],
        )
        assert owner["controller"] is True
        assert deployment["status"].get("availableReplicas") == 1


def test_a_new_keystream_gets_its_qkdm_and_deleting_it_removes_the_qkdm(
    real_network: RealQssNetwork,
) -> None:
    cluster = real_network.clusters["node-a"]
    name = unique("owned")
    deployment = f"kube-qss-qkdm-{name}"
    apply_json(
        cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "KeyStream",
            "metadata": {"name": name},
            # A link with no device here: the QKDM waits for one and disturbs nothing.
            "spec": {"link": "nowhere"},
        },
    )
    try:
        created = eventually(lambda: _qkdm_deployments(cluster).get(deployment), 180, "the QKDM")
        (container,) = created["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["qss.dev/qkd-nowhere"] == "1"

        # Deleted by hand, it comes back (the controller reconciles every 10 s).
        cluster.kubectl("delete", "deploy", deployment, "-n", NAMESPACE)
        again = eventually(lambda: _qkdm_deployments(cluster).get(deployment), 180, "it back")
        assert again["metadata"]["uid"] != created["metadata"]["uid"]
    finally:
        cluster.kubectl("delete", "keystream", name, "--wait=false")

    eventually(lambda: deployment not in _qkdm_deployments(cluster), 120, "the QKDM to go")


def test_controller_and_qkdm_pods_serve_metrics_and_healthz_on_their_health_ports(
    real_network: RealQssNetwork,
) -> None:
    """The manifests' health ports serve /healthz (the probes) and /metrics (the monitors)."""
    a = real_network.clusters["node-a"]
    controller = running_pod(a, NAMESPACE, "app.kubernetes.io/name=kube-qss-controller")
    qkdm = running_pod(a, NAMESPACE, "qss.dev/keystream=node-a-node-b")
    name = keyrequest(a, "default", sae="alice", slaveSaeID="bob", number=3, size=256)
    status = eventually(lambda: phase_of(a, name, "default"), 120, "the master request")
    assert status["phase"] == "Ready", status
    for pod, port in ((controller, 8080), (qkdm, 8081)):
        base = f"http://{pod['status']['podIP']}:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
            assert answer.status == 200

    def counted() -> Page | None:
        page = scrape(f"http://{controller['status']['podIP']}:8080/metrics")
        served = page.value(
            "qss_keys_served_total",
            interface="keyrequest",
            operation="get_key",
            master_sae="alice",
            slave_sae="bob",
        )
        return page if served >= 3 else None

    # The controller counts a request once its Ready status is written: the count may trail it.
    page = eventually(counted, 60, "the served keys counted")
    assert page.value("qss_link_state", link="node-b", state="Up") == 1
    stream = scrape(f"http://{qkdm['status']['podIP']}:8081/metrics")
    assert stream.value("qss_stream_ingested_bits_total", stream="node-a-node-b", node="node-a") > 0
    keys = secret_keys(a, status["secretName"], "default")
    for key_id in keys:
        assert key_id not in page.text
        assert key_id not in stream.text
