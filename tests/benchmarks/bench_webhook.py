"""Pod admission through the injecting webhook: 50 annotated pods created at once.

Starts its own control plane (one kube-apiserver over etcd, ``tests.cluster.localcluster``) and
the webhook as a process registered with it as shipped (``tests.cluster.webhook``: the
configuration of kustomize/webhook, the webhook's own service account and RBAC, its own CA).
Each round creates 50 pods at once that ask for keys (the API server calls the webhook, which
reads their Sae and answers with a patch) and, as the baseline, 50 identical pods without the
label, which the webhook's objectSelector keeps away from it: the API server's own cost of a
pod create on the same machine in the same run. Latency is the client's, from sending the POST
to the stored pod coming back, through one in-process kubernetes_asyncio client with enough
connections for all 50 at once. Pods never run (no kubelet); they are deleted between rounds.

``python -m tests.benchmarks.bench_webhook [--rounds N]``
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from tests.benchmarks.report import Result, table
from tests.cluster.localcluster import ControlPlane, control_plane_binaries, install_crds
from tests.cluster.webhook import apply, start_webhook, wait_for_service_account
from tests.webhook_cases import SAE, SAE_ID, annotated_pod

PODS_AT_ONCE = 50
ONE_BY_ONE = 40
DEFAULT_ROUNDS = 4
WARM_UP_ROUNDS = 1
NAMESPACE = "bench-webhook"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _create_all(core: client.CoreV1Api, pods: list[dict[str, Any]]) -> list[float]:
    async def one(pod: dict[str, Any]) -> float:
        started = time.perf_counter()
        await core.create_namespaced_pod(NAMESPACE, pod)  # type: ignore[arg-type]
        return (time.perf_counter() - started) * 1000

    return list(await asyncio.gather(*(one(p) for p in pods)))


def _batch(*, inject: bool) -> list[dict[str, Any]]:
    pods = []
    for _ in range(PODS_AT_ONCE):
        pod = annotated_pod(f"b-{uuid.uuid4().hex[:10]}")
        if not inject:
            pod = copy.deepcopy(pod)
            del pod["metadata"]["labels"]["qss.dev/inject"]
        pods.append(pod)
    return pods


@dataclass
class Latencies:
    at_once: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    one_by_one: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})


async def _measure(kubeconfig: Path, rounds: int) -> Latencies:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = PODS_AT_ONCE * 2
    out = Latencies()
    async with client.ApiClient(configuration=cfg) as api:
        core = client.CoreV1Api(api)
        for number in range(WARM_UP_ROUNDS + rounds):
            # Alternate which kind goes first, so neither always meets a warmer server.
            order = [True, False] if number % 2 == 0 else [False, True]
            for inject in order:
                latencies = await _create_all(core, _batch(inject=inject))
                if number >= WARM_UP_ROUNDS:
                    out.at_once[inject].extend(latencies)
            await core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0)
        # The same without contention: one pod at a time, alternating kinds.
        for pod in range(ONE_BY_ONE):
            for inject in (pod % 2 == 0, pod % 2 == 1):
                out.one_by_one[inject].extend(await _create_all(core, _batch(inject=inject)[:1]))
        await core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0)
    return out


_NOTES: list[str] = []


def run(rounds: int = DEFAULT_ROUNDS) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="kqss-bench-webhook-") as tmp:
        plane = ControlPlane(state_dir=Path(tmp), bin_dir=control_plane_binaries())
        try:
            cluster = plane.start_cluster("node-a")
            install_crds(cluster)
            start_webhook(plane, cluster)
            cluster.kubectl("create", "namespace", NAMESPACE)
            wait_for_service_account(cluster, NAMESPACE)
            apply(
                cluster,
                {
                    "apiVersion": "qss.dev/v1alpha1",
                    "kind": "Sae",
                    "metadata": {"name": SAE, "namespace": NAMESPACE},
                    "spec": {"saeID": SAE_ID},
                },
            )
            measured = asyncio.run(_measure(cluster.kubeconfig, rounds))
        finally:
            plane.stop()
    injected, plain = measured.at_once[True], measured.at_once[False]
    _NOTES.append(
        f"webhook: {len(injected)} pods asking for keys and {len(plain)} without, "
        f"{PODS_AT_ONCE} created at once per batch, {rounds} rounds after {WARM_UP_ROUNDS} "
        f"warm-up, then {ONE_BY_ONE} of each one at a time"
    )
    at_once = "the same pods without the label (the API server alone), same batches, same run"
    alone = "a pod without the label, one at a time, same run"
    single, single_plain = measured.one_by_one[True], measured.one_by_one[False]
    return [
        Result(
            "pod create via webhook, 50 at once, p50",
            "ms",
            percentile(injected, 0.5),
            percentile(plain, 0.5),
            at_once,
        ),
        Result(
            "pod create via webhook, 50 at once, p99",
            "ms",
            percentile(injected, 0.99),
            percentile(plain, 0.99),
            at_once,
        ),
        Result(
            "pod create via webhook, one at a time, p50",
            "ms",
            percentile(single, 0.5),
            percentile(single_plain, 0.5),
            alone,
        ),
    ]


def notes() -> list[str]:
    return _NOTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args()
    print(table(run(args.rounds), notes=notes()))


if __name__ == "__main__":
    main()
