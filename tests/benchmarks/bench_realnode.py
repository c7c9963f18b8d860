"""Pods on a real node of the local harness: how fast they start, and what a node costs.

Starts its own one-node cluster (``tests.cluster.localcluster`` with ``real_nodes``). Figures:

- pod create -> Running for a pod of the kube-qss image (the container started), beside the
  same for a pod of the 2 MB pause image (what the kubelet and containerd cost alone);
- kube-qss applied with ``kubectl apply -k kustomize/test/node-a`` until every workload has
  rolled out, the QKDM included (no baseline: shown beside the pause pod's start);
- resident memory of the node (kubelet, containerd and its shims, kube-proxy, CoreDNS, and the
  pods) with kube-qss running, beside the same node before kube-qss was applied.

``python -m tests.benchmarks.bench_realnode``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from controllers import pki
from tests.benchmarks.report import Result, table
from tests.cluster import images
from tests.cluster.localcluster import Cluster, ControlPlane, control_plane_binaries
from tests.cluster.realnetwork import apply_overlay, wait_rolled_out
from tests.realnode.helpers import LOCKED_DOWN, RESTRICTED

PODS = 5  # per image; each figure is their median
_notes: list[str] = []


def pod_start_seconds(cluster: Cluster, image: str, name: str) -> float:
    """Create a pod of ``image`` that sleeps; seconds until the kubelet reports it Running."""
    command = ["/bin/busybox", "sleep", "3600"] if "pause" in image else ["sleep", "3600"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": RESTRICTED,
            "containers": [
                {"name": "main", "image": image, "command": command, "securityContext": LOCKED_DOWN}
            ],
        },
    }
    started = time.monotonic()
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(pod))
    cluster.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Running", f"pod/{name}", "--timeout=300s"
    )
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "pod", name, "--wait=false")
    return elapsed


def node_memory_mib(cluster: Cluster) -> float:
    assert cluster.node is not None
    return sum(cluster.node.memory_bytes().values()) / 2**20


def run() -> list[Result]:
    state_dir = Path(tempfile.mkdtemp(prefix="kqss-bench-", dir="/tmp"))
    plane = ControlPlane(state_dir=state_dir, bin_dir=control_plane_binaries(), real_nodes=True)
    try:
        started = time.monotonic()
        cluster = plane.start_cluster("node-a")
        up = time.monotonic() - started
        assert cluster.node is not None
        pause = [
            pod_start_seconds(cluster, images.LOCAL_REFS["pause"], f"pause-{i}")
            for i in range(PODS)
        ]
        ours = [
            pod_start_seconds(cluster, images.LOCAL_REFS["kube-qss"], f"kube-qss-{i}")
            for i in range(PODS)
        ]
        empty = node_memory_mib(cluster)
        started = time.monotonic()
        apply_overlay(
            cluster,
            "node-a",
            ca=pki.create_ca("kube-qss node CA node-a"),
            peer_cas={"node-b": pki.create_ca("kube-qss node CA node-b")},
        )
        wait_rolled_out(cluster)
        deployed = time.monotonic() - started
        time.sleep(5)  # let the pods reach their working size before measuring memory
        with_kube_qss = node_memory_mib(cluster)
        parts = {k: round(v / 2**20) for k, v in cluster.node.memory_bytes().items()}
        _notes.extend(
            [
                f"cluster with a real node up (API server, node Ready, images in): {up:.0f} s",
                f"of which image import {cluster.node.timings['import images']:.0f} s",
                f"kubectl apply -k kustomize/test/node-a until rolled out: {deployed:.0f} s",
                f"node memory by part with kube-qss (MiB): {parts}",
            ]
        )
        return [
            Result(
                what="pod create -> Running, kube-qss image",
                unit="ms",
                ours=statistics.median(ours) * 1000,
                baseline=statistics.median(pause) * 1000,
                baseline_is=f"a pod of the pause image, same node (median of {PODS})",
            ),
            Result(
                what="node memory with kube-qss running",
                unit="MiB",
                ours=with_kube_qss,
                baseline=empty,
                baseline_is="the same node before kube-qss was applied",
            ),
        ]
    finally:
        plane.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def notes() -> list[str]:
    return list(_notes)


if __name__ == "__main__":
    results = run()
    print(table(results, notes=notes()))
