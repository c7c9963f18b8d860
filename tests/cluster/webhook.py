"""The kube-qss webhook as a process beside a local cluster, registered with its API server.

Used by the webhook's integration tests (``tests/fixtures/webhook.py``) and its benchmark
(``tests/benchmarks/bench_webhook.py``). ``start_webhook``:

1. applies the RBAC of ``kustomize/webhook`` (service account, roles, bindings) as shipped;
2. registers the shipped MutatingWebhookConfiguration with one change: ``clientConfig`` is the
   process's URL on loopback instead of the in-cluster Service (no kubelet runs pods here yet);
3. starts ``python -m webhooks.main`` with a token of the webhook's own service account, so it
   works with exactly the RBAC it ships with, and waits until it has written its CA into the
   configuration and answers over TLS.

The process is spawned through the ``ControlPlane``, which stops it with everything else.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from tests.cluster.localcluster import REPO_ROOT, Cluster, ControlPlane, free_port

NAMESPACE = "kube-qss-system"
CONFIGURATION = "kube-qss-webhook"
SERVICE_ACCOUNT = "kube-qss-webhook"
TLS_SECRET = "kube-qss-webhook-tls"
SIDECAR_IMAGE = "kube-qss:test"
_READY_TIMEOUT = 60.0


def rendered_component(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("kustomize", str(REPO_ROOT / "kustomize" / "webhook")).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=qss-tests",
        "-f",
        "-",
        stdin=json.dumps(obj),
    )


def token_kubeconfig(cluster: Cluster, *, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``namespace/account`` (a bound token, 24 h)."""
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=24h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.pki.ca_cert),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster.name, "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def wait_for_service_account(cluster: Cluster, namespace: str, account: str = "default") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            cluster.kubectl(
                "get", "serviceaccount", account, "-n", namespace, check=False
            ).returncode
            == 0
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"service account {namespace}/{account} did not appear within 60 s")


@dataclass
class RunningWebhook:
    plane: ControlPlane
    cluster: Cluster
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def published_bundle(self) -> bytes:
        out = self.cluster.kubectl(
            "get", "mutatingwebhookconfiguration", CONFIGURATION, "-o", "json"
        ).stdout
        hooks = json.loads(out)["webhooks"]
        return base64.b64decode(hooks[0]["clientConfig"].get("caBundle", ""))

    def trusted_context(self) -> ssl.SSLContext:
        """A client context trusting what the API server trusts now (the published bundle)."""
        return ssl.create_default_context(cadata=self.published_bundle().decode())

    def served_certificate(self, port: int | None = None) -> x509.Certificate:
        """The certificate a TLS handshake with the webhook gets now (not verified)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port or self.port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def start(self) -> None:
        self.proc = self._spawn(self.port, self.env)
        self.wait_ready(self.port, self.proc)

    def _spawn(self, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        full = dict(os.environ)
        full.update(env, QSS_WEBHOOK_ADDRESS=f"127.0.0.1:{port}")
        return self.plane.spawn(
            f"{self.cluster.name}/qss-webhook-{port}",
            [sys.executable, "-m", "webhooks.main"],
            self.log,
            env=full,
        )

    def wait_ready(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"qss-webhook exited with {proc.returncode}; see {self.log}")
            try:
                bundle = self.published_bundle()
                if bundle:
                    context = ssl.create_default_context(cadata=bundle.decode())
                    with (
                        socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                        context.wrap_socket(raw, server_hostname="127.0.0.1"),
                    ):
                        return
            except (OSError, ssl.SSLError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"qss-webhook not ready within {_READY_TIMEOUT:.0f}s: {last}")

    def start_replica(self) -> int:
        """Another replica (same Secret, same configuration) on its own port."""
        port = free_port()
        proc = self._spawn(port, self.env)
        self.extra.append(proc)
        self.wait_ready(port, proc)
        return port

    def stop(self, *, kill: bool = False) -> None:
        for proc in [self.proc, *self.extra]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                proc.wait(timeout=20)
        self.proc, self.extra = None, []

    def force_rotation(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


def start_webhook(
    plane: ControlPlane, cluster: Cluster, *, env: dict[str, str] | None = None
) -> RunningWebhook:
    """Register the shipped webhook with ``cluster`` and run it as a process (see above)."""
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    docs = rendered_component(cluster)
    for doc in docs:
        if doc["kind"] in (
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ):
            apply(cluster, doc)
    port = free_port()
    (config,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    for hook in config["webhooks"]:
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}/mutate"}
    # A fresh registration: no caBundle until the webhook writes one.
    cluster.kubectl("delete", "mutatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")
    cluster.kubectl("delete", "secret", TLS_SECRET, "-n", NAMESPACE, "--ignore-not-found")
    apply(cluster, config)
    directory = cluster.directory / "webhook"
    directory.mkdir(exist_ok=True)
    kubeconfig = token_kubeconfig(
        cluster, namespace=NAMESPACE, account=SERVICE_ACCOUNT, path=directory / "kubeconfig"
    )
    webhook = RunningWebhook(
        plane=plane,
        cluster=cluster,
        port=port,
        env={
            "KUBECONFIG": str(kubeconfig),
            "QSS_WEBHOOK_NAMESPACE": NAMESPACE,
            "QSS_WEBHOOK_IPS": "127.0.0.1",
            "QSS_SIDECAR_IMAGE": SIDECAR_IMAGE,
            **(env or {}),
        },
        log=directory / "qss-webhook.log",
    )
    webhook.start()
    return webhook
