"""The Route watch: what the cluster's Route objects hold, for the routing controller's writer.

Routes are written by the routing controller only (``controllers.routing.writer``). This
handler tells the writer every change it sees, so that a Route someone else created, edited or
deleted is put back to what the routing table says (or deleted) at once.
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers.node import NodeRuntime
from qss_api import ROUTES


@kopf.on.event(ROUTES)
async def route_event(
    event: kopf.RawEvent, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    node: NodeRuntime = memo["node"]
    spec = None if event["type"] == "DELETED" else dict(body.get("spec") or {})
    node.route_writer.observe(name, spec)
