"""The device plugin on a real kubelet: each node offers its QKD link's device under the link's
own resource, the QKDM gets exactly that device (environment and socket) through Allocate, a
device that stops drops out of allocatable, and a kubelet restart is followed by a new
registration."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import yaml

from tests.cluster.localcluster import Cluster
from tests.cluster.realnetwork import (
    DEMO_NETWORK,
    DEVICE_PLUGIN_NAMESPACE,
    NAMESPACE,
    RealQssNetwork,
)
from tests.integration.helpers import eventually
from tests.metrics import parse
from tests.realnode.helpers import (
    allocatable,
    apply_json,
    node_resources,
    pod_manifest,
    pod_phase,
    running_pod,
    unique,
)

pytestmark = pytest.mark.realnode

QKDM = "app.kubernetes.io/name=kube-qss-qkdm"
PLUGIN = "app.kubernetes.io/name=kube-qss-device-plugin"
# (QSS node, its link's QKDLink name, its device, the key stream over it) in the demo network:
# each end of each stream.
ENDS = [
    (here, there, f"qkd-{here}-{there}", stream)
    for stream, ends in DEMO_NETWORK.streams.items()
    for here, there in (ends, ends[::-1])
]


def qkdm_of(stream: str) -> str:
    """The selector of the QKDM pod of ``stream`` on a node."""
    return f"{QKDM},qss.dev/keystream={stream}"


@pytest.mark.parametrize(("node", "link", "device", "stream"), ENDS)
def test_each_node_offers_its_links_device_under_the_links_own_resource(
    real_network: RealQssNetwork, node: str, link: str, device: str, stream: str
) -> None:
    cluster = real_network.clusters[node]
    resource = f"qss.dev/qkd-{link}"

    resources = eventually(
        lambda: (r := node_resources(cluster))["allocatable"].get(resource) == "1" and r,
        60,
        f"{resource} allocatable on {node}",
    )

    assert resources["capacity"][resource] == "1"
    # Nothing but one resource per link of the node (node-b, in the middle, has two).
    links = {f"qss.dev/qkd-{peer}" for peer in DEMO_NETWORK.neighbours(node)}
    assert {r for r in resources["capacity"] if r.startswith("qss.dev/")} == links


@pytest.mark.parametrize(("node", "link", "device", "stream"), ENDS)
def test_the_qkdm_gets_its_links_device_and_socket_through_allocate(
    real_network: RealQssNetwork, node: str, link: str, device: str, stream: str
) -> None:
    cluster = real_network.clusters[node]
    pod = running_pod(cluster, NAMESPACE, qkdm_of(stream))
    (container,) = pod["spec"]["containers"]
    probe = (
        "import json, os, stat; "
        "env = {k: v for k, v in os.environ.items() if k.startswith('QSS_QKD_')}; "
        "env['socket'] = stat.S_ISSOCK(os.stat(env['QSS_QKD_DEVICE_PATH']).st_mode); "
        "print(json.dumps(env))"
    )

    out = cluster.kubectl(
        "exec", pod["metadata"]["name"], "-n", NAMESPACE, "--", "python3", "-c", probe
    ).stdout

    assert container["resources"]["limits"][f"qss.dev/qkd-{link}"] == "1"
    assert json.loads(out) == {
        "QSS_QKD_DEVICE_ID": device,
        "QSS_QKD_DEVICE_IDS": device,
        "QSS_QKD_DEVICE_KIND": "simulated",
        "QSS_QKD_DEVICE_PATH": "/var/run/qss/qkd-device.sock",
        "QSS_QKD_LINK": link,
        "socket": True,
    }


def test_a_second_pod_for_a_link_whose_device_is_taken_waits_as_insufficient(
    real_network: RealQssNetwork,
) -> None:
    cluster = real_network.clusters["node-a"]
    name = unique("wants-node-b-device")
    apply_json(
        cluster,
        pod_manifest(
            name, "default", ["sleep", "60"], resources={"limits": {"qss.dev/qkd-node-b": "1"}}
        ),
    )
    try:

        def unschedulable() -> str | None:
            out = cluster.kubectl("get", "pod", name, "-n", "default", "-o", "json").stdout
            conditions = json.loads(out)["status"].get("conditions", [])
            return next(
                (c["message"] for c in conditions if c.get("reason") == "Unschedulable"), None
            )

        message = eventually(unschedulable, 60, "the scheduler to refuse the pod")
        assert "Insufficient qss.dev/qkd-node-b" in message
        assert pod_phase(cluster, name, "default") == "Pending"
    finally:
        cluster.kubectl("delete", "pod", name, "-n", "default", "--wait=false")


@pytest.fixture
def spare_device(real_network: RealQssNetwork) -> Iterator[subprocess.Popen[bytes]]:
    """A simulated device pair on the host, its end A offered by node-a's plugin as link
    "spare" (a ConfigMap change and a plugin restart, undone afterwards)."""
    cluster = real_network.clusters["node-a"]
    devices_dir = real_network.plane.devices_dir
    device = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device_plugin.simdevice",
            "pair",
            f"--socket-a={devices_dir / 'spare-a.sock'}",
            f"--socket-b={devices_dir / 'spare-b.sock'}",
            "--rate-bps=1000",
        ],
        stderr=subprocess.DEVNULL,
    )
    original = _plugin_config(cluster)
    config = yaml.safe_load(original["data"]["devices.yaml"])
    config["devices"].append(
        {
            "id": "qkd-spare",
            "kind": "simulated",
            "path": "/var/run/qss/devices/spare-a.sock",
            "link": "spare",
        }
    )
    try:
        _restart_plugin_with(cluster, original, yaml.safe_dump(config))
        yield device
    finally:
        device.terminate()
        device.wait(timeout=20)
        _restart_plugin_with(cluster, original, original["data"]["devices.yaml"])


def test_a_device_is_allocated_to_a_pod_and_leaves_allocatable_when_it_stops(
    real_network: RealQssNetwork, spare_device: subprocess.Popen[bytes]
) -> None:
    cluster = real_network.clusters["node-a"]
    eventually(lambda: allocatable(cluster, "qss.dev/qkd-spare") == "1", 60, "spare offered")
    name = unique("spare-user")
    apply_json(
        cluster,
        pod_manifest(
            name,
            "default",
            ["sh", "-c", 'echo "$QSS_QKD_DEVICE_ID $QSS_QKD_LINK"; test -S "$QSS_QKD_DEVICE_PATH"'],
            resources={"limits": {"qss.dev/qkd-spare": "1"}},
        ),
    )
    try:
        eventually(lambda: pod_phase(cluster, name, "default") == "Succeeded", 90, "the pod")
        assert cluster.kubectl("logs", name, "-n", "default").stdout.split() == [
            "qkd-spare",
            "spare",
        ]
    finally:
        cluster.kubectl("delete", "pod", name, "-n", "default")

    spare_device.terminate()
    spare_device.wait(timeout=20)

    eventually(lambda: allocatable(cluster, "qss.dev/qkd-spare") == "0", 60, "spare unhealthy")
    assert node_resources(cluster)["capacity"]["qss.dev/qkd-spare"] == "1"
    assert allocatable(cluster, "qss.dev/qkd-node-b") == "1"  # the other link is untouched


def test_restarting_the_kubelet_is_followed_by_a_new_registration(
    real_network: RealQssNetwork,
) -> None:
    cluster = real_network.clusters["node-b"]
    node = real_network.node("node-b")
    before = _registrations(cluster)

    node.stop_kubelet()
    node.start_kubelet()

    eventually(lambda: _registrations(cluster) > before, 90, "the plugin to register again")
    for peer in DEMO_NETWORK.neighbours("node-b"):
        resource = f"qss.dev/qkd-{peer}"
        back = partial(_offered, cluster, resource)
        eventually(back, 90, f"{resource} back")
    for stream, ends in DEMO_NETWORK.streams.items():  # each QKDM kept its device, and runs
        if "node-b" in ends:
            assert running_pod(cluster, NAMESPACE, qkdm_of(stream))


def _offered(cluster: Cluster, resource: str) -> bool:
    return allocatable(cluster, resource) == "1"


def _registrations(cluster: Cluster) -> int:
    pod = running_pod(cluster, DEVICE_PLUGIN_NAMESPACE, PLUGIN)
    url = f"http://{pod['status']['podIP']}:9410/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return int(parse(text).value("qss_device_plugin_registrations_total"))


def _plugin_config(cluster: Cluster) -> dict[str, Any]:
    ds = json.loads(
        cluster.kubectl(
            "get",
            "daemonset",
            "kube-qss-device-plugin",
            "-n",
            DEVICE_PLUGIN_NAMESPACE,
            "-o",
            "json",
        ).stdout
    )
    (volume,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    config: dict[str, Any] = json.loads(
        cluster.kubectl(
            "get",
            "configmap",
            volume["configMap"]["name"],
            "-n",
            DEVICE_PLUGIN_NAMESPACE,
            "-o",
            "json",
        ).stdout
    )
    return config


def _restart_plugin_with(cluster: Cluster, configmap: dict[str, Any], devices: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap["metadata"]["name"],
            "namespace": DEVICE_PLUGIN_NAMESPACE,
        },
        "data": {"devices.yaml": devices},
    }
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=tests",
        "-f",
        "-",
        stdin=json.dumps(body),
    )
    ds = "daemonset/kube-qss-device-plugin"
    cluster.kubectl("rollout", "restart", ds, "-n", DEVICE_PLUGIN_NAMESPACE)
    cluster.kubectl("rollout", "status", ds, "-n", DEVICE_PLUGIN_NAMESPACE, "--timeout=120s")
