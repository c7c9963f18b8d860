"""The controller's settings: one frozen dataclass, loaded once by ``controllers.main``.

Nothing else reads the environment; handlers get the settings through kopf's memo.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controllers.health import HealthEndpointError, parse_endpoint
from qss_api import NODE_ID_PATTERN

_DNS_LABEL = re.compile(NODE_ID_PATTERN)
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class SettingsError(ValueError):
    """A setting has a value the controller cannot run with; the message says which and why."""


def _address(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{what} {value!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    # This QSS node's ID in the QKD network; it must be unique there, so there is no default.
    node_id: str
    # Namespace where the node keeps its own objects (CA, node certificate, peer CAs).
    namespace: str = "kube-qss-system"
    # The node's key store; the kustomize redis component serves it under this name.
    redis_url: str = "redis://kube-qss-redis:6379/0"
    # Liveness/readiness URL, healthy once kopf's startup handlers have run; Prometheus metrics
    # are served at /metrics on the same port (``controllers.health``).
    health_endpoint: str = "http://0.0.0.0:8080/healthz"
    # Kubeconfig for our own API calls; None means the pod's service account (kopf finds its
    # own credentials the same way).
    kubeconfig: str | None = None
    # The inter-node channel (mutual TLS) that neighbours' QKDLinks point at.
    channel_address: str = "0.0.0.0:8443"
    # Extra names and addresses the node certificate carries (its node ID always is one).
    node_dns_names: tuple[str, ...] = ()
    node_ips: tuple[str, ...] = ()
    # The PodTemplate (in `namespace`) the controller runs every KeyStream end's QKD module
    # from, one Deployment each; None when something else runs the QKDMs (the process-based
    # test network starts them as processes).
    qkdm_pod_template: str | None = None
    # kopf's watch requests: the server closes the stream after this many seconds...
    watch_server_timeout: int = 300
    # ...and the client gives up a little later, so a silently dropped connection is noticed.
    watch_client_timeout: int = 330

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.node_id):
            raise SettingsError(
                f"node ID {self.node_id!r} is not a DNS label (lowercase letters, digits and '-',"
                " at most 63 characters); set QSS_NODE_ID or --node-id"
            )
        if not _DNS_LABEL.match(self.namespace):
            raise SettingsError(f"namespace {self.namespace!r} is not a valid namespace name")
        if self.watch_client_timeout <= self.watch_server_timeout:
            raise SettingsError("the watch client timeout must exceed the server timeout")
        _address(self.channel_address, "channel address (QSS_CHANNEL_ADDRESS)")
        try:
            parse_endpoint(self.health_endpoint)
        except HealthEndpointError as exc:
            raise SettingsError(f"{exc}; set QSS_HEALTH_ENDPOINT or --health-endpoint") from None
        for ip in self.node_ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise SettingsError(f"node IP {ip!r} is not an IP address (QSS_NODE_IPS)") from None
        if self.qkdm_pod_template is not None and not _OBJECT_NAME.match(self.qkdm_pod_template):
            raise SettingsError(
                f"QKDM pod template {self.qkdm_pod_template!r} is not an object name "
                "(QSS_QKDM_POD_TEMPLATE)"
            )

    @property
    def channel_host_port(self) -> tuple[str, int]:
        return _address(self.channel_address, "channel address")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: str | None) -> ControllerSettings:
        """Build settings from QSS_* variables; explicit ``overrides`` (the CLI) win."""
        values: dict[str, str] = {}
        for name, var in (
            ("node_id", "QSS_NODE_ID"),
            ("namespace", "QSS_NAMESPACE"),
            ("redis_url", "QSS_REDIS_URL"),
            ("health_endpoint", "QSS_HEALTH_ENDPOINT"),
            ("kubeconfig", "KUBECONFIG"),
            ("channel_address", "QSS_CHANNEL_ADDRESS"),
            ("node_dns_names", "QSS_NODE_DNS_NAMES"),
            ("node_ips", "QSS_NODE_IPS"),
            ("qkdm_pod_template", "QSS_QKDM_POD_TEMPLATE"),
        ):
            if var in environ:
                values[name] = environ[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "node_id" not in values:
            raise SettingsError("no node ID: set QSS_NODE_ID or pass --node-id")

        def listed(key: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in values.get(key, "").split(",") if x.strip())

        return cls(
            node_id=values["node_id"],
            namespace=values.get("namespace", cls.namespace),
            redis_url=values.get("redis_url", cls.redis_url),
            health_endpoint=values.get("health_endpoint", cls.health_endpoint),
            kubeconfig=values.get("kubeconfig"),
            channel_address=values.get("channel_address", cls.channel_address),
            node_dns_names=listed("node_dns_names"),
            node_ips=listed("node_ips"),
            qkdm_pod_template=values.get("qkdm_pod_template") or None,
        )
