"""Keys in pods on real nodes: pod start to first keys, a key rotation, and admission through
the webhook running as pods behind its Service.

Starts the real-node network the tests use (``tests.cluster.realnetwork.deploy``: node-a,
node-b, node-c, kube-qss and its webhook applied with ``kubectl apply -k kustomize/test/<node>``),
SAEs erin (node-a) and frank (node-b), and a slave pod for frank on node-b (carol is node-c's).
Figures, each beside a baseline measured in the same run:

- pod start to first keys: an annotated master pod created until it is Ready (its app starts
  only once the sidecar's startup probe has seen the first keys written), beside the same pod
  without the label (no sidecar, no keys);
- a rotation: a master sidecar's KeyRequest created until its keys are in the files (from the
  sidecar's own log, milliseconds), beside a bare KeyRequest of the same size created until
  Ready, through the API from this process;
- admission: 50 annotated pods at once through the webhook pods (server-side dry run, so that
  none starts; the webhook is called as for a real create), p50 and p99, beside the same pods
  without the label.

``python -m tests.benchmarks.bench_keypods``
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import re
import shutil
import statistics
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch

from qss_api import GROUP, VERSION
from tests.benchmarks.report import Result, table
from tests.cluster.localcluster import Cluster, ControlPlane, control_plane_binaries
from tests.cluster.realnetwork import deploy, served, wait_for
from tests.realnode import keypods

NS = "bench-keys"
MASTER, SLAVE = "erin", "frank"
PODS = 4  # started one after another, of each kind
ROTATIONS = 20
AT_ONCE = 50
ROUNDS = 3
_notes: list[str] = []


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def master_pod(name: str, *, inject: bool = True, refresh: str = "1s") -> dict[str, Any]:
    pod = keypods.key_pod(
        name,
        NS,
        sae=MASTER,
        peer_sae=SLAVE,
        role="master",
        service_account=f"{MASTER}-app",
        annotations={
            "qss.dev/key-size": "256",
            "qss.dev/key-number": "1",
            "qss.dev/refresh-interval": refresh,
        },
    )
    if not inject:
        del pod["metadata"]["labels"]["qss.dev/inject"]
    return pod


def sae(cluster: Cluster, name: str) -> None:
    body = {
        "apiVersion": "qss.dev/v1alpha1",
        "kind": "Sae",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"saeID": name, "registration": "Automatic"},
    }
    cluster.kubectl("create", "namespace", NS)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))
    keypods.app_service_account(cluster, NS, f"{name}-app")


def start_seconds(cluster: Cluster, pod: dict[str, Any]) -> float:
    """Create the pod; seconds until it is Ready; then delete it."""
    name = pod["metadata"]["name"]
    started = time.monotonic()
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod))
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"pod/{name}", "-n", NS, "--timeout=300s", timeout=330
    )
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "pod", name, "-n", NS, "--wait=false")
    return elapsed


_LINE = re.compile(
    r"^(\S+ \S+) INFO sidecar\.agent: (asked for|wrote) \d+ keys (?:in|from) KeyRequest (\S+)"
)


def rotation_ms(log: str) -> list[float]:
    """Per KeyRequest of a master sidecar: from asking to the keys written, from its log."""
    asked: dict[str, dt.datetime] = {}
    out = []
    for line in log.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        at = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
        if match[2] == "asked for":
            asked[match[3]] = at
        elif match[3] in asked:
            out.append((at - asked.pop(match[3])).total_seconds() * 1000)
    return out


async def bare_requests_ms(kubeconfig: Path, count: int) -> list[float]:
    """KeyRequests (1 x 256 bit, erin -> frank) created one at a time until Ready."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    out = []
    async with client.ApiClient(configuration=cfg) as api:
        custom = client.CustomObjectsApi(api)
        for _ in range(count):
            name = f"bare-{uuid.uuid4().hex[:8]}"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "KeyRequest",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"sae": MASTER, "slaveSaeID": SLAVE, "number": 1, "size": 256},
            }
            started = time.perf_counter()
            await custom.create_namespaced_custom_object(GROUP, VERSION, NS, "keyrequests", body)
            async with watch.Watch() as stream:
                async for event in stream.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    NS,
                    "keyrequests",
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=120,
                ):
                    if event["object"].get("status", {}).get("phase") == "Ready":
                        break
            out.append((time.perf_counter() - started) * 1000)
            await custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "keyrequests", name)
    return out


async def admission_ms(kubeconfig: Path) -> dict[bool, list[float]]:
    """Batches of pods created at once (server-side dry run), with and without the label."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = AT_ONCE * 2
    out: dict[bool, list[float]] = {True: [], False: []}
    async with client.ApiClient(configuration=cfg) as api:
        core = client.CoreV1Api(api)

        async def one(pod: dict[str, Any]) -> float:
            started = time.perf_counter()
            await core.create_namespaced_pod(NS, pod, dry_run="All")  # type: ignore[arg-type]
            return (time.perf_counter() - started) * 1000

        for number in range(1 + ROUNDS):  # the first round warms up
            order = [True, False] if number % 2 == 0 else [False, True]
            for inject in order:
                base = master_pod("x", inject=inject)
                pods = []
                for _ in range(AT_ONCE):
                    pod = copy.deepcopy(base)
                    pod["metadata"]["name"] = f"dry-{uuid.uuid4().hex[:10]}"
                    pods.append(pod)
                latencies = await asyncio.gather(*(one(p) for p in pods))
                if number:
                    out[inject].extend(latencies)
    return out


def run() -> list[Result]:
    state_dir = Path(tempfile.mkdtemp(prefix="kqss-bench-keys-", dir="/tmp"))
    plane = ControlPlane(state_dir=state_dir, bin_dir=control_plane_binaries(), real_nodes=True)
    try:
        network = deploy(plane)
        a, b = network.clusters["node-a"], network.clusters["node-b"]
        sae(a, MASTER)
        sae(b, SLAVE)
        check = partial(served, (a, (NS, MASTER, MASTER)), (b, (NS, SLAVE, SLAVE)))
        wait_for(check, 300, "node-a to know SAE frank")
        slave = keypods.key_pod(
            "frank-app", NS, sae=SLAVE, peer_sae=MASTER, role="slave", service_account="frank-app"
        )
        b.kubectl("create", "-f", "-", stdin=json.dumps(slave))

        plain = [start_seconds(a, master_pod(f"plain-{i}", inject=False)) for i in range(PODS)]
        with_keys = [start_seconds(a, master_pod(f"keys-{i}", refresh="1h")) for i in range(PODS)]

        a.kubectl("create", "-f", "-", stdin=json.dumps(master_pod("rotating")))

        def rotations() -> list[float] | None:
            log = a.kubectl("logs", "rotating", "-n", NS, "-c", "qss-sidecar", check=False)
            found = rotation_ms(log.stdout)
            return found if len(found) >= ROTATIONS + 1 else None

        rotated = wait_for(rotations, 600, f"{ROTATIONS} rotations")[1:]  # the first: start-up
        a.kubectl("delete", "pod", "rotating", "-n", NS, "--wait=true", timeout=300)
        bare = asyncio.run(bare_requests_ms(a.kubeconfig, ROTATIONS))
        admitted = asyncio.run(admission_ms(a.kubeconfig))
    finally:
        plane.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    _notes.append(
        f"keypods: {PODS} pods of each kind started one after another on node-a; "
        f"{len(rotated)} rotations of a master sidecar (1 x 256 bit every second) and as many "
        f"bare KeyRequests; {AT_ONCE} pods at once x {ROUNDS} rounds after a warm-up, each kind"
    )
    same_batches = "the same pods without the label (no webhook call), same batches"
    return [
        Result(
            "annotated pod create -> Ready (first keys in its files), median",
            "ms",
            statistics.median(with_keys) * 1000,
            statistics.median(plain) * 1000,
            "the same pod without the label (no sidecar), same node, same run",
        ),
        Result(
            "key rotation in a pod: KeyRequest created -> keys in the files, p50",
            "ms",
            percentile(rotated, 0.5),
            percentile(bare, 0.5),
            "a bare KeyRequest (1 x 256 bit) created -> Ready, watched from the host",
        ),
        Result(
            "pod admission via the webhook pods, 50 at once, p50",
            "ms",
            percentile(admitted[True], 0.5),
            percentile(admitted[False], 0.5),
            same_batches,
        ),
        Result(
            "pod admission via the webhook pods, 50 at once, p99",
            "ms",
            percentile(admitted[True], 0.99),
            percentile(admitted[False], 0.99),
            same_batches,
        ),
    ]


def notes() -> list[str]:
    return list(_notes)


if __name__ == "__main__":
    results = run()
    print(table(results, notes=notes()))
