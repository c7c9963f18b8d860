"""The webhook's settings: one frozen dataclass, read once from the environment by
``webhooks.main`` (nothing else reads ``os.environ``).

Every variable is optional; the defaults fit ``kustomize/webhook``. Durations are seconds.

=====================================  ==============================================
variable                               setting
=====================================  ==============================================
``QSS_WEBHOOK_NAMESPACE``              namespace (the Deployment sets it from the pod)
``QSS_WEBHOOK_ADDRESS``                host:port the HTTPS server listens on
``QSS_WEBHOOK_SERVICE``                the Service in front of it (certificate names)
``QSS_WEBHOOK_DNS_NAMES``, ``_IPS``    extra names in the serving certificate (comma lists)
``QSS_WEBHOOK_CONFIGURATION``          the MutatingWebhookConfiguration to keep caBundle in
``QSS_WEBHOOK_TLS_SECRET``             the Secret holding the CA and serving certificate
``QSS_WEBHOOK_CERT_DIR``               use tls.crt/tls.key from here instead (cert-manager)
``QSS_WEBHOOK_CHECK_INTERVAL``         how often certificates are checked
``QSS_WEBHOOK_CA_VALIDITY``, ...       ``_CA_RENEW_BEFORE``, ``_SERVING_VALIDITY``,
                                       ``_SERVING_RENEW_BEFORE``, ``_OVERLAP``: rotation
``QSS_WEBHOOK_SKIP_NAMESPACES``        more namespaces whose pods are never touched
``QSS_SIDECAR_IMAGE``                  the image injected sidecars run
``QSS_SIDECAR_IMAGE_PULL_POLICY``      its imagePullPolicy
``QSS_SIDECAR_KEY_API_URL``            the node's ETSI 014 API, for the sidecars
``QSS_SIDECAR_KEY_API_PORT``           the sidecars' loopback 014 port
``QSS_SIDECAR_METRICS_PORT``           the sidecars' /metrics port (unset: no sidecar metrics)
``KUBECONFIG``                         kubeconfig (default: the pod's service account)
=====================================  ==============================================
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from qss_api import NODE_ID_PATTERN
from webhooks.injection import InjectorConfig
from webhooks.tls import Lifetimes, ServingNames, TlsError

_DNS_LABEL = re.compile(NODE_ID_PATTERN)
SYSTEM_NAMESPACES: Final = frozenset({"kube-system", "kube-public", "kube-node-lease"})


class SettingsError(ValueError):
    """A setting the webhook cannot run with; the message names the variable and the fix."""


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    # Where the webhook runs; its own pods there are never touched, its TLS Secret lives there.
    namespace: str = "kube-qss-system"
    # The API server calls the webhook through its Service on 443 -> this port.
    host: str = "0.0.0.0"
    port: int = 9443
    # The MutatingWebhookConfiguration whose caBundle the webhook keeps current.
    configuration: str = "kube-qss-webhook"
    # Where the CA and the serving certificate are kept, shared by replicas and restarts.
    tls_secret: str = "kube-qss-webhook-tls"
    # Certificates written by cert-manager instead of the webhook's own CA.
    cert_dir: Path | None = None
    # The names the API server dials: <service>.<namespace>.svc (and any extra ones).
    serving: ServingNames = field(
        default_factory=lambda: ServingNames(dns_names=("kube-qss-webhook.kube-qss-system.svc",))
    )
    # A rotation step is seen within this; it must stay below the overlap.
    check_interval: float = 60.0
    lifetimes: Lifetimes = field(default_factory=Lifetimes)
    injector: InjectorConfig = field(
        default_factory=lambda: InjectorConfig(
            sidecar_image="kube-qss:0.1.0", skip_namespaces=SYSTEM_NAMESPACES | {"kube-qss-system"}
        )
    )
    # None: the pod's service account.
    kubeconfig: str | None = None
    # On SIGTERM, reviews in flight get this long.
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.namespace):
            raise SettingsError(f"QSS_WEBHOOK_NAMESPACE {self.namespace!r} is not a namespace name")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} of QSS_WEBHOOK_ADDRESS is not a TCP port")
        if not (math.isfinite(self.check_interval) and self.check_interval > 0):
            raise SettingsError("QSS_WEBHOOK_CHECK_INTERVAL must be a positive number of seconds")
        if self.check_interval >= self.lifetimes.overlap.total_seconds():
            raise SettingsError(
                "QSS_WEBHOOK_CHECK_INTERVAL must be shorter than QSS_WEBHOOK_OVERLAP, so every "
                "replica takes each step of a CA change before the next"
            )
        if self.namespace not in self.injector.skip_namespaces:
            raise SettingsError("the webhook's own namespace must be among the skipped ones")
        if not 1 <= self.injector.key_api_port <= 65535:
            raise SettingsError("QSS_SIDECAR_KEY_API_PORT must be a TCP port (1-65535)")
        metrics_port = self.injector.metrics_port
        if metrics_port is not None and not 1 <= metrics_port <= 65535:
            raise SettingsError("QSS_SIDECAR_METRICS_PORT must be a TCP port (1-65535)")
        if metrics_port == self.injector.key_api_port:
            raise SettingsError(
                "QSS_SIDECAR_METRICS_PORT must differ from QSS_SIDECAR_KEY_API_PORT"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookSettings:
        def get(name: str, default: str) -> str:
            return environ.get(name, "").strip() or default

        def listed(name: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in environ.get(name, "").split(",") if x.strip())

        def seconds(name: str, default: float) -> float:
            text = environ.get(name, "").strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                raise SettingsError(f"{name}={text!r} is not a number of seconds") from None
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{name}={text!r} must be a positive number of seconds")
            return value

        namespace = get("QSS_WEBHOOK_NAMESPACE", cls.namespace)
        service = get("QSS_WEBHOOK_SERVICE", "kube-qss-webhook")
        address = get("QSS_WEBHOOK_ADDRESS", f"{cls.host}:{cls.port}")
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"QSS_WEBHOOK_ADDRESS {address!r} is not host:port")
        defaults = Lifetimes()

        def span(name: str, default: dt.timedelta) -> dt.timedelta:
            return dt.timedelta(seconds=seconds(name, default.total_seconds()))

        try:
            lifetimes = Lifetimes(
                ca_validity=span("QSS_WEBHOOK_CA_VALIDITY", defaults.ca_validity),
                ca_renew_before=span("QSS_WEBHOOK_CA_RENEW_BEFORE", defaults.ca_renew_before),
                serving_validity=span("QSS_WEBHOOK_SERVING_VALIDITY", defaults.serving_validity),
                serving_renew_before=span(
                    "QSS_WEBHOOK_SERVING_RENEW_BEFORE", defaults.serving_renew_before
                ),
                overlap=span("QSS_WEBHOOK_OVERLAP", defaults.overlap),
            )
            serving = ServingNames(
                dns_names=(f"{service}.{namespace}.svc", *listed("QSS_WEBHOOK_DNS_NAMES")),
                ips=listed("QSS_WEBHOOK_IPS"),
            )
        except TlsError as exc:
            raise SettingsError(f"webhook TLS settings: {exc}") from None
        injector = InjectorConfig(
            sidecar_image=get("QSS_SIDECAR_IMAGE", "kube-qss:0.1.0"),
            image_pull_policy=get("QSS_SIDECAR_IMAGE_PULL_POLICY", "IfNotPresent"),
            key_api_url=get("QSS_SIDECAR_KEY_API_URL", InjectorConfig.key_api_url),
            key_api_port=_port(
                "QSS_SIDECAR_KEY_API_PORT",
                get("QSS_SIDECAR_KEY_API_PORT", str(InjectorConfig.key_api_port)),
            ),
            metrics_port=(
                _port("QSS_SIDECAR_METRICS_PORT", metrics)
                if (metrics := get("QSS_SIDECAR_METRICS_PORT", ""))
                else None
            ),
            skip_namespaces=SYSTEM_NAMESPACES
            | {namespace}
            | set(listed("QSS_WEBHOOK_SKIP_NAMESPACES")),
        )
        cert_dir = environ.get("QSS_WEBHOOK_CERT_DIR", "").strip()
        return cls(
            namespace=namespace,
            host=host,
            port=int(port),
            configuration=get("QSS_WEBHOOK_CONFIGURATION", cls.configuration),
            tls_secret=get("QSS_WEBHOOK_TLS_SECRET", cls.tls_secret),
            cert_dir=Path(cert_dir) if cert_dir else None,
            serving=serving,
            check_interval=seconds("QSS_WEBHOOK_CHECK_INTERVAL", cls.check_interval),
            lifetimes=lifetimes,
            injector=injector,
            kubeconfig=environ.get("KUBECONFIG") or None,
        )


def _port(name: str, text: str) -> int:
    if not text.isdigit():
        raise SettingsError(f"{name} {text!r} is not a port number")
    return int(text)
