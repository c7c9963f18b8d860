"""The kustomize overlays render, pass kubernetes-validate for the built-in kinds, and the real
API server accepts them (server-side dry run)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.cluster.localcluster import REPO_ROOT, Cluster

# Overlays, and components that are applied on their own (the device plugin keeps its own
# namespace, whose Pod Security level allows its hostPath mount).
OVERLAYS = ["default", "demo", "device-plugin"]
K8S_SCHEMA_VERSION = "1.34.0"


def render(cluster: Cluster, overlay: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("kustomize", str(REPO_ROOT / "kustomize" / overlay)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builtin_kinds_pass_kubernetes_validate(cluster: Cluster, overlay: str) -> None:
    docs = render(cluster, overlay)
    builtin = [d for d in docs if not d["apiVersion"].startswith("qss.dev/")]
    assert builtin, "an overlay with nothing but custom resources is unexpected"
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_carries_the_recommended_labels(
    cluster: Cluster, overlay: str
) -> None:
    for doc in render(cluster, overlay):
        labels = doc["metadata"].get("labels", {})
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "kube-qss", where
        assert "app.kubernetes.io/name" in labels, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_to_the_real_api_server(cluster: Cluster, overlay: str) -> None:
    path = str(REPO_ROOT / "kustomize" / overlay)
    # A dry run does not create namespaces, and the namespaced objects need theirs.
    for doc in render(cluster, overlay):
        if doc["kind"] == "Namespace":
            cluster.kubectl("create", "namespace", doc["metadata"]["name"], check=False)
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-k", path, check=False)
    assert result.returncode == 0, result.stderr
    assert "serverside-applied (server dry run)" in result.stdout
