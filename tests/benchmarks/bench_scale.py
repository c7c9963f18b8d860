"""Scale: node-a's controller with 10,000 KeyRequests and 1,000 Sae objects, beside none.

Starts its own two-node network (``bench_keyrequest.bench_network``) and measures node-a's
controller twice, first with only the benchmark's two SAEs, then after it served 10,000 real
KeyRequests (1 x 128 bit each, all Ready, with their Secrets on both nodes) and made 1,000 more
Saes Ready (credentials issued) in namespace ``bench-scale``:

- memory: the controller process's resident set (VmRSS), after serving;
- one request's latency: a KeyRequest of 1 x 128 bit, apply -> Ready seen in a watch (median
  of a few, sequential), each checked as in ``bench_keyrequest`` (keys alike in both Secrets);
- restart to ready: the controller killed (SIGKILL) and started again; seconds from the start
  until a KeyRequest created at that moment (its timeoutSeconds long enough to outlast the
  start) is seen Ready. Should one fail with UnknownSae anyway (its timeout passed before the
  controller had listed the Saes), another is created at once; the notes count those.

``python -m tests.benchmarks.bench_scale [--scale F]`` (F scales the object counts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from controllers.kube import connect
from qss_api import GROUP, KEYREQUESTS, SAES, VERSION
from tests.benchmarks.bench_keyrequest import (
    NS_A,
    SAE_A,
    SAE_B,
    A,
    B,
    Watches,
    bench_network,
    fill_buffers,
    keyrequest_round_trip,
    read_json,
    start_watches,
)
from tests.benchmarks.report import Result, machine_load, table
from tests.cluster.network import QssNetwork

KEYREQUESTS_COUNT = 10_000
SAES_COUNT = 1_000
NS_SCALE = "bench-scale"
LATENCY_SAMPLES = 7
CREATE_IN_FLIGHT = 16
POPULATE_TIMEOUT = 1800.0
RESTART_TIMEOUT = 600.0
READY_TIMEOUT = 120.0


@dataclass
class State:
    """The figures of node-a's controller in one state (with no objects, or with many)."""

    rss_mib: float = 0.0
    latency_s: list[float] = field(default_factory=list)
    restart: Restart | None = None
    load: list[str] = field(default_factory=list)

    @property
    def restart_seconds(self) -> float:
        assert self.restart is not None
        return self.restart.seconds

    @property
    def unknown_sae(self) -> int:
        assert self.restart is not None
        return self.restart.unknown_sae


def rss_mib(network: QssNetwork) -> float:
    proc = network.nodes[A].controller
    if proc is None or proc.poll() is not None:
        raise RuntimeError("node-a's controller is not running")
    status = Path(f"/proc/{proc.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def latency(api: client.ApiClient, watches: Watches) -> list[float]:
    return [
        (
            await keyrequest_round_trip(api, watches, number=1, size=128, timeout=READY_TIMEOUT)
        ).seconds
        for _ in range(LATENCY_SAMPLES)
    ]


async def restart(network: QssNetwork, api: client.ApiClient, watches: Watches) -> Restart:
    """Kill node-a's controller and start it again; create KeyRequests one after the other
    from that moment until one is Ready. A request the new controller sees before it knows the
    SAE fails with UnknownSae (counted); any other failure ends the benchmark."""
    network.kill_controller(A)
    started = time.perf_counter()
    network.start_controller(network.nodes[A])
    unknown_sae = 0
    while True:
        created = time.perf_counter()
        try:
            served = await keyrequest_round_trip(
                api,
                watches,
                number=1,
                size=128,
                timeout=RESTART_TIMEOUT,
                request_timeout_seconds=int(RESTART_TIMEOUT),
            )
        except RuntimeError as exc:
            if "UnknownSae" not in str(exc) or created - started > RESTART_TIMEOUT:
                raise
            unknown_sae += 1
            continue
        return Restart(seconds=created + served.seconds - started, unknown_sae=unknown_sae)


@dataclass(frozen=True)
class Restart:
    seconds: float  # controller start -> a request created after it seen Ready
    unknown_sae: int  # requests created after the start that failed with UnknownSae


async def measure_state(network: QssNetwork, api: client.ApiClient, watches: Watches) -> State:
    state = State(load=[machine_load()])
    state.latency_s = await latency(api, watches)
    state.rss_mib = rss_mib(network)
    state.restart = await restart(network, api, watches)
    state.load.append(machine_load())
    return state


async def create_saes(api: client.ApiClient, count: int) -> float:
    """Create ``count`` Saes on node-a and wait until all are Ready; the seconds it took."""
    started = time.perf_counter()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    await read_json(
        await core.create_namespace(
            {"metadata": {"name": NS_SCALE}},  # type: ignore[arg-type]  # a plain dict
            _preload_content=False,
        )
    )
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Sae",
                "metadata": {"name": f"scale-sae-{i}"},
                "spec": {"saeID": f"scale-sae-{i}"},
            }
            await read_json(
                await custom.create_namespaced_custom_object(
                    GROUP, VERSION, NS_SCALE, SAES, body, _preload_content=False
                )
            )

    await asyncio.gather(*(worker() for _ in range(CREATE_IN_FLIGHT)))
    deadline = time.monotonic() + POPULATE_TIMEOUT
    while True:
        listed = await read_json(
            await custom.list_namespaced_custom_object(
                GROUP, VERSION, NS_SCALE, SAES, _preload_content=False
            )
        )
        ready = sum(1 for sae in listed["items"] if _ready(sae))
        if ready == count:
            return time.perf_counter() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {ready} of {count} Saes Ready")
        await asyncio.sleep(2)


def _ready(sae: dict[str, Any]) -> bool:
    conditions = (sae.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def create_keyrequests(api: client.ApiClient, watches: Watches, count: int) -> float:
    """Create ``count`` KeyRequests of 1 x 128 bit on node-a, a few in flight, each awaited
    Ready (the status checked); the seconds it took."""
    custom = client.CustomObjectsApi(api)
    remaining = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for _ in remaining:
            name = f"scale-{uuid.uuid4().hex[:12]}"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "KeyRequest",
                "metadata": {"name": name},
                "spec": {"sae": SAE_A, "slaveSaeID": SAE_B, "number": 1, "size": 128},
            }
            await read_json(
                await custom.create_namespaced_custom_object(
                    GROUP, VERSION, NS_A, KEYREQUESTS, body, _preload_content=False
                )
            )
            _, obj = await watches.master.wait(name, READY_TIMEOUT)
            status = obj.get("status") or {}
            if status.get("phase") != "Ready" or status.get("keyCount") != 1:
                raise RuntimeError(f"KeyRequest {name} did not become Ready: {status}")

    await asyncio.gather(*(worker() for _ in range(CREATE_IN_FLIGHT)))
    return time.perf_counter() - started


@dataclass
class Figures:
    none: State
    many: State
    keyrequests: int
    saes: int
    populate_s: dict[str, float]


async def measure(network: QssNetwork, scale: float) -> Figures:
    keyrequests = max(1, int(KEYREQUESTS_COUNT * scale))
    saes = max(1, int(SAES_COUNT * scale))
    await fill_buffers(network)
    api_a = await connect(str(network.nodes[A].cluster.kubeconfig))
    api_b = await connect(str(network.nodes[B].cluster.kubeconfig))
    watches = start_watches(api_a, api_b)
    try:
        await watches.ready()
        # Warm up (the first request may wait for node-a to learn of the slave SAE).
        await keyrequest_round_trip(api_a, watches, number=1, size=128, timeout=READY_TIMEOUT)
        none = await measure_state(network, api_a, watches)
        populate = {
            "saes": await create_saes(api_a, saes),
            "keyrequests": await create_keyrequests(api_a, watches, keyrequests),
        }
        many = await measure_state(network, api_a, watches)
    finally:
        await watches.stop()
        await api_a.close()
        await api_b.close()
    return Figures(none=none, many=many, keyrequests=keyrequests, saes=saes, populate_s=populate)


_LAST_NOTES: list[str] = []


def results(f: Figures) -> list[Result]:
    with_many = f"{f.keyrequests:,} KeyRequests + {f.saes:,} Saes"
    none_is = "the same controller with 1 KeyRequest-serving SAE pair and no other objects"
    _LAST_NOTES[:] = [
        f"scale: populating took {f.populate_s['saes']:.0f} s for {f.saes:,} Saes (to Ready) and"
        f" {f.populate_s['keyrequests']:.0f} s for {f.keyrequests:,} KeyRequests"
        f" ({f.keyrequests / f.populate_s['keyrequests']:.0f}/s, {CREATE_IN_FLIGHT} in flight);"
        f" latency = median of {LATENCY_SAMPLES} sequential 1 x 128-bit requests (with none:"
        f" {', '.join(f'{s * 1000:.0f}' for s in f.none.latency_s)} ms; with many:"
        f" {', '.join(f'{s * 1000:.0f}' for s in f.many.latency_s)} ms); requests created after"
        f" the restart that failed with UnknownSae before one was Ready: {f.none.unknown_sae}"
        f" with none, {f.many.unknown_sae} with many; machine with none:"
        f" {' -> '.join(f.none.load)}; with many: {' -> '.join(f.many.load)};",
    ]
    return [
        Result(
            what=f"controller RSS with {with_many}",
            unit="MiB",
            ours=f.many.rss_mib,
            baseline=f.none.rss_mib,
            baseline_is=none_is,
        ),
        Result(
            what=f"controller restart -> serving a new request, with {with_many}",
            unit="ms",
            ours=f.many.restart_seconds * 1000,
            baseline=f.none.restart_seconds * 1000,
            baseline_is=none_is,
        ),
        Result(
            what=f"KeyRequest 1 x 128 bit apply -> Ready p50, with {with_many}",
            unit="ms",
            ours=statistics.median(f.many.latency_s) * 1000,
            baseline=statistics.median(f.none.latency_s) * 1000,
            baseline_is=none_is,
        ),
    ]


def run(*, scale: float = 1.0) -> list[Result]:
    with bench_network("bench-scale-") as network:
        figures = asyncio.run(measure(network, scale))
    return results(figures)


def notes(*, scale: float = 1.0) -> list[str]:
    return [
        *_LAST_NOTES,
        f"scale: node-a's controller measured (RSS from /proc after serving; restart after"
        f" SIGKILL); two nodes on one machine ({os.cpu_count()} CPUs); lower is better, x ="
        " ours / baseline.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_scale", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="scale the object counts")
    args = parser.parse_args(argv)
    print(table(run(scale=args.scale), notes=notes(scale=args.scale)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
