"""The README's main job (``make demo``): a local QSS network, shown with kubectl.

Starts the local control plane (``tests.cluster.localcluster``), installs the CRDs and the
samples with ``kubectl apply -k kustomize/demo``, and prints ``kubectl get qss``. The processes
keep running for the user to explore; ``make demo-down`` stops them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tests.cluster.localcluster import (
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    Cluster,
    ControlPlane,
    control_plane_binaries,
    install_crds,
    stop_recorded,
)


def install(cluster: Cluster) -> None:
    """CRDs first and wait until they are served, then the rest of the demo overlay."""
    install_crds(cluster)
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "kustomize" / "demo"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--clusters", default="node-a")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir

    if stop_recorded(state_dir):
        print("stopped the previous demo network")
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    bin_dir = control_plane_binaries()
    plane = ControlPlane(state_dir=state_dir, bin_dir=bin_dir, detach=True)
    names = [n for n in args.clusters.split(",") if n]
    try:
        clusters = [plane.start_cluster(name) for name in names]
        for cluster in clusters:
            install(cluster)
    except Exception:
        plane.stop()
        raise
    for cluster in clusters:
        print(f"\n$ kubectl --kubeconfig {cluster.kubeconfig} get qss -A")
        print(cluster.kubectl("get", "qss", "-A").stdout)
    print("The network keeps running. Explore it with:")
    print(f"  export PATH={bin_dir}:$PATH KUBECONFIG={clusters[0].kubeconfig}")
    print("  kubectl get keystreams")
    print("Stop it with: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
