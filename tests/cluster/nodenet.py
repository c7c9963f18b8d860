"""The network of the local clusters' real nodes: one bridge per harness, one network namespace
per node, and only addresses from 198.18.0.0/15 (RFC 2544, reserved for benchmark networks).

Called by ``tests.cluster.nodes`` (which starts a node's processes inside its namespace) and by
``tests.cluster.localcluster`` (``up``/``down``). One *slot* is one running harness: ``claim``
creates the host bridge ``kqss<n>`` (creating a link is atomic, so two harnesses starting at once
never get the same slot) with address 198.18.(100+n).1/24; the API servers of the harness listen
there. Each node gets a veth pair: one end on the bridge, the other, renamed ``eth0``, in the
node's network namespace ``kqss<n>-<i>`` with address 198.18.(100+n).(10+i) and a default route
via the bridge. Nodes reach each other and the API servers over the bridge (layer 2, so the
host's ``ip_forward`` stays as it is); pods reach the outside only through their node, which
masquerades them.

Address plan of node i in slot n (k = 4n + i, so no two nodes of any harnesses overlap):

    node            198.18.(100+n).(10+i)/24
    pods            198.19.k.0/25      (the node's CNI bridge; host-local IPAM)
    Services        198.19.k.128/25    (the cluster's --service-cluster-ip-range)

The host gets one route per node, 198.19.k.0/24 via the node, so processes on the host (the API
server calling a webhook Service, a test) reach pods and Services. Deleting the bridge and the
namespaces (``release``) removes the veths and those routes with them.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

MAX_SLOTS = 32
MAX_NODES = 4
BRIDGE_PREFIX = "kqss"
HOST_ROUTE_PROTO = 4  # RTPROT_STATIC


@dataclass(frozen=True)
class NodeAddresses:
    """Where one node lives on the network."""

    slot: int
    index: int

    @property
    def netns(self) -> str:
        return f"{BRIDGE_PREFIX}{self.slot}-{self.index}"

    @property
    def netns_path(self) -> str:
        return f"{netns.NETNS_RUN_DIR}/{self.netns}"

    @property
    def host_veth(self) -> str:
        return f"{BRIDGE_PREFIX}{self.slot}v{self.index}"

    @property
    def ip(self) -> str:
        return f"198.18.{100 + self.slot}.{10 + self.index}"

    @property
    def gateway(self) -> str:
        return f"198.18.{100 + self.slot}.1"

    @property
    def _k(self) -> int:
        return MAX_NODES * self.slot + self.index

    @property
    def routed(self) -> ipaddress.IPv4Network:
        """Pods and Services of this node: the range the host routes via the node."""
        return ipaddress.IPv4Network(f"198.19.{self._k}.0/24")

    @property
    def pod_cidr(self) -> str:
        return f"198.19.{self._k}.0/25"

    @property
    def pod_gateway(self) -> str:
        return f"198.19.{self._k}.1"

    @property
    def service_cidr(self) -> str:
        return f"198.19.{self._k}.128/25"

    @property
    def kubernetes_service_ip(self) -> str:
        """The first Service address, which the API server gives Service ``kubernetes``."""
        return f"198.19.{self._k}.129"


@dataclass(frozen=True)
class Slot:
    """One harness's bridge; its nodes are numbered from 0."""

    number: int

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.number}"

    @property
    def host_ip(self) -> str:
        return f"198.18.{100 + self.number}.1"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"198.18.{100 + self.number}.0/24")

    def node(self, index: int) -> NodeAddresses:
        if not 0 <= index < MAX_NODES:
            raise ValueError(f"a harness has at most {MAX_NODES} real nodes")
        return NodeAddresses(slot=self.number, index=index)


def _host_networks(ipr: Any) -> list[ipaddress.IPv4Network]:
    networks = []
    for addr in ipr.get_addr(family=2):
        networks.append(
            ipaddress.IPv4Network(
                f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False
            )
        )
    for route in ipr.get_routes(family=2):
        dst = route.get_attr("RTA_DST")
        if dst:
            networks.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
    return networks


def claim() -> Slot:
    """Create the bridge of the first free slot and give it the slot's host address."""
    with IPRoute() as ipr:
        for number in range(MAX_SLOTS):
            slot = Slot(number)
            if any(net.overlaps(slot.subnet) for net in _host_networks(ipr)):
                continue  # someone else uses these addresses; never share them
            try:
                ipr.link("add", ifname=slot.bridge, kind="bridge")
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    continue
                raise
            (index,) = ipr.link_lookup(ifname=slot.bridge)
            ipr.addr("add", index=index, address=slot.host_ip, prefixlen=24)
            ipr.link("set", index=index, state="up")
            return slot
    raise RuntimeError(
        f"no free slot for a real-node network: bridges {BRIDGE_PREFIX}0..{MAX_SLOTS - 1} exist "
        "or their 198.18.x.0/24 ranges are in use; run `localcluster down` for stale ones"
    )


def add_node(slot: Slot, index: int) -> NodeAddresses:
    """The node's namespace, its veth pair on the slot's bridge, addresses and routes."""
    node = slot.node(index)
    netns.create(node.netns)
    peer = f"{node.host_veth}p"
    with IPRoute() as ipr:
        ipr.link("add", ifname=node.host_veth, kind="veth", peer=peer)
        (host_end,) = ipr.link_lookup(ifname=node.host_veth)
        (bridge,) = ipr.link_lookup(ifname=slot.bridge)
        ipr.link("set", index=host_end, master=bridge, state="up")
        (node_end,) = ipr.link_lookup(ifname=peer)
        ipr.link("set", index=node_end, net_ns_fd=node.netns)
    with NetNS(node.netns) as ns:
        (lo,) = ns.link_lookup(ifname="lo")
        ns.link("set", index=lo, state="up")
        (eth,) = ns.link_lookup(ifname=peer)
        ns.link("set", index=eth, ifname="eth0")
        ns.addr("add", index=eth, address=node.ip, prefixlen=24)
        ns.link("set", index=eth, state="up")
        ns.route("add", dst="0.0.0.0/0", gateway=slot.host_ip)
    with IPRoute() as ipr:
        ipr.route("add", dst=str(node.routed), gateway=node.ip, proto=HOST_ROUTE_PROTO)
    return node


def release(slot_number: int) -> None:
    """Delete the slot's node namespaces and bridge (their veths and routes go with them)."""
    slot = Slot(slot_number)
    for index in range(MAX_NODES):
        node = slot.node(index)
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(node.netns)
        with IPRoute() as ipr, contextlib.suppress(NetlinkError):
            for link in ipr.link_lookup(ifname=node.host_veth):
                ipr.link("del", index=link)
    with IPRoute() as ipr:
        for link in ipr.link_lookup(ifname=slot.bridge):
            ipr.link("del", index=link)


def slot_in_use(slot_number: int) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=Slot(slot_number).bridge))
