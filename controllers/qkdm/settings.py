"""The QKDM's settings: one frozen dataclass, loaded once by ``controllers.qkdm.main``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from controllers.health import HealthEndpointError, parse_endpoint
from qss_api import NODE_ID_PATTERN

_DNS_LABEL = re.compile(NODE_ID_PATTERN)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class SettingsError(ValueError):
    """A setting the QKDM cannot run with; the message says which and how to set it."""


@dataclass(frozen=True, kw_only=True)
class QkdmSettings:
    # This QSS node's ID; with the peer's, it names the stream's default KSID.
    node_id: str
    # The KeyStream this QKDM serves (one QKDM per stream end).
    stream: str
    # The QKD device's socket; the device plugin sets QSS_QKD_DEVICE_PATH in the QKDM's pod.
    device_path: str
    # The node's key store.
    redis_url: str = "redis://kube-qss-redis:6379/0"
    # Kubeconfig for our own API calls; None means the pod's service account.
    kubeconfig: str | None = None
    # The stream's status is written at most this often (the API server is not a metrics bus).
    status_interval: float = 1.0
    # Liveness at this URL, Prometheus metrics at /metrics beside it (``controllers.health``).
    health_endpoint: str = "http://0.0.0.0:8081/healthz"

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.node_id):
            raise SettingsError(f"node ID {self.node_id!r} is not a DNS label; set QSS_NODE_ID")
        if not _NAME.match(self.stream):
            raise SettingsError(
                f"key stream name {self.stream!r} is not a valid object name; set QSS_KEYSTREAM"
            )
        if not self.device_path:
            raise SettingsError("no QKD device: set QSS_QKD_DEVICE_PATH or pass --device")
        if self.status_interval <= 0:
            raise SettingsError("the status interval must be positive")
        try:
            parse_endpoint(self.health_endpoint)
        except HealthEndpointError as exc:
            raise SettingsError(f"{exc}; set QSS_QKDM_HEALTH_ENDPOINT") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **cli: str | None) -> QkdmSettings:
        values = {
            "node_id": environ.get("QSS_NODE_ID"),
            "stream": environ.get("QSS_KEYSTREAM"),
            "device_path": environ.get("QSS_QKD_DEVICE_PATH"),
            "redis_url": environ.get("QSS_REDIS_URL"),
            "kubeconfig": environ.get("KUBECONFIG"),
            "health_endpoint": environ.get("QSS_QKDM_HEALTH_ENDPOINT"),
        }
        values.update({k: v for k, v in cli.items() if v is not None})
        for required, how in (
            ("node_id", "QSS_NODE_ID or --node-id"),
            ("stream", "QSS_KEYSTREAM or --stream"),
            ("device_path", "QSS_QKD_DEVICE_PATH or --device"),
        ):
            if not values.get(required):
                raise SettingsError(f"no {required.replace('_', ' ')}: set {how}")
        return cls(
            node_id=str(values["node_id"]),
            stream=str(values["stream"]),
            device_path=str(values["device_path"]),
            redis_url=values["redis_url"] or cls.redis_url,
            kubeconfig=values["kubeconfig"],
            health_endpoint=values["health_endpoint"] or cls.health_endpoint,
        )
