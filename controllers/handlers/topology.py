"""Keep the node's in-memory view of its links and streams current from the watch events.

Key delivery routes every request from this view, and the peer registry (who may talk to us on
the channel, and whom we trust) follows the QKDLinks' specs. Status-only changes of a QKDLink do
not touch the registry, which reads the peers' CA Secrets; they reach routing, whose K packet
carries each link's cost.
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers import metrics
from controllers.node import NodeRuntime
from qss_api import KEYSTREAMS, QKDLINKS


@kopf.on.event(QKDLINKS)
async def qkdlink_event(
    event: kopf.RawEvent, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    node: NodeRuntime = memo["node"]
    if event["type"] == "DELETED":
        node.routing.link_changed(name, None)
        await node.links_changed(name, None)
        metrics.link_gone(name)
        return
    node.routing.link_changed(name, body)  # its cost (status) feeds the K packet
    known = node.links.get(name)
    if known is None or known.get("spec") != body.get("spec"):
        await node.links_changed(name, dict(body))


@kopf.on.event(KEYSTREAMS)
async def keystream_event(
    event: kopf.RawEvent, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    node: NodeRuntime = memo["node"]
    if event["type"] == "DELETED":
        node.topology.forget_stream(name)
    else:
        node.topology.update_stream(body)
