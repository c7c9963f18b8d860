"""The Sae reconciler on a real API server (with kube-controller-manager's garbage collector).

A test-only operator process (``tests/integration/sae_operator.py``) runs just the Sae handlers
against a logical cluster of its own, so no other controller of the test session reconciles
these Saes. It serves the namespaces ``sae-op-*``; the tests that drive ``reconcile`` directly
(a create race, renewal) use ``sae-direct-*`` namespaces it does not watch.

Every test that issues credentials checks that the private key appears nowhere: not in the
Sae's status, not in the namespace's events, not in the operator's log (run at DEBUG).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from controllers import pki
from controllers.kube import connect
from controllers.saes import secrets
from controllers.saes.credentials import CA_CRT, TLS_CRT, TLS_KEY, issued_data
from controllers.saes.reconcile import SaeObject, reconcile
from controllers.saes.registry import LocalSaes
from tests.cluster.localcluster import REPO_ROOT, Cluster, free_port
from tests.fixtures.cluster import LocalNetwork

NODE_ID = "node-s"
SYSTEM_NS = "sae-op-system"  # the node's own namespace (CA and node certificate)


# --- the operator --------------------------------------------------------------------------


@dataclass
class Operator:
    cluster: Cluster
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        health = f"http://127.0.0.1:{free_port()}/healthz"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.sae_operator",
                    "--kubeconfig",
                    str(self.cluster.kubeconfig),
                    "--node-id",
                    NODE_ID,
                    "--namespace",
                    SYSTEM_NS,
                    "--watch",
                    "sae-op-*",
                    "--health",
                    health,
                ],
                cwd=REPO_ROOT,
                # kopf logs in with $KUBECONFIG; our own client is told by --kubeconfig.
                env=dict(
                    os.environ, PYTHONPATH=str(REPO_ROOT), KUBECONFIG=str(self.cluster.kubeconfig)
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"operator exited:\n{self.output()}"
            try:
                with urllib.request.urlopen(health, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(f"operator not healthy within 60s:\n{self.output()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ca_pem(self) -> bytes:
        return base64.b64decode(
            self.cluster.kubectl(
                "get", "secret", "-n", SYSTEM_NS, "qss-node-ca", "-o", "jsonpath={.data.ca\\.crt}"
            ).stdout
        )


@pytest.fixture(scope="module")
def sae_cluster(local_network: LocalNetwork) -> Cluster:
    """A logical cluster of these tests' own: no other controller reconciles Saes in it."""
    cluster = local_network.cluster("sae-test")
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    return cluster


@pytest.fixture(scope="module")
def operator(sae_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(sae_cluster, tmp_path_factory.mktemp("sae-operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(sae_cluster: Cluster) -> Iterator[str]:
    yield from _namespace(sae_cluster, "sae-op")


@pytest.fixture
def other_namespace(sae_cluster: Cluster) -> Iterator[str]:
    yield from _namespace(sae_cluster, "sae-op")


def _namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- helpers -------------------------------------------------------------------------------


def _eventually(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s; last value {last!r}")


def _apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=tests", "-f", "-", stdin=json.dumps(obj)
    )


def _sae(namespace: str, name: str, sae_id: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "Sae",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"saeID": sae_id, **spec},
    }


def _get(cluster: Cluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def _ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Sae's Ready condition, once the controller has written one."""
    sae = _get(cluster, "sae", namespace, name)
    for cond in ((sae or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == "Ready":
            return dict(cond)
    return None


def _ready_with(cluster: Cluster, namespace: str, name: str, status: str, reason: str) -> Any:
    def check() -> Any:
        cond = _ready(cluster, namespace, name)
        return cond if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    return _eventually(check)


def _secret_data(secret: dict[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def _put_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, bytes]) -> None:
    _apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        },
    )


def _key_fragments(key_pem: bytes) -> list[str]:
    """Pieces of a private key that would betray it in any text: its PEM body lines, and a
    stretch of the base64 of the whole PEM (as a Secret holds it) past the part that every
    P-256 PKCS#8 key shares."""
    lines = [ln for ln in key_pem.decode().splitlines() if ln and not ln.startswith("-----")]
    return [*lines, base64.b64encode(key_pem).decode()[100:160]]


def _assert_key_nowhere(op: Operator, namespace: str, name: str, key_pem: bytes) -> None:
    status = json.dumps((_get(op.cluster, "sae", namespace, name) or {}).get("status"))
    events = op.cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    log = op.output()
    for where, text in (("status", status), ("events", events), ("operator log", log)):
        assert "PRIVATE KEY" not in text, where
        for fragment in _key_fragments(key_pem):
            assert fragment not in text, f"private key material in the {where}"


# --- through the operator ------------------------------------------------------------------


def test_automatic_sae_gets_a_client_certificate_from_the_node_ca(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    _apply(cluster, _sae(namespace, "alice", "sae-alice"))
    _ready_with(cluster, namespace, "alice", "True", "Registered")

    sae = _get(cluster, "sae", namespace, "alice")
    secret = _get(cluster, "secret", namespace, "alice-credentials")
    assert sae is not None
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    data = _secret_data(secret)
    assert set(data) == {TLS_CRT, TLS_KEY, CA_CRT}
    cert = pki.load_certificate(data[TLS_CRT])
    assert pki.sae_id_of(cert) == "sae-alice"
    node_ca = operator.ca_pem()
    assert data[CA_CRT] == node_ca
    pki.verify_chain(cert, pki.load_certificates(node_ca))
    assert pki.key_matches(cert, data[TLS_KEY])

    [owner] = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "Sae"
    assert owner["name"] == "alice"
    assert owner["uid"] == sae["metadata"]["uid"]
    assert owner["controller"] is True
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/name": "kube-qss",
        "app.kubernetes.io/part-of": "kube-qss",
    }

    status = sae["status"]
    assert status["nodeID"] == NODE_ID
    assert status["credentialsSecretName"] == "alice-credentials"
    assert status["certificateSerial"] == f"{cert.serial_number:x}"
    assert status["certificateNotAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["observedGeneration"] == sae["metadata"]["generation"]
    assert "qss.dev/controller" in sae["metadata"]["finalizers"]

    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert any(e["reason"] == "CertificateIssued" for e in events["items"])
    _assert_key_nowhere(operator, namespace, "alice", data[TLS_KEY])


def _refuse_sae_status_writes(cluster: Cluster, label: str) -> Callable[[], None]:
    """A ValidatingAdmissionPolicy that refuses every Sae status write in the namespaces
    labelled ``qss-test/refuse-sae-status=<label>``, as an API server under pressure refuses a
    write; returns the call that lifts it."""
    name = f"refuse-sae-status-{label}"
    _apply(
        cluster,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["qss.dev"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["saes/status"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "refused by the test"}],
            },
        },
    )
    _apply(
        cluster,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"qss-test/refuse-sae-status": label}}
                },
            },
        },
    )

    def lift() -> None:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            cluster.kubectl("delete", kind, name, "--ignore-not-found")

    return lift


def test_a_refused_status_write_is_tried_again_in_seconds_and_the_sae_registers(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    label = namespace.rsplit("-", 1)[1]
    # A probe in a namespace the operator does not watch: once its status write is refused,
    # the policy is in force.
    probe = f"sae-probe-{label}"
    cluster.kubectl("create", "namespace", probe)
    lift = _refuse_sae_status_writes(cluster, label)
    try:
        for ns in (probe, namespace):
            cluster.kubectl("label", "namespace", ns, f"qss-test/refuse-sae-status={label}")
        _apply(cluster, _sae(probe, "probe", f"sae-probe-{label}"))

        def refused() -> bool:
            result = cluster.kubectl(
                "patch", "sae", "probe", "-n", probe, "--subresource=status", "--type=merge",
                "-p", '{"status": {"nodeID": "x"}}', check=False,
            )  # fmt: skip
            return "refused by the test" in result.stderr

        _eventually(refused)
        start = len(operator.output())
        _apply(cluster, _sae(namespace, "alice", "sae-alice"))

        def tries() -> int:
            text = operator.output()[start:]
            return text.count("failed temporarily: cannot write the Sae's status")

        # Tried again 5 s later each time (kopf's own retry would come only after a minute).
        _eventually(lambda: tries() >= 2, timeout=45)
        assert _ready(cluster, namespace, "alice") is None  # no status got through
    finally:
        lift()
        cluster.kubectl("delete", "namespace", probe, "--wait=false", check=False)
    _ready_with(cluster, namespace, "alice", "True", "Registered")

    # The credentials were issued once, in the first try, and told once.
    def issued() -> int:
        out = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        return [e["reason"] for e in json.loads(out)["items"]].count("CertificateIssued")

    _eventually(lambda: issued() >= 1)
    assert issued() == 1


def test_deleting_the_sae_unregisters_it_and_deletes_its_secret(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    _apply(cluster, _sae(namespace, "bob", "sae-bob"))
    _ready_with(cluster, namespace, "bob", "True", "Registered")
    key = _secret_data(_get(cluster, "secret", namespace, "bob-credentials") or {})[TLS_KEY]

    cluster.kubectl("delete", "sae", "bob", "-n", namespace, "--wait=false")
    _eventually(lambda: _get(cluster, "sae", namespace, "bob") is None)
    assert "SAE sae-bob unregistered" in operator.output()
    # The garbage collector picks up a newly installed CRD's objects on its next discovery
    # (every 30 s), so a cluster whose CRDs are minutes old may take that long on top.
    _eventually(lambda: _get(cluster, "secret", namespace, "bob-credentials") is None, 90)
    _assert_key_nowhere(operator, namespace, "bob", key)


def test_a_restarted_controller_reuses_the_credentials_and_registers_again(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    _apply(cluster, _sae(namespace, "carol", "sae-carol"))
    _ready_with(cluster, namespace, "carol", "True", "Registered")
    before = _get(cluster, "secret", namespace, "carol-credentials")
    assert before is not None

    operator.stop()
    mark = len(operator.output())
    operator.start()
    _eventually(lambda: "SAE sae-carol registered" in operator.output()[mark:])

    after = _get(cluster, "secret", namespace, "carol-credentials")
    assert after is not None
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    serial = f"{pki.load_certificate(_secret_data(after)[TLS_CRT]).serial_number:x}"
    sae = _get(cluster, "sae", namespace, "carol") or {}
    assert sae["status"]["certificateSerial"] == serial


def test_manual_sae_waits_for_its_secret_then_registers_its_certificate(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    _apply(
        cluster,
        _sae(namespace, "dave", "sae-dave", registration="Manual", credentialsSecretName="mine"),
    )
    cond = _ready_with(cluster, namespace, "dave", "False", "CredentialsSecretNotFound")
    assert f"Secret {namespace}/mine" in cond["message"]

    team_ca = pki.create_ca("team CA")
    issued = pki.issue_sae_certificate(team_ca, "sae-dave")
    _put_secret(
        cluster,
        namespace,
        "mine",
        {TLS_CRT: issued.cert_pem, TLS_KEY: issued.key_pem, CA_CRT: team_ca.cert_pem},
    )
    _ready_with(cluster, namespace, "dave", "True", "Registered")
    status = (_get(cluster, "sae", namespace, "dave") or {})["status"]
    assert status["credentialsSecretName"] == "mine"
    assert status["certificateSerial"] == f"{issued.certificate.serial_number:x}"
    assert _get(cluster, "secret", namespace, "dave-credentials") is None
    _assert_key_nowhere(operator, namespace, "dave", issued.key_pem)

    # Deleting a Manual Sae leaves the user's Secret alone.
    cluster.kubectl("delete", "sae", "dave", "-n", namespace)
    assert _get(cluster, "secret", namespace, "mine") is not None


def test_manual_secret_with_another_saes_certificate_is_invalid(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    team_ca = pki.create_ca("team CA")
    other = pki.issue_sae_certificate(team_ca, "sae-someone-else")
    _put_secret(cluster, namespace, "theirs", {TLS_CRT: other.cert_pem, CA_CRT: team_ca.cert_pem})
    _apply(
        cluster,
        _sae(namespace, "erin", "sae-erin", registration="Manual", credentialsSecretName="theirs"),
    )
    cond = _ready_with(cluster, namespace, "erin", "False", "InvalidCredentials")
    assert "'sae-someone-else', not of 'sae-erin'" in cond["message"]
    status = (_get(cluster, "sae", namespace, "erin") or {})["status"]
    assert "certificateSerial" not in status


def test_same_sae_id_in_another_namespace_is_a_duplicate(
    operator: Operator, namespace: str, other_namespace: str
) -> None:
    cluster = operator.cluster
    _apply(cluster, _sae(namespace, "first", "sae-shared"))
    _ready_with(cluster, namespace, "first", "True", "Registered")
    # creationTimestamp has whole seconds and the older Sae keeps the ID (ties go by
    # namespace): make sure "first" is the older one.
    time.sleep(1.1)
    _apply(cluster, _sae(other_namespace, "second", "sae-shared"))
    cond = _ready_with(cluster, other_namespace, "second", "False", "DuplicateSaeID")
    assert f"by Sae {namespace}/first" in cond["message"]
    # No credentials are issued for an ID the Sae cannot have.
    assert _get(cluster, "secret", other_namespace, "second-credentials") is None
    assert _ready(cluster, namespace, "first") == _ready_with(
        cluster, namespace, "first", "True", "Registered"
    )


def test_a_secret_the_sae_does_not_control_is_never_overwritten(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    _put_secret(cluster, namespace, "frank-credentials", {"note": b"someone else's"})
    _apply(cluster, _sae(namespace, "frank", "sae-frank"))
    cond = _ready_with(cluster, namespace, "frank", "False", "CredentialsSecretConflict")
    assert "not controlled by this Sae" in cond["message"]
    secret = _get(cluster, "secret", namespace, "frank-credentials") or {}
    assert _secret_data(secret) == {"note": b"someone else's"}


# --- reconcile driven directly (namespaces the operator does not watch) ---------------------


@pytest.fixture
async def direct(sae_cluster: Cluster) -> AsyncIterator[tuple[client.ApiClient, str]]:
    name = f"sae-direct-{uuid.uuid4().hex[:8]}"
    api = await connect(str(sae_cluster.kubeconfig))
    async with api:
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        yield api, name
        await core.delete_namespace(name)


async def _create_sae(api: client.ApiClient, namespace: str, name: str, sae_id: str) -> SaeObject:
    body = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "qss.dev", "v1alpha1", namespace, "saes", _sae(namespace, name, sae_id)
    )
    return SaeObject.from_body(body)


async def test_concurrent_reconciles_agree_on_one_certificate(
    direct: tuple[client.ApiClient, str],
) -> None:
    api, namespace = direct
    sae = await _create_sae(api, namespace, "gina", "sae-gina")
    ca = pki.create_ca("direct node CA")
    local = LocalSaes()
    core = client.CoreV1Api(api)
    outcomes = await asyncio.gather(
        *(reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca) for _ in range(4)),
        return_exceptions=True,
    )
    stored = await secrets.read_secret(core, namespace, sae.secret_name)
    assert stored is not None
    cert = pki.load_certificate(stored.data[TLS_CRT])
    for outcome in outcomes:
        if isinstance(outcome, secrets.SecretConflict):
            continue  # lost the race; kopf would retry it
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.ready
        assert outcome.certificate is not None
    registration = local.get("sae-gina")
    assert registration is not None
    assert registration.fingerprint == pki.fingerprint(cert)


async def test_a_certificate_near_expiry_is_replaced_and_the_old_one_refused(
    direct: tuple[client.ApiClient, str],
) -> None:
    api, namespace = direct
    sae = await _create_sae(api, namespace, "hal", "sae-hal")
    ca = pki.create_ca("direct node CA")
    core = client.CoreV1Api(api)
    local = LocalSaes()
    first = await reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca)
    assert first.ready
    assert first.issued_because == "its credentials Secret did not exist"

    # The Secret now holds a certificate expiring in ten days.
    short = pki.issue_sae_certificate(ca, "sae-hal", validity=dt.timedelta(days=10))
    stored = await secrets.read_secret(core, namespace, sae.secret_name)
    assert stored is not None
    await secrets.update_secret_data(core, stored, issued_data(short, ca.cert_pem))
    again = await reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca)
    assert again.ready
    assert again.issued_because == "its certificate expires within 30 days"
    assert again.certificate is not None
    assert again.certificate.serial_number != short.certificate.serial_number

    # Re-running changes nothing.
    third = await reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca)
    assert third.issued_because is None
    assert third.certificate is not None
    assert third.certificate.serial_number == again.certificate.serial_number


async def test_a_deleted_secret_is_reissued_and_supersedes_the_old_certificate(
    direct: tuple[client.ApiClient, str],
) -> None:
    api, namespace = direct
    sae = await _create_sae(api, namespace, "ivy", "sae-ivy")
    ca = pki.create_ca("direct node CA")
    core = client.CoreV1Api(api)
    local = LocalSaes()
    first = await reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca)
    assert first.certificate is not None
    await core.delete_namespaced_secret(sae.secret_name, namespace)
    second = await reconcile(sae, core=core, local=local, ca_cert_pem=ca.cert_pem, ca=ca)
    assert second.certificate is not None
    registration = local.get("sae-ivy")
    assert registration is not None
    assert (
        registration.serial == second.certificate.serial_number != first.certificate.serial_number
    )


async def test_without_a_ca_key_nothing_is_issued(direct: tuple[client.ApiClient, str]) -> None:
    api, namespace = direct
    sae = await _create_sae(api, namespace, "jo", "sae-jo")
    ca = pki.create_ca("direct node CA")
    core = client.CoreV1Api(api)
    outcome = await reconcile(sae, core=core, local=LocalSaes(), ca_cert_pem=ca.cert_pem, ca=None)
    assert (outcome.ready, outcome.reason) == (False, "CannotIssueCredentials")
    assert await secrets.read_secret(core, namespace, sae.secret_name) is None
