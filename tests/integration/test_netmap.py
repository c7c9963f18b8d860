"""qss-netmap against a running QSS network: it reads node-a's objects and draws its link."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.cluster.network import QssNetwork
from tests.integration.helpers import eventually, kubectl_json


def test_netmap_draws_the_live_link_with_its_cost_and_fill(
    qss_network: QssNetwork, tmp_path: Path
) -> None:
    pair = qss_network.add_link("node-a", "node-b", rate_bps=400_000, name="netmap-link")
    a = qss_network.nodes["node-a"].cluster

    def link_has_cost() -> bool:
        obj = kubectl_json(a, "get", "qkdlink", "netmap-link")
        return bool(obj and (obj.get("status") or {}).get("cost") is not None)

    eventually(link_has_cost, timeout=60, what="QKDLink netmap-link has a cost")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controllers.netmap.main",
            "--kubeconfig",
            str(a.kubeconfig),
            "--node-id",
            "node-a",
            "--output",
            str(tmp_path / "net"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    dot = (tmp_path / "net.dot").read_text()
    assert '"node-a" -- "node-b" [label="cost ' in dot
    assert "% full" in dot
    svg = ET.fromstring((tmp_path / "net.svg").read_text())
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"node-a", "node-b"} <= texts
    assert pair.stream == "netmap-link"
