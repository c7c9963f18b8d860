"""The sidecar's settings: one frozen dataclass, read once by ``sidecar.main`` from the
environment the webhook gave the container (the names are in ``qss_api.sidecar``).

Nothing else reads ``os.environ``. A value the sidecar cannot work with stops it at start with a
message naming the variable (the webhook never writes one; a hand-edited pod might).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from qss_api import sidecar as names
from qss_api.wire import SAE_ID_PATTERN

Role = Literal["master", "slave"]

_SAE_ID = re.compile(SAE_ID_PATTERN)
_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# The loopback 014 endpoint is for the pod's own containers only.
LISTEN_HOST: Final = "127.0.0.1"


class SettingsError(ValueError):
    """A setting the sidecar cannot run with; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class SidecarSettings:
    role: Role
    # The Sae object (in the pod's namespace) and its SAE ID; the peer's SAE ID.
    sae: str
    sae_id: str
    peer_sae_id: str
    # Master only: what each refresh asks for, and how often.
    key_size: int | None = None
    key_number: int | None = None
    refresh_seconds: float | None = None
    # Keys kept in the volume; the oldest go first.
    max_keys: int = 10
    keys_dir: Path = Path(names.DEFAULT_KEYS_DIR)
    credentials_dir: Path = Path(names.CREDENTIALS_DIR)
    # The node's ETSI 014 API, where the loopback endpoint forwards to.
    key_api_url: str = "https://kube-qss.kube-qss-system.svc:9443"
    listen_port: int = names.DEFAULT_KEY_API_PORT
    # Prometheus /metrics on all of the pod's addresses; None: not served.
    metrics_port: int | None = None
    # The pod the sidecar runs in: KeyRequests it creates or claims are owned by it.
    pod_name: str
    pod_namespace: str
    pod_uid: str
    # None: the sidecar's service-account token (TOKEN_DIR).
    kubeconfig: str | None = None
    # The API server in a pod, from KUBERNETES_SERVICE_HOST and _PORT (the kubelet sets them).
    api_server: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ("master", "slave"):
            raise SettingsError(f"{names.ENV_ROLE} must be master or slave, not {self.role!r}")
        for var, value in (
            (names.ENV_SAE_ID, self.sae_id),
            (names.ENV_PEER_SAE_ID, self.peer_sae_id),
        ):
            if not _SAE_ID.match(value):
                raise SettingsError(f"{var}={value!r} is not an SAE ID")
        if not _UID.match(self.pod_uid):
            raise SettingsError(f"{names.ENV_POD_UID}={self.pod_uid!r} is not a pod UID")
        if not self.sae or not self.pod_name or not self.pod_namespace:
            raise SettingsError(
                f"{names.ENV_SAE}, {names.ENV_POD_NAME} and {names.ENV_POD_NAMESPACE} must be set"
            )
        if self.role == "master":
            if self.key_size is None or self.key_size <= 0 or self.key_size % 8:
                raise SettingsError(f"{names.ENV_KEY_SIZE} must be a positive multiple of 8")
            if self.key_number is None or not 1 <= self.key_number <= self.max_keys:
                raise SettingsError(
                    f"{names.ENV_KEY_NUMBER} must be from 1 to "
                    f"{names.ENV_MAX_KEYS} ({self.max_keys})"
                )
            if self.refresh_seconds is None or not (
                math.isfinite(self.refresh_seconds) and self.refresh_seconds > 0
            ):
                raise SettingsError(f"{names.ENV_REFRESH_SECONDS} must be a positive number")
        if self.max_keys < 1:
            raise SettingsError(f"{names.ENV_MAX_KEYS} must be at least 1")
        if not self.keys_dir.is_absolute():
            raise SettingsError(f"{names.ENV_KEYS_DIR} must be an absolute path")
        if not 0 <= self.listen_port <= 65535:
            raise SettingsError(f"{names.ENV_LISTEN_PORT} must be a TCP port")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"{names.ENV_METRICS_PORT} must be a TCP port")
        if self.metrics_port is not None and self.metrics_port == self.listen_port != 0:
            raise SettingsError(
                f"{names.ENV_METRICS_PORT} must differ from {names.ENV_LISTEN_PORT}"
            )
        if not self.key_api_url.startswith("https://"):
            raise SettingsError(f"{names.ENV_KEY_API_URL} must be an https:// URL (mutual TLS)")

    @property
    def request_timeout_seconds(self) -> int:
        """How long a master KeyRequest may wait for keys (timeoutSeconds): one refresh, but at
        least 5 s (a peer SAE just registered takes a moment to be known) and at most 30 s."""
        refresh = self.refresh_seconds or 30.0
        return max(5, min(30, int(refresh)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SidecarSettings:
        def need(var: str) -> str:
            value = environ.get(var, "").strip()
            if not value:
                raise SettingsError(f"{var} is not set; the kube-qss webhook sets it")
            return value

        def number(var: str, convert: type[int] | type[float]) -> int | float | None:
            text = environ.get(var, "").strip()
            if not text:
                return None
            try:
                return convert(text)
            except ValueError:
                raise SettingsError(f"{var}={text!r} is not a number") from None

        role = need(names.ENV_ROLE)
        if role not in ("master", "slave"):
            raise SettingsError(f"{names.ENV_ROLE} must be master or slave, not {role!r}")
        key_size = number(names.ENV_KEY_SIZE, int)
        key_number = number(names.ENV_KEY_NUMBER, int)
        max_keys = number(names.ENV_MAX_KEYS, int)
        port = number(names.ENV_LISTEN_PORT, int)
        metrics_port = number(names.ENV_METRICS_PORT, int)
        return cls(
            role=role,  # type: ignore[arg-type]  # checked above
            sae=need(names.ENV_SAE),
            sae_id=need(names.ENV_SAE_ID),
            peer_sae_id=need(names.ENV_PEER_SAE_ID),
            key_size=None if key_size is None else int(key_size),
            key_number=None if key_number is None else int(key_number),
            refresh_seconds=number(names.ENV_REFRESH_SECONDS, float),
            max_keys=10 if max_keys is None else int(max_keys),
            keys_dir=Path(environ.get(names.ENV_KEYS_DIR) or names.DEFAULT_KEYS_DIR),
            credentials_dir=Path(environ.get(names.ENV_CREDENTIALS_DIR) or names.CREDENTIALS_DIR),
            key_api_url=environ.get(names.ENV_KEY_API_URL) or cls.key_api_url,
            listen_port=names.DEFAULT_KEY_API_PORT if port is None else int(port),
            metrics_port=None if metrics_port is None else int(metrics_port),
            pod_name=need(names.ENV_POD_NAME),
            pod_namespace=need(names.ENV_POD_NAMESPACE),
            pod_uid=need(names.ENV_POD_UID),
            kubeconfig=environ.get("KUBECONFIG") or None,
            api_server=_api_server(environ),
        )


def _api_server(environ: Mapping[str, str]) -> str | None:
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
