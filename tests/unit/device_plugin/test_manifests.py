"""kustomize/device-plugin renders, passes kubernetes-validate (1.34) and is least privilege.

Rendered with ``kubectl kustomize`` as the overlays are. Applying it to the real API server
(server-side dry run) belongs with the cluster tests, which own the local control plane.
"""

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from device_plugin.config import Settings, load_device_config, parse_device_config
from qss_api import LABEL_NAME, LABEL_PART_OF, PART_OF, RESOURCE_QKD_DEVICE, qkd_resource

REPO_ROOT = Path(__file__).resolve().parents[3]
COMPONENT = REPO_ROOT / "kustomize" / "device-plugin"
K8S_SCHEMA_VERSION = "1.34.0"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(COMPONENT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_render_passes_kubernetes_validate(rendered: list[dict[str, Any]]) -> None:
    assert {d["kind"] for d in rendered} == {"Namespace", "ConfigMap", "DaemonSet"}
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)


def test_every_object_and_the_pod_carry_the_recommended_labels(
    rendered: list[dict[str, Any]],
) -> None:
    pod_metadata = only(rendered, "DaemonSet")["spec"]["template"]["metadata"]
    for labels in [d["metadata"]["labels"] for d in rendered] + [pod_metadata["labels"]]:
        assert labels[LABEL_PART_OF] == PART_OF
        assert labels[LABEL_NAME]


def test_daemonset_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    pod = only(rendered, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]

    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in security["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host_namespace), host_namespace


def test_daemonset_mounts_the_kubelet_device_plugin_dir_and_the_config_it_reads(
    rendered: list[dict[str, Any]],
) -> None:
    pod = only(rendered, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    plugin_dir = str(Settings().device_plugin_dir)

    assert container["command"] == ["qss-device-plugin"]
    assert args["device-plugin-dir"] == plugin_dir
    assert args["resource-prefix"] == RESOURCE_QKD_DEVICE
    assert volumes[mounts[plugin_dir]["name"]]["hostPath"]["path"] == plugin_dir
    assert not mounts[plugin_dir].get("readOnly")  # the plugin creates its socket there

    config_dir = str(Path(args["config"]).parent)
    config_volume = volumes[mounts[config_dir]["name"]]
    assert mounts[config_dir]["readOnly"] is True
    assert config_volume["configMap"]["name"] == only(rendered, "ConfigMap")["metadata"]["name"]
    assert Path(args["config"]).name in only(rendered, "ConfigMap")["data"]


def test_configmap_holds_a_device_config_the_plugin_accepts(
    rendered: list[dict[str, Any]],
) -> None:
    data = only(rendered, "ConfigMap")["data"]["devices.yaml"]
    config = parse_device_config(data, source="ConfigMap kube-qss-device-plugin")
    assert config.devices
    assert config == load_device_config(COMPONENT / "devices.yaml")


def test_simulated_device_sockets_in_the_sample_are_under_a_mounted_host_dir(
    rendered: list[dict[str, Any]],
) -> None:
    pod = only(rendered, "DaemonSet")["spec"]["template"]["spec"]
    host_dirs = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    config = load_device_config(COMPONENT / "devices.yaml")
    for device in config.devices:
        parent = str(Path(device.path).parent)
        assert parent in host_dirs, device
        assert parent in mounted, device  # at the same path, so host paths work unchanged


def test_example_qkdm_pod_requests_one_device_of_a_configured_link_and_validates() -> None:
    pod = yaml.safe_load((COMPONENT / "examples" / "qkdm-pod.yaml").read_text())
    kubernetes_validate.validate(pod, K8S_SCHEMA_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    links = {d.link for d in load_device_config(COMPONENT / "devices.yaml").devices}
    assert container["resources"]["limits"] in [{qkd_resource(link): 1} for link in links]
