"""The names of kube-qss's API: group, version, kinds, labels and annotation keys.

This is the one package that every component (controllers, webhooks, sidecar, device plugin)
may import; it holds names; in ``qss_api.wire``, the base of the wire-message types that two
components must read alike; and the QKD device protocol that the QKDM (controllers) and the
simulated device and device plugin (device_plugin) both speak: its messages
(``qss_api.qkd004``) and its one client (``qss_api.qkd004_client``); and the few mechanisms
two components would otherwise write twice: how certificates are built
(``qss_api.certificates``), how an HTTP server answers errors (``qss_api.http_errors``) and
how a command logs and stops (``qss_api.process``). Nothing else, so the components stay
independent.
The CRDs in ``crds/*.yaml`` are the source of truth for the schemas; these constants must match
them (a unit test checks that they do).
"""

from typing import Final

GROUP: Final = "qss.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "qss"

# Plural resource names, as kopf and the REST paths use them.
QKDLINKS: Final = "qkdlinks"
KEYSTREAMS: Final = "keystreams"
SAES: Final = "saes"
KEYREQUESTS: Final = "keyrequests"
ROUTES: Final = "routes"

# Kinds, as manifests name them.
KIND_QKDLINK: Final = "QKDLink"
KIND_KEYSTREAM: Final = "KeyStream"
KIND_SAE: Final = "Sae"
KIND_KEYREQUEST: Final = "KeyRequest"
KIND_ROUTE: Final = "Route"

# Every kind, plural -> (kind, namespaced).
RESOURCES: Final = {
    QKDLINKS: (KIND_QKDLINK, False),
    KEYSTREAMS: (KIND_KEYSTREAM, False),
    SAES: (KIND_SAE, True),
    KEYREQUESTS: (KIND_KEYREQUEST, True),
    ROUTES: (KIND_ROUTE, False),
}

# A node ID (and a namespace name) is a DNS label, as the QKDLink CRD's peerNodeID pattern says.
NODE_ID_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

# Prefix under which kopf keeps its progress and last-handled-configuration annotations.
KOPF_PREFIX: Final = GROUP

# Labels every object of ours carries (kubebuilder's recommended labels).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "kube-qss"

# Pod opt-in to key delivery: the webhook injects the sidecar into pods with this label.
LABEL_INJECT: Final = f"{GROUP}/inject"
ANNOTATION_PREFIX: Final = f"{GROUP}/"
ANNOTATION_INJECT_STATUS: Final = f"{GROUP}/inject-status"
ANNOTATION_SAE: Final = f"{GROUP}/sae"
ANNOTATION_PEER_SAE: Final = f"{GROUP}/peer-sae"
ANNOTATION_ROLE: Final = f"{GROUP}/role"
ANNOTATION_KEY_SIZE: Final = f"{GROUP}/key-size"
ANNOTATION_KEY_NUMBER: Final = f"{GROUP}/key-number"
ANNOTATION_REFRESH: Final = f"{GROUP}/refresh-interval"
ANNOTATION_MOUNT_PATH: Final = f"{GROUP}/mount-path"
ANNOTATION_MAX_KEYS: Final = f"{GROUP}/max-keys"
# The value of ANNOTATION_INJECT_STATUS once the webhook has injected the sidecar.
INJECT_STATUS_INJECTED: Final = "injected"

# KeyRequests the slave's node creates by itself when a neighbour hands keys over carry this
# label (value "true"); the key sidecar of a slave pod picks them up by it.
LABEL_AUTOMATIC: Final = f"{GROUP}/automatic"
# The entry of a KeyRequest's Secret that holds its keys as an ETSI GS QKD 014 key container.
SECRET_KEYS_JSON: Final = "keys.json"

# The kubelet extended resources under which the device plugin offers QKD devices: one per QKD
# link, ``qss.dev/qkd-<link>`` (the QKDLink's name on that node), so a QKD module asks for its own
# link's device; ``qss.dev/qkd`` alone for devices of no known link.
RESOURCE_QKD_DEVICE: Final = f"{GROUP}/qkd"


def qkd_resource(link: str, *, prefix: str = RESOURCE_QKD_DEVICE) -> str:
    """The extended resource offering the devices of QKD link ``link`` (a QKDLink's name)."""
    return f"{prefix}-{link}" if link else prefix
