"""Every kustomize overlay renders, passes kubernetes-validate for the built-in kinds and is
accepted by the real API server (server-side dry run); the names that tie the rendered objects
together (nodes, links, streams, devices, sockets, ports, Secrets, images, volumes) agree within
an overlay and between neighbouring nodes of the demo's line (node-a - node-b - node-c), and match
the network the harness expects (``DEMO_NETWORK``), so the overlays cannot drift apart again.
The test overlays are also applied for real, on real nodes, by the real-node tests
(``tests/fixtures/realnodes.py``)."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from device_plugin.config import parse_device_config
from qss_api import qkd_resource
from tests.cluster import images
from tests.cluster.localcluster import REPO_ROOT, Cluster, control_plane_binaries
from tests.cluster.nodes import QSS_NODE_DOMAIN
from tests.cluster.realnetwork import DEMO_NETWORK
from tests.fixtures.cluster import LocalNetwork

KUSTOMIZE = REPO_ROOT / "kustomize"
# Overlays, and components that are applied on their own (the device plugin keeps its own
# namespace, whose Pod Security level allows its hostPath mount).
OVERLAYS = [
    "default",
    "demo/node-a",
    "demo/node-b",
    "demo/node-c",
    "test/node-a",
    "test/node-b",
    "test/node-c",
    "device-plugin",
]
# The demo network's links, each a pair of neighbouring QSS nodes, by overlay family: a line
# node-a - node-b - node-c.
LINKS = [("node-a", "node-b"), ("node-b", "node-c")]
PAIRS = [(f"{family}/{a}", f"{family}/{b}") for family in ("demo", "test") for a, b in LINKS]
K8S_SCHEMA_VERSION = "1.34.0"


@functools.cache
def _rendered(overlay: str) -> tuple[str, ...]:
    out = subprocess.run(
        [str(control_plane_binaries() / "kubectl"), "kustomize", str(KUSTOMIZE / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(yaml.safe_dump(doc) for doc in yaml.safe_load_all(out) if doc)


def render(overlay: str) -> list[dict[str, Any]]:
    return [yaml.safe_load(doc) for doc in _rendered(overlay)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"] if workload["kind"] != "PodTemplate" else None
    spec = spec or workload["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def node_id(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap", "kube-qss-node")["data"]["nodeID"])


def devices(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in all_of(docs, "ConfigMap") if "devices.yaml" in d.get("data", {})]
    config = parse_device_config(cm["data"]["devices.yaml"], source="rendered ConfigMap")
    return {d.id: d for d in config.devices}


def channel_node_port(docs: list[dict[str, Any]]) -> int:
    service = one(docs, "Service", "kube-qss-channel")
    (port,) = service["spec"]["ports"]
    assert service["spec"]["type"] == "NodePort"
    return int(port["nodePort"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builtin_kinds_pass_kubernetes_validate(overlay: str) -> None:
    docs = render(overlay)
    builtin = [d for d in docs if not d["apiVersion"].startswith("qss.dev/")]
    assert builtin, "an overlay with nothing but custom resources is unexpected"
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_carries_the_recommended_labels(overlay: str) -> None:
    for doc in render(overlay):
        labels = doc["metadata"].get("labels", {})
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "kube-qss", where
        assert "app.kubernetes.io/name" in labels, where


@pytest.fixture(scope="module")
def empty_cluster(local_network: LocalNetwork) -> Cluster:
    """A cluster of its own: the shared ones hold other tests' objects of the overlays' names
    (e.g. the samples' KeyStream, whose link is immutable), which a node-b overlay would change."""
    return local_network.cluster("overlays")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_applies_to_the_real_api_server(empty_cluster: Cluster, overlay: str) -> None:
    cluster = empty_cluster
    path = str(KUSTOMIZE / overlay)
    # A dry run does not create namespaces, and the namespaced objects need theirs.
    for doc in render(overlay):
        if doc["kind"] == "Namespace":
            cluster.kubectl("create", "namespace", doc["metadata"]["name"], check=False)
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-k", path, check=False)
    assert result.returncode == 0, result.stderr
    assert "serverside-applied (server dry run)" in result.stdout


@pytest.mark.parametrize(
    "overlay", ["default", "demo/node-a", "demo/node-b", "demo/node-c", "test/node-a"]
)
def test_ports_and_names_inside_a_node_agree(overlay: str) -> None:
    docs = render(overlay)
    manager = one(docs, "Deployment", "kube-qss-controller")
    controller = container(manager, "controller")
    controller_env, controller_ports = env(controller), ports(controller)
    # The controller listens where its container ports and its Service say.
    assert (
        int(controller_env["QSS_CHANNEL_ADDRESS"].rsplit(":", 1)[1]) == controller_ports["channel"]
    )
    assert int(controller_env["QSS_ETSI014_PORT"]) == controller_ports["key-api"]
    for service in all_of(docs, "Service"):
        selector = service["spec"].get("selector", {})
        if selector.get("app.kubernetes.io/name") == "kube-qss-controller":
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in controller_ports, (service["metadata"]["name"], port)
    # Every name the certificate is issued for is one a client can use for the Service.
    service = one(docs, "Service", "kube-qss")
    names = controller_env["QSS_NODE_DNS_NAMES"].replace("$(QSS_NAMESPACE)", "kube-qss-system")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" in names
    # Redis: the controller and the QKDMs use the Redis Service's name and port.
    redis = one(docs, "Service", "kube-qss-redis")
    (redis_port,) = redis["spec"]["ports"]
    qkdm = container(one(docs, "PodTemplate", "kube-qss-qkdm"), "qkdm")
    for url in (controller_env["QSS_REDIS_URL"], env(qkdm)["QSS_REDIS_URL"]):
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == (redis["metadata"]["name"], redis_port["port"])
    redis_set = one(docs, "StatefulSet", "kube-qss-redis")
    assert redis_port["targetPort"] in ports(container(redis_set, "redis"))
    # The QKDM pod template: the one the controller is told to use, and allowed to read.
    template = controller_env["QSS_QKDM_POD_TEMPLATE"]
    assert one(docs, "PodTemplate")["metadata"]["name"] == template
    role = one(docs, "Role", "kube-qss-controller")
    assert any(template in rule.get("resourceNames", []) for rule in role["rules"])
    assert (
        int(env(qkdm)["QSS_QKDM_HEALTH_ENDPOINT"].rsplit(":", 1)[1].split("/")[0])
        == ports(qkdm)["health"]
    )


@pytest.mark.parametrize(("here", "there"), [p for pair in PAIRS for p in (pair, pair[::-1])])
def test_neighbouring_demo_nodes_name_each_other_their_link_stream_and_devices_alike(
    here: str, there: str
) -> None:
    mine, theirs = render(here), render(there)
    me, peer = node_id(mine), node_id(theirs)
    assert me != peer
    assert here.endswith(me)
    (link,) = [q for q in all_of(mine, "QKDLink") if q["spec"]["peerNodeID"] == peer]
    spec = link["spec"]
    # The link names the peer, its CA Secret and its channel as the peer exposes it.
    assert link["metadata"]["name"] == spec["peerNodeID"] == peer
    assert spec["peerCASecretName"] == f"{peer}-ca"
    endpoint = urlsplit(spec["peerEndpoint"])
    assert endpoint.scheme == "https"
    assert endpoint.hostname == f"{peer}.{QSS_NODE_DOMAIN}"
    assert endpoint.port == channel_node_port(theirs)
    # The stream: over this link, and declared under the same name by the peer over its link.
    (stream,) = [s for s in all_of(mine, "KeyStream") if s["spec"]["link"] == peer]
    (peer_stream,) = [s for s in all_of(theirs, "KeyStream") if s["spec"]["link"] == me]
    assert peer_stream["metadata"]["name"] == stream["metadata"]["name"]
    # The device: the link's deviceID is a device of this node's plugin, serving this link,
    # so the QKDM the controller runs for the stream (resource of the link) gets it.
    device = devices(mine)[spec["deviceID"]]
    assert device.link == link["metadata"]["name"]
    assert qkd_resource(device.link) == f"qss.dev/qkd-{peer}"


def expanded(arg: str, variables: dict[str, Any]) -> str:
    """A container argument with its ``$(VAR)`` references replaced, as the kubelet does."""
    return re.sub(r"\$\((\w+)\)", lambda m: str(variables[m.group(1)]), arg)


@pytest.mark.parametrize("pair", PAIRS)
def test_the_simulated_device_pair_serves_both_nodes_devices(pair: tuple[str, str]) -> None:
    docs = [render(overlay) for overlay in pair]
    here, there = (node_id(rendered) for rendered in docs)
    (stream,) = [s for s in all_of(docs[0], "KeyStream") if s["spec"]["link"] == there]
    name = stream["metadata"]["name"]
    # Exactly one of the two nodes runs the link's pair, named and labelled for the link.
    pairs = [
        d
        for rendered in docs
        for d in all_of(rendered, "Deployment")
        if d["metadata"]["name"] == f"qss-simulated-device-{name}"
    ]
    (device_pair,) = pairs
    assert device_pair["metadata"]["labels"]["qss.dev/link"] == name
    assert device_pair["spec"]["selector"]["matchLabels"]["qss.dev/link"] == name
    sim = container(device_pair, "device")
    args = [expanded(a, env(sim)) for a in sim["command"]]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--"))
    paths = {flags["socket-a"], flags["socket-b"]}
    # Its two sockets are the devices the two nodes list for this link, one each.
    link_devices = [
        [d for d in devices(rendered).values() if d.link == peer]
        for rendered, peer in zip(docs, (there, here), strict=True)
    ]
    assert [len(found) for found in link_devices] == [1, 1]
    assert paths == {found[0].path for found in link_devices}
    host_dirs = {v["hostPath"]["path"] for v in device_pair["spec"]["template"]["spec"]["volumes"]}
    for rendered in docs:
        plugin = one(rendered, "DaemonSet", "kube-qss-device-plugin")
        plugin_dirs = {
            v["hostPath"]["path"]
            for v in plugin["spec"]["template"]["spec"]["volumes"]
            if "hostPath" in v
        }
        for device in devices(rendered).values():
            assert str(Path(device.path).parent) in plugin_dirs & host_dirs


def test_every_simulated_device_pair_runs_once_in_the_demo_network() -> None:
    names = [
        d["metadata"]["name"]
        for node in DEMO_NETWORK.nodes
        for d in all_of(render(f"test/{node}"), "Deployment")
        if d["metadata"]["name"].startswith("qss-simulated-device")
    ]
    assert sorted(names) == sorted(f"qss-simulated-device-{s}" for s in DEMO_NETWORK.streams)


def test_the_demo_network_the_harness_expects_is_the_one_the_overlays_declare() -> None:
    """``DEMO_NETWORK`` (what ``make demo`` and the real-node tests wait for and use) names the
    overlays' nodes, key streams and SAEs."""
    assert [a for a, _ in LINKS] + [LINKS[-1][1]] == list(DEMO_NETWORK.nodes)
    streams: dict[str, set[str]] = {}
    for node in DEMO_NETWORK.nodes:
        docs = render(f"test/{node}")
        assert node_id(docs) == node
        for stream in all_of(docs, "KeyStream"):
            streams.setdefault(stream["metadata"]["name"], set()).add(node)
        (sae,) = all_of(docs, "Sae")
        spec = (sae["metadata"]["namespace"], sae["metadata"]["name"], sae["spec"]["saeID"])
        assert DEMO_NETWORK.saes[node] == spec
    assert streams == {name: set(ends) for name, ends in DEMO_NETWORK.streams.items()}


def test_the_sample_keyrequest_asks_between_the_two_demo_saes() -> None:
    sample = yaml.safe_load(
        (KUSTOMIZE / "samples" / "qss.dev_v1alpha1_keyrequest.yaml").read_text()
    )
    (alice,) = all_of(render("demo/node-a"), "Sae")
    (bob,) = all_of(render("demo/node-b"), "Sae")
    assert sample["metadata"]["namespace"] == alice["metadata"]["namespace"]
    assert sample["spec"]["sae"] == alice["metadata"]["name"]
    assert sample["spec"]["slaveSaeID"] == bob["spec"]["saeID"]


@pytest.mark.parametrize("overlay", ["test/node-a", "test/node-b", "test/node-c"])
def test_the_test_overlays_run_the_images_the_harness_builds_on_its_volume(overlay: str) -> None:
    docs = render(overlay)
    used = set()
    for doc in docs:
        pod = doc.get("template") or doc.get("spec", {}).get("template")
        if isinstance(pod, dict) and "spec" in pod:
            used |= {c["image"] for c in pod["spec"]["containers"]}
    assert used <= {images.LOCAL_REFS["kube-qss"], images.LOCAL_REFS["redis"]}, used
    assert images.LOCAL_REFS["kube-qss"] in used
    # The key store's volume is bound to the claim the Redis StatefulSet makes.
    redis = one(docs, "StatefulSet", "kube-qss-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    volume = one(docs, "PersistentVolume")
    assert volume["spec"]["claimRef"] == {
        "namespace": redis["metadata"]["namespace"],
        "name": f"{claim['metadata']['name']}-{redis['metadata']['name']}-0",
    }


@pytest.mark.parametrize("overlay", OVERLAYS[:-1])
def test_the_webhook_injects_sidecars_of_its_own_image(overlay: str) -> None:
    """An overlay's ``images:`` does not reach the webhook's QSS_SIDECAR_IMAGE, so each overlay
    that maps the image must set it too (kustomize/test/webhook does for the test overlays)."""
    webhook = one(render(overlay), "Deployment", "kube-qss-webhook")
    (container,) = webhook["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QSS_SIDECAR_IMAGE"] == container["image"]
