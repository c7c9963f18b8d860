"""Typed access to the kubelet device plugin API v1beta1 (``deviceplugin.proto``).

The servicer, the lifecycle and the tests import the API from here, never the generated modules
directly. The generated ``deviceplugin_pb2*.py`` files are excluded from ruff and mypy; loading
them through :func:`importlib.import_module` keeps mypy from following into untyped generated
code, and this module gives the few gRPC entry points the plugin needs a typed signature.
Messages are built as ``pb.ListAndWatchResponse(...)`` etc.; ``pb`` is the generated module.
"""

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, Protocol

# The generated modules; attribute access on them is untyped (their classes are built at import).
pb: Final[Any] = importlib.import_module("device_plugin.api.deviceplugin_pb2")
_pb_grpc: Final[ModuleType] = importlib.import_module("device_plugin.api.deviceplugin_pb2_grpc")

# The API version a plugin states in its RegisterRequest; the kubelet rejects any other.
VERSION: Final = "v1beta1"
# Default directory for the kubelet's and the plugins' sockets, and the kubelet's socket name.
DEVICE_PLUGIN_PATH: Final = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET_NAME: Final = "kubelet.sock"
# Device.health values the kubelet understands.
HEALTHY: Final = "Healthy"
UNHEALTHY: Final = "Unhealthy"


class RegistrationStub(Protocol):
    """Client for the kubelet's Registration service; ``await stub.Register(req, timeout=...)``."""

    Register: Callable[..., Any]


class DevicePluginStub(Protocol):
    """Client for a plugin's DevicePlugin service (used by the tests' stub kubelet)."""

    GetDevicePluginOptions: Callable[..., Any]
    ListAndWatch: Callable[..., Any]
    GetPreferredAllocation: Callable[..., Any]
    Allocate: Callable[..., Any]
    PreStartContainer: Callable[..., Any]


def registration_stub(channel: Any) -> RegistrationStub:
    """A Registration client on ``channel`` (a ``grpc.aio.Channel``)."""
    stub: RegistrationStub = _pb_grpc.RegistrationStub(channel)
    return stub


def device_plugin_stub(channel: Any) -> DevicePluginStub:
    """A DevicePlugin client on ``channel`` (a ``grpc.aio.Channel``)."""
    stub: DevicePluginStub = _pb_grpc.DevicePluginStub(channel)
    return stub


def add_device_plugin_servicer(servicer: object, server: Any) -> None:
    """Serve ``servicer`` (an object with the DevicePlugin methods) on a ``grpc.aio.Server``."""
    _pb_grpc.add_DevicePluginServicer_to_server(servicer, server)


def add_registration_servicer(servicer: object, server: Any) -> None:
    """Serve a Registration implementation on a ``grpc.aio.Server`` (the tests' stub kubelet)."""
    _pb_grpc.add_RegistrationServicer_to_server(servicer, server)
