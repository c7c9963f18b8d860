"""The QKDM's Prometheus metrics, served on its health port (``controllers.health``).

One QKDM serves one end of one key stream. Everything is read from its ``Pump`` when Prometheus
scrapes (the pump counts in plain fields, as the rest of its state): the store's counts of
keys by state (available, pooled, held for slave SAEs, in a request), consumed and dropped as
the pump last read them, the buffer's capacity, what it
ingested, chunks the device dropped before they were fetched, device key streams replaced (KSID
changes) and those the device aborted for QBER. ``controllers.qkdm.main`` registers the pumps
with ``watch_pump``. Labels: the KeyStream's name and this node's ID; never a KSID's keys, key
IDs or chunk IDs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controllers.qkdm.pump import Pump

REGISTRY: Final = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_LABELS: Final = ["stream", "node"]


class PumpCollector(Collector):
    def __init__(self) -> None:
        self.pumps: dict[str, Pump] = {}

    def collect(self) -> Iterator[Metric]:
        keys = GaugeMetricFamily(
            "qss_stream_keys",
            "Keys (chunks) of this stream end by state, as the QKDM last read the store: "
            "available (in the buffer), pooled (in this node's pools for SAE pairs), "
            "held_for_slave (held here for slave SAEs of the peer's pools), in_request (set "
            "aside for a request being written).",
            labels=[*_LABELS, "state"],
        )
        dropped_keys = CounterMetricFamily(
            "qss_stream_dropped_keys",
            "Keys (chunks) of this stream end destroyed undelivered (held past their lease, "
            "or never stored by the peer).",
            labels=_LABELS,
        )
        capacity = GaugeMetricFamily(
            "qss_stream_capacity_keys",
            "The stream end's buffer capacity K, in keys (chunks).",
            labels=_LABELS,
        )
        consumed = CounterMetricFamily(
            "qss_stream_consumed_keys",
            "Keys (chunks) delivered and consumed from this stream end since it was created.",
            labels=_LABELS,
        )
        ingested_bits = CounterMetricFamily(
            "qss_stream_ingested_bits",
            "Key bits taken from the QKD device into the store by this QKDM.",
            labels=_LABELS,
        )
        ingested_chunks = CounterMetricFamily(
            "qss_stream_ingested_chunks",
            "Key chunks taken from the QKD device into the store by this QKDM.",
            labels=_LABELS,
        )
        dropped = CounterMetricFamily(
            "qss_stream_chunks_expired",
            "Chunks the QKD device dropped (expired) before this QKDM fetched them.",
            labels=_LABELS,
        )
        replaced = CounterMetricFamily(
            "qss_stream_ksid_changes",
            "Device key streams replaced by the next KSID (device restart or abort).",
            labels=_LABELS,
        )
        aborts = CounterMetricFamily(
            "qss_stream_qber_aborts",
            "Device key streams aborted by the device because the QBER was too high.",
            labels=_LABELS,
        )
        up = GaugeMetricFamily(
            "qss_stream_up",
            "1 while keys flow on this stream end (no fault, stream open), else 0.",
            labels=_LABELS,
        )
        for name, pump in sorted(self.pumps.items()):
            labels = [name, pump.node_id]
            obs = pump.observation()
            if pump.counts is not None:
                counts = pump.counts
                for state, value in (
                    ("available", counts.available),
                    ("pooled", counts.pooled),
                    ("held_for_slave", counts.mirrored),
                    ("in_request", counts.holding),
                ):
                    keys.add_metric([*labels, state], value)
                consumed.add_metric(labels, counts.consumed)
                dropped_keys.add_metric(labels, counts.dropped)
            capacity.add_metric(labels, obs.capacity)
            ingested_bits.add_metric(labels, pump.bits_stored)
            ingested_chunks.add_metric(labels, pump.chunks_stored)
            dropped.add_metric(labels, pump.skipped)
            replaced.add_metric(labels, pump.replaced)
            aborts.add_metric(labels, pump.aborted)
            up.add_metric(labels, 1 if obs.fault is None and obs.opened and obs.flowing else 0)
        yield from (keys, capacity, consumed, dropped_keys, ingested_bits, ingested_chunks)
        yield dropped
        yield from (replaced, aborts, up)


PUMPS: Final = PumpCollector()
REGISTRY.register(PUMPS)


def watch_pump(pump: Pump) -> None:
    PUMPS.pumps[pump.stream_name] = pump


def forget_pump(pump: Pump) -> None:
    if PUMPS.pumps.get(pump.stream_name) is pump:
        del PUMPS.pumps[pump.stream_name]
