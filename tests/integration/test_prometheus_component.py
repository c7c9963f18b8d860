"""``kustomize/prometheus`` (through ``kustomize/monitored``, the default overlay with it): its
built-in kinds pass kubernetes-validate and a real API server's dry run, and every monitor
points at what the components really serve, so the monitors cannot drift from the code.

The ServiceMonitor and PodMonitor kinds are the Prometheus Operator's; their schema is not in
this repository, so what is checked here is that each one selects a Service or pods of the same
render by their labels, names a port those have, at the path the components serve, with the
webhook's TLS names and CA Secret. A cluster with the operator's CRDs checks the schema with
``kubectl apply --dry-run=server -k kustomize/monitored``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from qss_api import LABEL_INJECT
from qss_api import sidecar as names
from tests.cluster.localcluster import Cluster
from tests.integration.test_kustomize import K8S_SCHEMA_VERSION, KUSTOMIZE, all_of, one, render
from webhooks.certificates import CA_CRT
from webhooks.settings import WebhookSettings

OVERLAY = "monitored"
MONITORING = "monitoring.coreos.com/v1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def builtin(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if not d["apiVersion"].startswith("qss.dev/") and d["apiVersion"] != MONITORING
    ]


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = (
        workload["template"] if workload["kind"] == "PodTemplate" else workload["spec"]["template"]
    )
    return template


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "PodTemplate")]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container_ports(workload: dict[str, Any]) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in pod_template(workload)["spec"]["containers"]
        for p in c.get("ports", [])
    }


def test_the_component_renders_monitors_for_every_component_and_the_dashboard() -> None:
    docs = render(OVERLAY)
    monitors = {d["metadata"]["name"] for d in all_of(docs, "ServiceMonitor")}
    assert monitors == {
        "kube-qss-controller",
        "kube-qss-qkdm",
        "kube-qss-device-plugin",
        "kube-qss-webhook",
    }
    assert {d["metadata"]["name"] for d in all_of(docs, "PodMonitor")} == {"kube-qss-sidecars"}
    dashboard = one(docs, "ConfigMap", "kube-qss-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["kube-qss.json"])
    assert board["uid"] == "kube-qss"
    assert board["panels"]
    assert all(t["expr"] for p in board["panels"] for t in p["targets"])


def test_the_builtin_kinds_pass_kubernetes_validate() -> None:
    for doc in builtin(render(OVERLAY)):
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)


def test_the_builtin_kinds_apply_to_the_real_api_server(cluster: Cluster) -> None:
    docs = builtin(render(OVERLAY))
    for doc in docs:
        if doc["kind"] == "Namespace":
            cluster.kubectl("create", "namespace", doc["metadata"]["name"], check=False)
    result = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(docs),
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_monitor_reaches_a_metrics_port_of_a_workload() -> None:
    docs = render(OVERLAY)
    for monitor in all_of(docs, "ServiceMonitor"):
        namespace = monitor["metadata"]["namespace"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in all_of(docs, "Service")
            if s["metadata"]["namespace"] == namespace
            and selects(selector, s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, (monitor["metadata"]["name"], services)
        (service,) = services
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        pods = [
            w
            for w in workloads(docs)
            if w["metadata"].get("namespace") == namespace
            and selects(service["spec"]["selector"], pod_template(w)["metadata"]["labels"])
        ]
        assert len(pods) == 1, (service["metadata"]["name"], pods)
        # The Service's target is a named container port of the pods it selects.
        assert port["targetPort"] in container_ports(pods[0]), (service, container_ports(pods[0]))


def test_the_controller_and_qkdm_health_ports_are_where_their_settings_serve_metrics() -> None:
    docs = render(OVERLAY)
    for workload, variable in (
        (one(docs, "Deployment", "kube-qss-controller"), "QSS_HEALTH_ENDPOINT"),
        (one(docs, "PodTemplate", "kube-qss-qkdm"), "QSS_QKDM_HEALTH_ENDPOINT"),
    ):
        (container,) = [
            c for c in pod_template(workload)["spec"]["containers"] if c["name"] != "redis"
        ]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        health = container_ports(workload)["health"]
        if variable in env:  # else the default: http://0.0.0.0:8080/healthz (controller)
            assert f":{health}/" in env[variable]
        else:
            assert health == 8080
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["path"] == "/healthz"
                assert container[probe]["httpGet"]["port"] == "health"


def test_the_webhook_monitor_trusts_the_webhooks_ca_under_its_service_name() -> None:
    docs = render(OVERLAY)
    (endpoint,) = one(docs, "ServiceMonitor", "kube-qss-webhook")["spec"]["endpoints"]
    settings = WebhookSettings.from_env({"QSS_WEBHOOK_NAMESPACE": "kube-qss-system"})
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": settings.tls_secret, "key": CA_CRT}
    assert endpoint["tlsConfig"]["serverName"] in settings.serving.dns_names


def test_the_sidecar_pod_monitor_finds_the_port_the_webhook_injects() -> None:
    docs = render(OVERLAY)
    monitor = one(docs, "PodMonitor", "kube-qss-sidecars")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == names.METRICS_PORT_NAME
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # The pods the webhook injects: those labelled qss.dev/inject "true".
    assert monitor["spec"]["selector"]["matchLabels"] == {LABEL_INJECT: "true"}
    (hook,) = one(docs, "MutatingWebhookConfiguration")["webhooks"]
    assert {"key": LABEL_INJECT, "operator": "Exists"} in hook["objectSelector"]["matchExpressions"]
    webhook = one(docs, "Deployment", "kube-qss-webhook")
    env = {e["name"]: e.get("value") for e in pod_template(webhook)["spec"]["containers"][0]["env"]}
    settings = WebhookSettings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.injector.metrics_port == int(env["QSS_SIDECAR_METRICS_PORT"])


def test_every_metric_on_the_dashboard_is_documented() -> None:
    board = json.loads((KUSTOMIZE / "prometheus" / "grafana" / "kube-qss.json").read_text())
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in board["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bqss_[a-z_]+", target["expr"])
    }
    documented = set(re.findall(r"`(qss_[a-z_]+)`", DOCS.read_text()))
    assert used <= documented, used - documented


@pytest.mark.parametrize("overlay", ["default", "certmanager"])
def test_overlays_without_the_component_have_no_monitors(overlay: str) -> None:
    assert not [d for d in render(overlay) if d["apiVersion"] == MONITORING]
