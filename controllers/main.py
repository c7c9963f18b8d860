"""The ``qss-controller`` command: the QSS node's kopf operator.

Loads the settings once, configures kopf (progress storage under our own prefix, both watch
timeouts) and runs every reconciler registered by the handler modules until SIGTERM or SIGINT,
then exits 0. Its health port (``controllers.health``) serves ``/healthz`` and the Prometheus
``/metrics`` of ``controllers.metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import kopf

from controllers.delivery.settings import DeliverySettings, DeliverySettingsError
from controllers.etsi014 import Etsi014Settings, Etsi014SettingsError
from controllers.events import EventRecorder

# Importing the handler modules registers the reconcilers with kopf.
from controllers.handlers import keyrequests, links, qkdms, routes, saes, topology  # noqa: F401
from controllers.health import serving_health
from controllers.identity import IdentityError
from controllers.kube import Kube, connect
from controllers.logs import configure_logging
from controllers.metrics import REGISTRY, refresh
from controllers.node import NodeRuntime, start_node
from controllers.routing.settings import RoutingSettings, RoutingSettingsError
from controllers.settings import ControllerSettings, SettingsError
from qss_api import GROUP, KOPF_PREFIX

FIELD_MANAGER = "qss-controller"  # owner of the status fields the controller writes


def configure_kopf(kopf_settings: Any, settings: ControllerSettings) -> None:
    """Apply our operator-wide choices to kopf's settings object."""
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{GROUP}/controller"
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    # Events are ours alone (controllers.events, deduplicated): kopf would post one per handler
    # retry (a KeyRequest waiting for keys retries twice a second). Its messages stay in the log.
    kopf_settings.posting.enabled = False


# A start-up the API server refused (not reachable yet, or 429 while its storage initializes)
# is tried again after this many seconds, not kopf's default 60: the node serves nothing until
# its start-up is done.
STARTUP_RETRY_SECONDS = 2.0


@kopf.on.startup(backoff=STARTUP_RETRY_SECONDS)
async def _startup(settings: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    node: ControllerSettings = memo["settings"]
    configure_kopf(settings, node)
    kube = Kube(api=await connect(node.kubeconfig), field_manager=FIELD_MANAGER)
    memo["kube"] = kube
    events = EventRecorder(
        api=kube.api, controller=f"{GROUP}/controller", instance=f"qss-controller-{node.node_id}"
    )
    events.start()
    memo["events"] = events
    try:
        runtime = await start_node(
            node,
            kube,
            key_api_settings=memo["key_api_settings"],
            delivery_settings=memo["delivery_settings"],
            routing_settings=memo["routing_settings"],
            events=events,
        )
    except BaseException as exc:
        # start_node leaves nothing behind when it fails; nor does this try, so a retry starts
        # afresh.
        del memo["events"], memo["kube"]
        await events.aclose()
        await kube.api.close()
        if isinstance(exc, IdentityError):
            # Missing namespace, or Secrets a user supplied that do not fit: retrying won't help.
            raise kopf.PermanentError(f"cannot set up this node's identity: {exc}") from None
        raise
    # What the handlers use, by the names they look for.
    memo["node"] = runtime
    memo["identity"] = runtime.identity
    memo["local_saes"] = runtime.local_saes
    logger.info("QSS node %s started (namespace %s)", node.node_id, node.namespace)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime: NodeRuntime | None = memo.get("node")
    if runtime is not None:
        await runtime.aclose()
    events: EventRecorder | None = memo.get("events")
    if events is not None:
        await events.aclose()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.api.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qss-controller", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-id", help="this node's ID in the QKD network (env QSS_NODE_ID)")
    parser.add_argument("--namespace", help="namespace of the node's own objects (QSS_NAMESPACE)")
    parser.add_argument("--redis-url", help="the node's key store (QSS_REDIS_URL)")
    parser.add_argument("--health-endpoint", help="liveness/readiness URL (QSS_HEALTH_ENDPOINT)")
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = ControllerSettings.from_env(
            os.environ,
            node_id=args.node_id,
            namespace=args.namespace,
            redis_url=args.redis_url,
            health_endpoint=args.health_endpoint,
        )
        key_api_settings = Etsi014Settings.from_env(os.environ)
        delivery_settings = DeliverySettings.from_env(os.environ)
        routing_settings = RoutingSettings.from_env(os.environ)
    except (
        SettingsError,
        Etsi014SettingsError,
        DeliverySettingsError,
        RoutingSettingsError,
    ) as exc:
        print(f"qss-controller: {exc}", file=sys.stderr)
        return 2
    configure_logging(verbose=args.verbose)
    memo = kopf.Memo(
        settings=settings,
        key_api_settings=key_api_settings,
        delivery_settings=delivery_settings,
        routing_settings=routing_settings,
    )
    asyncio.run(_operate(settings.health_endpoint, memo))
    return 0


async def _operate(health_endpoint: str, memo: kopf.Memo) -> None:
    ready = asyncio.Event()
    async with serving_health(health_endpoint, ready=ready, registry=REGISTRY, refresh=refresh):
        await kopf.operator(
            clusterwide=True,
            standalone=True,  # one replica per node; kopf's peering would need its own CRDs
            ready_flag=ready,
            memo=memo,
        )


if __name__ == "__main__":
    sys.exit(main())
