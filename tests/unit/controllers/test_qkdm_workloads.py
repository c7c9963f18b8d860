"""The QKDM workload of a KeyStream end: built from the shipped PodTemplate, it asks for one
device of the stream's own link, is owned by the KeyStream and never runs two QKDMs at once."""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controllers.qkdm_workloads import (
    LABEL_KEYSTREAM,
    WorkloadError,
    deployment_name,
    qkdm_deployment,
)
from qss_api import API_VERSION, KIND_KEYSTREAM

TEMPLATE_FILE = Path(__file__).resolve().parents[3] / "kustomize" / "qkdm" / "podtemplate.yaml"
K8S_SCHEMA_VERSION = "1.34.0"


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TEMPLATE_FILE.read_text())
    return loaded


def stream(name: str = "node-a-node-b", link: str = "node-b") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_KEYSTREAM,
        "metadata": {"name": name, "uid": "0b3e6f8a-1c1d-4c57-9d53-111111111111"},
        "spec": {"link": link},
    }


def build(**kwargs: Any) -> dict[str, Any]:
    return qkdm_deployment(
        stream=kwargs.get("stream", stream()),
        template=kwargs.get("template", template()),
        namespace="kube-qss-system",
    )


def qkdm_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_the_deployment_is_valid_and_runs_one_qkdm_at_a_time() -> None:
    deployment = build()
    kubernetes_validate.validate(deployment, K8S_SCHEMA_VERSION, strict=True)
    assert deployment["metadata"]["name"] == "kube-qss-qkdm-node-a-node-b"
    assert deployment["metadata"]["namespace"] == "kube-qss-system"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_qkdm_asks_for_one_device_of_its_streams_link() -> None:
    container = qkdm_container(build(stream=stream(link="node-c")))
    assert container["resources"]["limits"]["qss.dev/qkd-node-c"] == "1"
    assert {"name": "QSS_KEYSTREAM", "value": "node-a-node-b"} in container["env"]
    # What the template says stays: its image, command and memory limit.
    assert container["command"] == ["qss-qkdm"]
    assert container["resources"]["limits"]["memory"] == "256Mi"


def test_the_keystream_owns_the_deployment_as_its_controller() -> None:
    (owner,) = build()["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "KeyStream",
        "name": "node-a-node-b",
        "uid": "0b3e6f8a-1c1d-4c57-9d53-111111111111",
        "controller": True,
        "blockOwnerDeletion": False,
    }


def test_the_selector_picks_the_streams_pods_only() -> None:
    deployment = build()
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector[LABEL_KEYSTREAM] == "node-a-node-b"
    assert selector.items() <= pod_labels.items()
    assert build(stream=stream(name="other"))["spec"]["selector"] != deployment["spec"]["selector"]


def test_a_stream_named_in_the_template_env_is_replaced_not_duplicated() -> None:
    custom = template()
    custom["template"]["spec"]["containers"][0]["env"].append(
        {"name": "QSS_KEYSTREAM", "value": "stale"}
    )
    env = qkdm_container(build(template=custom))["env"]
    assert [e for e in env if e["name"] == "QSS_KEYSTREAM"] == [
        {"name": "QSS_KEYSTREAM", "value": "node-a-node-b"}
    ]


def test_building_does_not_change_the_template() -> None:
    original = template()
    build(template=original)
    assert original == template()


def test_a_long_stream_name_gives_a_dns_label_name_and_label_value() -> None:
    long_name = "s" * 200
    deployment = build(stream=stream(name=long_name))
    name = deployment["metadata"]["name"]
    assert len(name) <= 63
    assert name.startswith("kube-qss-qkdm-")
    assert name == deployment_name(long_name) != deployment_name("s" * 199)
    assert len(deployment["spec"]["selector"]["matchLabels"][LABEL_KEYSTREAM]) <= 63
    kubernetes_validate.validate(deployment, K8S_SCHEMA_VERSION, strict=True)


def test_a_template_without_a_qkdm_container_is_refused_saying_what_to_name() -> None:
    custom = template()
    custom["template"]["spec"]["containers"][0]["name"] = "main"
    with pytest.raises(WorkloadError, match="no container named 'qkdm'"):
        build(template=custom)


def test_a_link_too_long_for_a_resource_name_is_refused_saying_so() -> None:
    with pytest.raises(WorkloadError, match="give the QKDLink a shorter name"):
        build(stream=stream(link="l" * 60))
