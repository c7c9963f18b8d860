"""The injecting webhook on a real API server: pods are created with kubectl, the API server
calls the webhook process (registered as shipped in kustomize/webhook, on loopback; on a cluster
of its own, ``webhook_cluster``) and the stored pod is read back. Pods stay Pending (no kubelet
runs them yet): admission is what is tested here.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from qss_api import sidecar as names
from tests.cluster.localcluster import Cluster, free_port
from tests.cluster.webhook import (
    CONFIGURATION,
    NAMESPACE,
    SIDECAR_IMAGE,
    TLS_SECRET,
    RunningWebhook,
    apply,
    wait_for_service_account,
)
from tests.integration.helpers import eventually, kubectl_json
from tests.metrics import Page, scrape
from tests.webhook_cases import APP_UID, BAD_PODS, PEER_SAE_ID, SAE, SAE_ID, BadPod, annotated_pod
from webhooks.tls import ServingNames, create_ca, issue_serving, signed_by

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def namespace(webhook_cluster: Cluster, webhook: RunningWebhook) -> Iterator[str]:
    name = f"wh-{uuid.uuid4().hex[:6]}"
    webhook_cluster.kubectl("create", "namespace", name)
    wait_for_service_account(webhook_cluster, name)
    apply(
        webhook_cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "Sae",
            "metadata": {"name": SAE, "namespace": name},
            "spec": {"saeID": SAE_ID},
        },
    )
    yield name
    webhook_cluster.kubectl("delete", "namespace", name, "--wait=false")


def create(
    cluster: Cluster, namespace: str, pod: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create", "-n", namespace, "-o", "json", "-f", "-", stdin=json.dumps(pod), check=False
    )


def created(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    result = create(cluster, namespace, pod)
    assert result.returncode == 0, result.stderr
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


def name() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def injected(pod: dict[str, Any]) -> bool:
    return any(c["name"] == names.CONTAINER_NAME for c in pod["spec"].get("initContainers", []))


def test_annotated_pod_is_stored_with_the_sidecar_its_volumes_and_read_only_mounts(
    webhook_cluster: Cluster, namespace: str
) -> None:
    pod = created(webhook_cluster, namespace, annotated_pod(name()))
    assert pod["metadata"]["annotations"]["qss.dev/inject-status"] == "injected"
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["name"] == names.CONTAINER_NAME
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == SIDECAR_IMAGE
    assert sidecar["securityContext"]["runAsUser"] == APP_UID
    assert sidecar["startupProbe"]["exec"]["command"] == [
        "test",
        "-f",
        f"{names.DEFAULT_KEYS_DIR}/..data/index.json",
    ]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env[names.ENV_SAE_ID] == SAE_ID
    assert env[names.ENV_PEER_SAE_ID] == PEER_SAE_ID
    assert env[names.ENV_ROLE] == "master"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[names.KEYS_VOLUME]["emptyDir"]["medium"] == "Memory"
    assert volumes[names.CREDENTIALS_VOLUME]["secret"]["secretName"] == f"{SAE}-credentials"
    assert names.TOKEN_VOLUME in volumes
    (app,) = pod["spec"]["containers"]
    assert {
        "name": names.KEYS_VOLUME,
        "mountPath": names.DEFAULT_KEYS_DIR,
        "readOnly": True,
    } in app["volumeMounts"]
    assert all(m["name"] != names.CREDENTIALS_VOLUME for m in app["volumeMounts"])


@pytest.mark.parametrize(
    ("where", "labels"),
    [
        ("no label", {"qss.dev/inject": None}),
        ("opted out", {"qss.dev/inject": "false"}),
        ("webhook's own pod", {"app.kubernetes.io/name": "kube-qss-webhook"}),
    ],
)
def test_pods_not_asking_for_keys_or_the_webhooks_own_are_stored_untouched(
    webhook_cluster: Cluster, namespace: str, where: str, labels: dict[str, str | None]
) -> None:
    pod = annotated_pod(name())
    for key, value in labels.items():
        if value is None:
            pod["metadata"]["labels"].pop(key)
        else:
            pod["metadata"]["labels"][key] = value
    stored = created(webhook_cluster, namespace, pod)
    assert not injected(stored), where
    assert "qss.dev/inject-status" not in stored["metadata"]["annotations"]
    assert stored["spec"]["containers"][0].get("volumeMounts", []) == []


@pytest.mark.parametrize("system", ["kube-system", NAMESPACE])
def test_labelled_pods_in_system_namespaces_and_the_webhooks_own_are_untouched(
    webhook_cluster: Cluster, system: str
) -> None:
    wait_for_service_account(webhook_cluster, system)
    stored = created(webhook_cluster, system, annotated_pod(name()))
    try:
        assert not injected(stored)
        assert "qss.dev/inject-status" not in stored["metadata"]["annotations"]
    finally:
        webhook_cluster.kubectl(
            "delete", "pod", stored["metadata"]["name"], "-n", system, "--wait=false"
        )


def _resubmittable(stored: dict[str, Any], new_name: str) -> dict[str, Any]:
    pod = copy.deepcopy(stored)
    meta = pod["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "namespace"):
        meta.pop(key, None)
    meta["name"] = new_name
    pod.pop("status", None)
    return pod


def test_creating_the_same_pod_twice_and_from_its_stored_spec_gives_the_same_spec(
    webhook_cluster: Cluster, namespace: str
) -> None:
    first = created(webhook_cluster, namespace, annotated_pod("twice-1"))
    second = created(webhook_cluster, namespace, annotated_pod("twice-2"))
    again = created(webhook_cluster, namespace, _resubmittable(first, "twice-3"))
    assert first["spec"] == second["spec"] == again["spec"]
    assert again["metadata"]["annotations"] == first["metadata"]["annotations"]


@pytest.fixture(scope="module")
def container_webhook(
    webhook_cluster: Cluster, webhook: RunningWebhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A second webhook (sorted after ours) that adds a container, so ours is reinvoked."""
    directory = Path(tmp_path_factory.mktemp("container-webhook"))
    now = dt.datetime.now(dt.UTC)
    span = dt.timedelta(hours=1)
    ca = create_ca(now=now, validity=span)
    serving = issue_serving(ca, ServingNames(ips=("127.0.0.1",)), now=now, validity=span)
    (directory / "tls.crt").write_bytes(serving.cert_pem)
    (directory / "tls.key").write_bytes(serving.key_pem)
    port = free_port()
    proc = webhook.plane.spawn(
        "container-webhook",
        [
            sys.executable,
            "-m",
            "tests.integration.container_webhook",
            str(port),
            str(directory / "tls.crt"),
            str(directory / "tls.key"),
        ],
        directory / "log",
    )
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-qss-test-adds-container"},
        "webhooks": [
            {
                "name": "adds-container.test.qss.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 5,
                "failurePolicy": "Fail",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/",
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "objectSelector": {"matchLabels": {"qss-test/add-container": "true"}},
            }
        ],
    }
    apply(webhook_cluster, config)
    try:
        yield
    finally:
        webhook_cluster.kubectl(
            "delete", "mutatingwebhookconfiguration", "zz-qss-test-adds-container"
        )
        proc.terminate()
        proc.wait(timeout=10)


def test_a_reinvocation_after_another_webhook_added_a_container_mounts_the_keys_there_too(
    webhook_cluster: Cluster, namespace: str, container_webhook: None
) -> None:
    pod = annotated_pod(name(), labels={"qss-test/add-container": "true"})
    stored = created(webhook_cluster, namespace, pod)
    containers = {c["name"]: c for c in stored["spec"]["containers"]}
    assert set(containers) == {"app", "late"}
    for container in containers.values():
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] == names.KEYS_VOLUME]
        assert mounts == [
            {"name": names.KEYS_VOLUME, "mountPath": names.DEFAULT_KEYS_DIR, "readOnly": True}
        ]
    assert [c["name"] for c in stored["spec"]["initContainers"]] == [names.CONTAINER_NAME]
    assert [v["name"] for v in stored["spec"]["volumes"]].count(names.KEYS_VOLUME) == 1


def test_a_sae_created_changed_or_deleted_is_used_as_it_is_now(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    """The webhook keeps Saes from a watch; a change reaches the next pod, a deletion denies it,
    and a Sae created a moment ago is found at once (read when the watch has not shown it)."""
    sae = f"watched-{uuid.uuid4().hex[:6]}"

    def manual(secret: str) -> dict[str, Any]:
        return {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "Sae",
            "metadata": {"name": sae, "namespace": namespace},
            "spec": {"saeID": sae, "registration": "Manual", "credentialsSecretName": secret},
        }

    def credentials_of(pod: dict[str, Any]) -> str:
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        secret: str = volumes[names.CREDENTIALS_VOLUME]["secret"]["secretName"]
        return secret

    def pod() -> dict[str, Any]:
        return annotated_pod(name(), annotations={"qss.dev/sae": sae})

    def watching_since() -> int | None:
        """Where the log ends, if its newest word on the watch is that it runs."""
        text = webhook.log.read_text()
        running = text.rfind("watching Saes:") > text.rfind("watching Saes stopped")
        return len(text) if running else None

    # A list refused while the API server starts (429) is retried; the checks begin once the
    # watch runs, and it must run throughout them.
    start = eventually(watching_since, what="the webhook's Sae watch running")
    apply(webhook_cluster, manual("first"))
    assert credentials_of(created(webhook_cluster, namespace, pod())) == "first"
    apply(webhook_cluster, manual("second"))
    eventually(
        lambda: credentials_of(created(webhook_cluster, namespace, pod())) == "second",
        what="a pod admitted with the Sae's new credentials Secret",
    )
    webhook_cluster.kubectl("delete", "sae", sae, "-n", namespace)

    def denied() -> bool:
        result = create(webhook_cluster, namespace, pod())
        return result.returncode != 0 and f"Sae {sae!r} does not exist" in result.stderr

    eventually(denied, what="a pod naming the deleted Sae denied")
    # The watch ran throughout; with GETs alone this test would pass too.
    assert "watching Saes stopped" not in webhook.log.read_text()[start:]


@pytest.mark.parametrize("case", BAD_PODS, ids=lambda c: c.id)
def test_bad_pod_is_denied_with_the_expected_message(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook, case: BadPod
) -> None:
    result = create(webhook_cluster, namespace, case.pod(name()))
    assert result.returncode != 0, f"{case.id} was admitted"
    assert 'admission webhook "inject.qss.dev" denied the request' in result.stderr, result.stderr
    for words in case.expected:
        assert words in result.stderr, (case.id, result.stderr)
    assert webhook.proc is not None
    assert webhook.proc.poll() is None


def test_after_the_bad_pods_the_webhook_is_up_and_logged_no_error(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    assert injected(created(webhook_cluster, namespace, annotated_pod(name())))
    log = webhook.log.read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log


def test_metrics_on_the_https_port_count_admissions_by_outcome(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    def page() -> Page:
        return scrape(f"{webhook.url}/metrics", context=webhook.trusted_context())

    before = page()
    assert injected(created(webhook_cluster, namespace, annotated_pod(name())))
    assert create(webhook_cluster, namespace, BAD_PODS[0].pod(name())).returncode != 0
    after = page()
    for outcome in ("injected", "denied"):
        delta = after.value("qss_webhook_admissions_total", outcome=outcome) - before.value(
            "qss_webhook_admissions_total", outcome=outcome
        )
        assert delta == 1, outcome
        count = "qss_webhook_admission_duration_seconds_count"
        assert after.value(count, outcome=outcome) == before.value(count, outcome=outcome) + 1
    assert after.value("qss_webhook_admissions_total", outcome="error") == before.value(
        "qss_webhook_admissions_total", outcome="error"
    )
    assert namespace not in after.text  # no pod, namespace or SAE in a label
    assert SAE_ID not in after.text


def test_serving_certificates_rotate_by_themselves_while_pods_are_admitted(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    first = webhook.served_certificate().serial_number
    admitted = 0

    def rotated() -> bool:
        nonlocal admitted
        assert injected(created(webhook_cluster, namespace, annotated_pod(name())))
        admitted += 1
        return webhook.served_certificate().serial_number != first

    eventually(rotated, timeout=90, what="a renewed serving certificate")
    assert admitted >= 1


def test_a_forced_rotation_changes_the_ca_and_admission_keeps_working(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    """SIGHUP: a new CA, published beside the old, then the serving certificate moves to it,
    then the old CA leaves the bundle; pods are created throughout, and every one is admitted."""
    before = webhook.published_bundle()
    failures: list[str] = []
    admitted: list[str] = []
    stop = threading.Event()

    def keep_creating() -> None:
        while not stop.is_set():
            result = create(webhook_cluster, namespace, annotated_pod(name()))
            if result.returncode != 0:
                failures.append(result.stderr)
            else:
                admitted.append(json.loads(result.stdout)["metadata"]["name"])

    creator = threading.Thread(target=keep_creating)
    creator.start()
    try:
        webhook.force_rotation()

        def finished() -> bool:
            bundle = webhook.published_bundle()
            cas = x509.load_pem_x509_certificates(bundle)
            # Done: one CA, not the one before, and it signed what is served.
            return (
                len(cas) == 1
                and bundle != before
                and signed_by(webhook.served_certificate(), cas[0])
            )

        eventually(finished, timeout=120, what="the CA change to finish")
        count = len(admitted)
        eventually(
            lambda: len(admitted) > count, timeout=30, what="a pod admitted after the change"
        )
    finally:
        stop.set()
        creator.join()
    assert failures == []
    assert len(admitted) >= 3
    secret = kubectl_json(webhook_cluster, "get", "secret", TLS_SECRET, "-n", NAMESPACE)
    assert secret is not None
    assert "ca-previous.crt" not in secret["data"]


def test_a_second_replica_serves_the_same_certificate_and_leaves_the_bundle_alone(
    webhook: RunningWebhook,
) -> None:
    bundle = webhook.published_bundle()
    port = webhook.start_replica()
    try:
        # Serving certificates are renewed every 20 s here (tests.fixtures.webhook), and the
        # replica that did not renew adopts the new one on its next check, a second or so
        # later: the two are compared at a moment when neither is in that step.
        eventually(
            lambda: webhook.served_certificate(port) == webhook.served_certificate(),
            timeout=30,
            what="the replica serving the certificate the first one serves",
        )
        assert webhook.published_bundle() == bundle
    finally:
        for proc in webhook.extra:
            proc.terminate()
            proc.wait(timeout=20)
        webhook.extra = []


def test_while_the_webhook_is_down_labelled_pods_are_refused_and_others_are_not(
    webhook_cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    """failurePolicy Fail: a pod that asked for keys is never admitted without the sidecar."""
    webhook.stop(kill=True)
    try:
        refused = create(webhook_cluster, namespace, annotated_pod(name()))
        assert refused.returncode != 0
        assert 'failed calling webhook "inject.qss.dev"' in refused.stderr
        plain = annotated_pod(name())
        del plain["metadata"]["labels"]["qss.dev/inject"]
        assert create(webhook_cluster, namespace, plain).returncode == 0
    finally:
        webhook.start()
    assert injected(created(webhook_cluster, namespace, annotated_pod(name())))
    assert webhook.published_bundle()  # the restarted webhook kept the CA it had
    assert (
        kubectl_json(webhook_cluster, "get", "mutatingwebhookconfiguration", CONFIGURATION)
        is not None
    )
