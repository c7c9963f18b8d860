"""The committed gRPC modules match deviceplugin.proto, and the proto matches the kubelet's API.

A real kubelet only understands us if the package, services, methods and field numbers are the
ones of k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto; the table below is that API,
written down independently of our .proto so an edit to either shows up here.
"""

import tempfile
from pathlib import Path
from typing import Any

import pytest

from device_plugin.api import codegen, pb

KUBELET_MESSAGES: dict[str, dict[str, int]] = {
    "DevicePluginOptions": {"pre_start_required": 1, "get_preferred_allocation_available": 2},
    "RegisterRequest": {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4},
    "Empty": {},
    "ListAndWatchResponse": {"devices": 1},
    "TopologyInfo": {"nodes": 1},
    "NUMANode": {"ID": 1},
    "Device": {"ID": 1, "health": 2, "topology": 3},
    "PreStartContainerRequest": {"devices_ids": 1},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {"container_requests": 1},
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": 1,
        "must_include_deviceIDs": 2,
        "allocation_size": 3,
    },
    "PreferredAllocationResponse": {"container_responses": 1},
    "ContainerPreferredAllocationResponse": {"deviceIDs": 1},
    "AllocateRequest": {"container_requests": 1},
    "ContainerAllocateRequest": {"devices_ids": 1},
    "CDIDevice": {"name": 1},
    "AllocateResponse": {"container_responses": 1},
    "ContainerAllocateResponse": {
        "envs": 1,
        "mounts": 2,
        "devices": 3,
        "annotations": 4,
        "cdi_devices": 5,
    },
    "Mount": {"container_path": 1, "host_path": 2, "read_only": 3},
    "DeviceSpec": {"container_path": 1, "host_path": 2, "permissions": 3},
}

# method -> (input, output, server streaming)
KUBELET_SERVICES: dict[str, dict[str, tuple[str, str, bool]]] = {
    "Registration": {"Register": ("RegisterRequest", "Empty", False)},
    "DevicePlugin": {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", True),
        "GetPreferredAllocation": (
            "PreferredAllocationRequest",
            "PreferredAllocationResponse",
            False,
        ),
        "Allocate": ("AllocateRequest", "AllocateResponse", False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False),
    },
}


def test_committed_generated_modules_are_what_the_proto_generates_now() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as out:
        for generated in codegen.generate(Path(out)):
            committed = codegen.API_DIR / generated.name
            assert committed.read_bytes() == generated.read_bytes(), (
                f"{committed.name} is stale; run .venv/bin/python -m device_plugin.api.codegen"
            )


def test_proto_package_is_v1beta1() -> None:
    assert pb.DESCRIPTOR.package == "v1beta1"


@pytest.mark.parametrize("message", sorted(KUBELET_MESSAGES))
def test_message_fields_and_numbers_match_the_kubelet_api(message: str) -> None:
    descriptor: Any = pb.DESCRIPTOR.message_types_by_name[message]
    assert {f.name: f.number for f in descriptor.fields} == KUBELET_MESSAGES[message]


def test_proto_has_no_messages_the_kubelet_api_lacks() -> None:
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(KUBELET_MESSAGES)


@pytest.mark.parametrize("service", sorted(KUBELET_SERVICES))
def test_service_methods_match_the_kubelet_api(service: str) -> None:
    descriptor: Any = pb.DESCRIPTOR.services_by_name[service]
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
        for m in descriptor.methods
    }
    assert descriptor.full_name == f"v1beta1.{service}"
    assert methods == KUBELET_SERVICES[service]


def test_envs_and_annotations_are_string_maps() -> None:
    response = pb.ContainerAllocateResponse(envs={"A": "1"}, annotations={"b": "2"})
    assert dict(response.envs) == {"A": "1"}
    assert dict(response.annotations) == {"b": "2"}
