"""Running the sidecar: the key loop and the loopback 014 endpoint, side by side, until a stop
signal, and ``/metrics`` (``sidecar.metrics``) if the settings name a port for it. Called by
``sidecar.main`` (``qss-sidecar run``) with the settings it read."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from qss_api.process import stop_on_signals
from sidecar import keyapi, metrics
from sidecar.agent import Agent
from sidecar.kube import KubeKeyRequests, connect
from sidecar.node014 import NodeKeyApi
from sidecar.settings import LISTEN_HOST, SidecarSettings
from sidecar.volume import KeyVolume

log = logging.getLogger("sidecar")

# On SIGTERM, a 014 call in flight gets this long (the kubelet's grace period is longer).
SHUTDOWN_SECONDS: Final = 3.0


async def serve(settings: SidecarSettings) -> None:
    volume = KeyVolume(settings.keys_dir)
    api = await connect(settings.kubeconfig, settings.api_server)
    node = NodeKeyApi(settings.key_api_url, settings.credentials_dir)
    runner = web.AppRunner(
        keyapi.init(node=node),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    metrics_runner = web.AppRunner(metrics.init(), access_log=None, handle_signals=False)
    try:
        agent = Agent(settings, KubeKeyRequests(api, settings.pod_namespace), volume)
        agent.restore()
        stop = stop_on_signals()
        await runner.setup()
        await web.TCPSite(runner, LISTEN_HOST, settings.listen_port).start()
        if settings.metrics_port is not None:
            await metrics_runner.setup()
            # All addresses: Prometheus scrapes the pod's IP.
            await web.TCPSite(metrics_runner, None, settings.metrics_port).start()
        log.info(
            "sidecar of SAE %s (%s of %s) serving ETSI 014 on %s:%d, keys in %s",
            settings.sae_id,
            settings.role,
            settings.peer_sae_id,
            LISTEN_HOST,
            settings.listen_port,
            settings.keys_dir,
        )
        await agent.run(stop)
        log.info("stopping")
    finally:
        await metrics_runner.cleanup()
        await runner.cleanup()
        await node.close()
        await api.close()
