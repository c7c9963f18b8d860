"""The contract between the webhook and the key sidecar it injects: names only.

The webhook (``webhooks``) writes a sidecar container with these volume names, paths and
environment variables into a pod; the sidecar (``sidecar.settings``) reads the same variables
back. Both import them from here, so the two cannot drift apart.
"""

from typing import Final

# The native sidecar (an init container with restartPolicy Always) the webhook injects.
CONTAINER_NAME: Final = "qss-sidecar"

# The memory-backed emptyDir holding the key files: read-write in the sidecar, read-only in the
# app containers.
KEYS_VOLUME: Final = "qss-keys"
DEFAULT_KEYS_DIR: Final = "/var/run/qss/keys"
# The Sae's credentials Secret (client certificate, key, CA), mounted into the sidecar only.
CREDENTIALS_VOLUME: Final = "qss-credentials"
CREDENTIALS_DIR: Final = "/var/run/qss/credentials"
# A service-account token for the sidecar only (the pod's own token mounts were added before the
# webhook ran and do not reach the injected container), where in-cluster clients look for it.
TOKEN_VOLUME: Final = "qss-sidecar-token"
TOKEN_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# The sidecar's ETSI GS QKD 014 endpoint on the pod's loopback (plain HTTP: only containers of
# the pod share that loopback).
# Under the key directory: there once the sidecar has written the first keys (the snapshot link
# and its index). The startup probe tests for it; the sidecar's volume writes it.
READY_FILE: Final = "..data/index.json"

DEFAULT_KEY_API_PORT: Final = 8014
# The sidecar's Prometheus /metrics on the pod's IP, when the webhook is configured with a port
# for it (QSS_SIDECAR_METRICS_PORT); a PodMonitor finds it by this container port name.
METRICS_PORT_NAME: Final = "qss-metrics"

# Environment variables the webhook sets and the sidecar reads (``SidecarSettings.from_env``).
ENV_ROLE: Final = "QSS_SIDECAR_ROLE"  # master or slave
ENV_SAE: Final = "QSS_SIDECAR_SAE"  # the Sae object's name (pod's namespace)
ENV_SAE_ID: Final = "QSS_SIDECAR_SAE_ID"  # the Sae's SAE ID
ENV_PEER_SAE_ID: Final = "QSS_SIDECAR_PEER_SAE_ID"
ENV_KEY_SIZE: Final = "QSS_SIDECAR_KEY_SIZE"  # bits, master only
ENV_KEY_NUMBER: Final = "QSS_SIDECAR_KEY_NUMBER"  # keys per refresh, master only
ENV_MAX_KEYS: Final = "QSS_SIDECAR_MAX_KEYS"
ENV_REFRESH_SECONDS: Final = "QSS_SIDECAR_REFRESH_SECONDS"  # master only
ENV_KEYS_DIR: Final = "QSS_SIDECAR_KEYS_DIR"
ENV_CREDENTIALS_DIR: Final = "QSS_SIDECAR_CREDENTIALS_DIR"
ENV_KEY_API_URL: Final = "QSS_SIDECAR_KEY_API_URL"  # the node's ETSI 014 API
ENV_LISTEN_PORT: Final = "QSS_SIDECAR_LISTEN_PORT"  # the loopback 014 endpoint
ENV_METRICS_PORT: Final = "QSS_SIDECAR_METRICS_PORT"  # /metrics on all addresses; unset: none
ENV_POD_NAME: Final = "QSS_POD_NAME"
ENV_POD_NAMESPACE: Final = "QSS_POD_NAMESPACE"
ENV_POD_UID: Final = "QSS_POD_UID"
