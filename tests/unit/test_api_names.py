"""qss_api's names agree with the CRDs, and the CRDs agree with each other on shared shapes."""

from pathlib import Path
from typing import Any

import yaml

import qss_api
from tests.cluster.localcluster import REPO_ROOT

CRDS = {p.name: yaml.safe_load(p.read_text()) for p in (REPO_ROOT / "crds").glob("qss.dev_*.yaml")}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_each_kind_in_qss_api_has_its_crd_with_matching_names() -> None:
    assert len(CRDS) == len(qss_api.RESOURCES) == 5
    for plural, (kind, namespaced) in qss_api.RESOURCES.items():
        crd = CRDS[f"{qss_api.GROUP}_{plural}.yaml"]
        assert crd["metadata"]["name"] == f"{plural}.{qss_api.GROUP}"
        assert crd["spec"]["group"] == qss_api.GROUP
        assert crd["spec"]["names"]["kind"] == kind
        assert crd["spec"]["names"]["plural"] == plural
        assert crd["spec"]["scope"] == ("Namespaced" if namespaced else "Cluster")
        assert qss_api.CATEGORY in crd["spec"]["names"]["categories"]
        assert crd["spec"]["names"]["shortNames"]
        version = crd["spec"]["versions"][0]
        assert version["name"] == qss_api.VERSION
        assert version["subresources"] == {"status": {}}


def test_conditions_have_the_same_metav1_condition_schema_in_every_crd() -> None:
    shapes = [
        _schema(crd)["properties"]["status"]["properties"]["conditions"] for crd in CRDS.values()
    ]
    assert all(shape == shapes[0] for shape in shapes)
    assert shapes[0]["items"]["required"] == [
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    ]


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in node.get("properties", {}).items():
        where = f"{path}.{name}"
        if name != "metadata" and "description" not in prop:
            missing.append(where)
        missing += _undescribed(prop, where)
        if "items" in prop:
            missing += _undescribed(prop["items"], where + "[]")
    return missing


def test_every_field_has_a_description() -> None:
    for name, crd in CRDS.items():
        assert _undescribed(_schema(crd), name) == []


def test_crd_files_live_where_the_kustomization_says(tmp_path: Path) -> None:
    kustomization = yaml.safe_load((REPO_ROOT / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(CRDS)


def test_names_the_sidecar_shares_with_the_controller_agree() -> None:
    """The sidecar reads what the controller writes; both spell the names alike."""
    from controllers.delivery.handover import LABEL_AUTOMATIC
    from controllers.keyrequests import KEYS_JSON

    assert qss_api.LABEL_AUTOMATIC == LABEL_AUTOMATIC
    assert qss_api.SECRET_KEYS_JSON == KEYS_JSON
