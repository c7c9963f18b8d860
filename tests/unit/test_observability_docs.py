"""docs/observability.md lists every metric the components export, under the name a scrape
shows (counters with ``_total``), and nothing they do not: the components' registries are read
here with one sample each, as a scrape would see them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from controllers import metrics as controller
from controllers.keystore import StreamCounts
from controllers.qkdm import metrics as qkdm
from controllers.qkdm.pump import Pump
from controllers.routing.stats import RoutingStats
from device_plugin.config import DeviceConfig, DeviceEntry, DeviceKind
from device_plugin.inventory import Inventory
from device_plugin.metrics import Counters
from device_plugin.metrics import registry as device_plugin_registry
from sidecar import metrics as sidecar
from tests.metrics import parse
from webhooks import metrics as webhook

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


class _Routing:
    def __init__(self) -> None:
        self.stats = RoutingStats()

    def route_objects(self) -> dict[str, dict[str, object]]:
        return {}


class _Writer:
    writes = deletes = 0


def _families(registry: CollectorRegistry) -> set[str]:
    page = parse(generate_latest(registry).decode())
    # A counter's _created sample is its start time, not a metric of ours to document.
    names = {
        re.sub(r"_(bucket|count|sum)$", "", s.name)
        for s in page.samples
        if not s.name.endswith("_created")
    }
    return {n for n in names if n.startswith("qss_")}


async def _exported() -> set[str]:
    routing = _Routing()
    routing.stats.drop("node-b", "malformed", "", 0.0)
    controller.watch_routing(routing, _Writer())
    pump: Any = Pump(node_id="n", stream_name="s", kube=None, store=None, device=None)  # type: ignore[arg-type]
    pump.counts = StreamCounts(
        capacity=10,
        chunk_bytes=32,
        added=7,
        available=1,
        pooled=1,
        mirrored=1,
        holding=1,
        consumed=1,
        dropped=2,
    )
    qkdm.watch_pump(pump)
    device = DeviceEntry(id="null0", kind=DeviceKind.HARDWARE, path="/dev/null", link="a-b")
    inventory = Inventory(
        config=DeviceConfig(devices=(device,), discover=()), host_root=Path("/"), probe_timeout=1
    )
    await inventory.refresh()
    try:
        found = set()
        for registry in (
            controller.REGISTRY,
            qkdm.REGISTRY,
            webhook.REGISTRY,
            sidecar.REGISTRY,
            device_plugin_registry(
                inventory=inventory, counters=Counters(registered={"qss.dev/qkd-a-b"})
            ),
        ):
            found |= _families(registry)
        return found
    finally:
        qkdm.forget_pump(pump)


async def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    # Labelled metrics show only once a series exists: give each one.
    controller.keys_served(
        interface="etsi014", operation="status", master_sae="a", slave_sae="b", keys=1, seconds=0
    )
    controller.request_failed(interface="etsi014", operation="status", reason="Unauthorized")
    controller.link_sampled(link="l", peer="p", state="Up", cost=1.0, available=0, trusted=True)
    controller.block_agreed(peer="p", master_sae="a", slave_sae="b", keys=1)
    controller.pool_given_back(peer="p", master_sae="a", slave_sae="b", keys=1)
    controller.swept(stream="s", blocks_expired=1, slave_keys_expired=1)
    controller.slave_keys_held(peer="p", master_sae="a", slave_sae="b", keys=1)
    controller.slave_backlog(stream="s")
    controller.relayed(role="source", keys=1)
    controller.relay_aborted(role="source", reason="PeerUnreachable")
    controller.POOLS.levels = {("p", "a", "b"): 1}
    webhook.reviewed("allowed", 0.0)
    webhook.refused(400)
    sidecar.failed("ApiError")
    try:
        exported = await _exported()
    finally:
        controller.link_gone("l")
        controller.POOLS.levels = {}
    documented = set(re.findall(r"^\| `(qss_[a-z_]+)`", DOCS.read_text(), flags=re.MULTILINE))
    assert exported - documented == set(), "exported but not documented"
    assert documented - exported == set(), "documented but not exported"
