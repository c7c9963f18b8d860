"""Which extended resources the plugin offers: one per QKD link, so a pod asks for its own link.

A QKD module (QKDM) serves one key stream, which flows over one link; it must get that link's
device and no other. The kubelet cannot choose by pod (Allocate and GetPreferredAllocation never
see the pod), so the plugin offers each link's devices under a resource of their own,
``qss.dev/qkd-<link>`` (``qss_api.qkd_resource``), served on its own socket and registered on its
own; devices of no known link (a discovery rule without ``link``) are offered as plain
``qss.dev/qkd``. ``main`` computes the list once from the configuration with
:func:`resources_for`; a link whose name cannot be part of a resource name is a configuration
error at start.
"""

import re
from dataclasses import dataclass

from device_plugin.config import ConfigError, DeviceConfig
from qss_api import qkd_resource

# The kubelet's extended resource names: "<domain>/<name>", name a qualified name of at most 63.
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, kw_only=True)
class Resource:
    """One extended resource: its name, the socket it is served on, and its link's devices."""

    name: str
    socket_name: str
    link: str


def resources_for(config: DeviceConfig, *, prefix: str, socket_prefix: str) -> list[Resource]:
    """The resources for every link named in ``config``, sorted by link."""
    links = {entry.link for entry in config.devices} | {rule.link for rule in config.discover}
    resources = []
    for link in sorted(links):
        name = qkd_resource(link, prefix=prefix)
        if not _QUALIFIED_NAME.fullmatch(name.partition("/")[2]):
            raise ConfigError(
                f"device config: link {link!r} gives the resource name {name!r}, which the "
                "kubelet refuses; name links with letters, digits, '-', '_' and '.', keeping "
                f"'{name.partition('/')[2].removesuffix(link)}<link>' within 63 characters"
            )
        socket_name = f"{socket_prefix}-{link}.sock" if link else f"{socket_prefix}.sock"
        resources.append(Resource(name=name, socket_name=socket_name, link=link))
    return resources
