"""A test-only kopf operator that runs the Sae handlers and nothing else.

``tests/integration/test_sae_reconciler.py`` starts it as a process
(``python -m tests.integration.sae_operator ...``) against a real API server. It imports only
``controllers.handlers.saes`` (so no other reconciler runs), configures kopf the way
``controllers.main`` does, and fills the memo the handlers read: ``kube``, ``settings``,
``identity`` (the node's CA and certificate from ``ensure_node_identity``), ``local_saes`` and
``events``.
It watches only the namespaces matching ``--watch``, so tests can also drive the reconcile
functions directly in other namespaces without the operator interfering.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import kopf

import controllers.handlers.saes  # noqa: F401  (registers the Sae handlers with kopf)
from controllers.events import EventRecorder
from controllers.identity import ensure_node_identity
from controllers.kube import Kube, connect
from controllers.saes.registry import LocalSaes
from controllers.settings import ControllerSettings
from qss_api import GROUP, KOPF_PREFIX


@kopf.on.startup()
async def _startup(settings: Any, memo: kopf.Memo, **_: Any) -> None:
    node: ControllerSettings = memo["settings"]
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/controller"
    settings.watching.server_timeout = node.watch_server_timeout
    settings.watching.client_timeout = node.watch_client_timeout
    settings.posting.enabled = False
    api = await connect(node.kubeconfig)
    memo["kube"] = Kube(api=api, field_manager="qss-controller")
    memo["identity"] = await ensure_node_identity(
        api, namespace=node.namespace, node_id=node.node_id
    )
    memo["local_saes"] = LocalSaes()
    memo["events"] = EventRecorder(
        api=api, controller=f"{GROUP}/controller", instance=f"sae-operator-{node.node_id}"
    )
    memo["events"].start()


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "events" in memo:
        await memo["events"].aclose()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--namespace", required=True, help="the node's own namespace")
    parser.add_argument("--watch", required=True, help="glob of the namespaces to serve")
    parser.add_argument("--health", required=True, help="liveness endpoint URL")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ControllerSettings(
        node_id=args.node_id, namespace=args.namespace, kubeconfig=args.kubeconfig
    )
    kopf.run(
        namespaces=[args.watch],
        standalone=True,
        liveness_endpoint=args.health,
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
