"""kustomize/webhook, the cert-manager overlay and the sample pods render, pass
kubernetes-validate (1.34), agree with the code's names and defaults, and are least privilege;
the sample pods pass the webhook, and what it injects is a valid pod spec.

Rendered with the control plane's own kubectl (``kubectl kustomize``), as the overlays are.
Applying to the real API server is in ``tests/integration/test_kustomize.py`` (via the default
overlay) and ``tests/integration/test_webhook.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from qss_api import LABEL_NAME, LABEL_PART_OF, PART_OF
from tests.cluster.localcluster import REPO_ROOT, control_plane_binaries
from tests.unit.webhooks.helpers import InMemorySaes, apply_patch, operations, run
from webhooks.injection import SaeRecord
from webhooks.server import MUTATE_PATH
from webhooks.settings import SYSTEM_NAMESPACES, WebhookSettings

K8S_SCHEMA_VERSION = "1.34.0"
KUSTOMIZE = REPO_ROOT / "kustomize"


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = control_plane_binaries() / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def builtin(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if not d["apiVersion"].startswith(("qss.dev/", "cert-manager.io/"))]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return doc


@pytest.fixture(scope="module")
def webhook() -> list[dict[str, Any]]:
    return render(KUSTOMIZE / "webhook")


def test_component_passes_kubernetes_validate_and_carries_the_labels(
    webhook: list[dict[str, Any]],
) -> None:
    assert {d["kind"] for d in webhook} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    }
    for doc in webhook:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        assert doc["metadata"]["labels"][LABEL_PART_OF] == PART_OF
        assert doc["metadata"]["labels"][LABEL_NAME]


def test_configuration_is_tight_short_and_fails_closed(webhook: list[dict[str, Any]]) -> None:
    settings = WebhookSettings()
    config = one(webhook, "MutatingWebhookConfiguration")
    assert config["metadata"]["name"] == settings.configuration
    (hook,) = config["webhooks"]
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] <= 5
    assert hook["failurePolicy"] == "Fail"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert "caBundle" not in hook["clientConfig"]  # the webhook writes it
    (excluded,) = hook["namespaceSelector"]["matchExpressions"]
    assert excluded["key"] == "kubernetes.io/metadata.name"
    assert excluded["operator"] == "NotIn"
    assert set(excluded["values"]) == SYSTEM_NAMESPACES | {settings.namespace}
    assert {"key": "qss.dev/inject", "operator": "Exists"} in hook["objectSelector"][
        "matchExpressions"
    ]
    assert {
        "key": LABEL_NAME,
        "operator": "NotIn",
        "values": [settings.injector.own_name],
    } in hook["objectSelector"]["matchExpressions"]


def test_service_deployment_and_configuration_agree_with_the_code(
    webhook: list[dict[str, Any]],
) -> None:
    settings = WebhookSettings()
    service = one(webhook, "Service")
    deployment = one(webhook, "Deployment")
    client = one(webhook, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]
    assert (client["name"], client["namespace"], client["path"]) == (
        service["metadata"]["name"],
        settings.namespace,
        MUTATE_PATH,
    )
    assert [p["port"] for p in service["spec"]["ports"]] == [client["port"]]
    assert f"{service['metadata']['name']}.{settings.namespace}.svc" in settings.serving.dns_names
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"][LABEL_NAME] == settings.injector.own_name
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QSS_WEBHOOK_ADDRESS"] == f"0.0.0.0:{container['ports'][0]['containerPort']}"
    assert env["QSS_SIDECAR_IMAGE"] == container["image"]


def test_webhook_runs_unprivileged_with_two_replicas(webhook: list[dict[str, Any]]) -> None:
    deployment = one(webhook, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_rbac_is_least_privilege(webhook: list[dict[str, Any]]) -> None:
    settings = WebhookSettings()
    cluster = one(webhook, "ClusterRole", "kube-qss-webhook")["rules"]
    assert cluster == [
        {"apiGroups": ["qss.dev"], "resources": ["saes"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [settings.configuration],
            "verbs": ["get", "patch"],
        },
    ]
    role = one(webhook, "Role", "kube-qss-webhook")
    assert role["metadata"]["namespace"] == settings.namespace
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [settings.tls_secret],
            "verbs": ["get", "patch"],
        },
    ]
    sidecar = one(webhook, "ClusterRole", "kube-qss-sidecar")["rules"]
    assert sidecar == [
        {
            "apiGroups": ["qss.dev"],
            "resources": ["keyrequests"],
            "verbs": ["list", "watch", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]


def test_default_overlay_includes_the_webhook() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render(KUSTOMIZE / "default")}
    assert ("MutatingWebhookConfiguration", "kube-qss-webhook") in kinds
    assert ("Deployment", "kube-qss-webhook") in kinds


def test_certmanager_overlay_serves_cert_managers_certificate() -> None:
    docs = render(KUSTOMIZE / "certmanager")
    for doc in builtin(docs):
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
    certificate = one(docs, "Certificate")
    deployment = one(docs, "Deployment", "kube-qss-webhook")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["QSS_WEBHOOK_CERT_DIR"] == mount["mountPath"]
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert set(certificate["spec"]["dnsNames"]) >= set(WebhookSettings().serving.dns_names)
    config = one(docs, "MutatingWebhookConfiguration")
    namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (
        certificate["metadata"]["namespace"],
        certificate["metadata"]["name"],
    )


SAMPLES = {
    p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
    for p in sorted((KUSTOMIZE / "samples" / "pods").glob("*.yaml"))
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
async def test_sample_pods_pass_the_webhook_into_a_valid_pod(sample: str) -> None:
    docs = SAMPLES[sample]
    for doc in builtin(docs):
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
    pod = one(docs, "Pod")
    namespace = pod["metadata"]["namespace"]
    annotations = pod["metadata"]["annotations"]
    sae = SaeRecord(
        namespace=namespace,
        name=annotations["qss.dev/sae"],
        sae_id=annotations["qss.dev/sae"],
        credentials_secret=f"{annotations['qss.dev/sae']}-credentials",
    )
    response = await run(pod, InMemorySaes(sae), namespace=namespace)
    assert response.allowed, response.status
    assert response.warnings is None  # the samples keep the token away from the app
    injected = apply_patch(pod, operations(response))
    kubernetes_validate.validate(injected, K8S_SCHEMA_VERSION, strict=True)
    # The sidecar's service account may do what the sample binds it to.
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == "kube-qss-sidecar"
    assert binding["subjects"][0]["name"] == pod["spec"]["serviceAccountName"]


def test_there_is_a_master_and_a_slave_sample_that_name_each_other() -> None:
    pods = [one(docs, "Pod") for docs in SAMPLES.values()]
    roles = {
        p["metadata"]["annotations"]["qss.dev/role"]: p["metadata"]["annotations"] for p in pods
    }
    assert set(roles) == {"master", "slave"}
    assert roles["master"]["qss.dev/peer-sae"] == roles["slave"]["qss.dev/sae"]
    assert roles["slave"]["qss.dev/peer-sae"] == roles["master"]["qss.dev/sae"]
