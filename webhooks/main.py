"""The ``qss-webhook`` command: the mutating admission webhook that injects the key sidecar.

Reads ``WebhookSettings`` once, connects to the API server, starts watching Saes
(``webhooks.saes``), gets a serving certificate (its own CA by default, or cert-manager's
files), and serves ``webhooks.server`` over HTTPS until SIGTERM
or SIGINT, then lets reviews in flight finish and exits 0. SIGHUP starts a CA rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from typing import Final

from aiohttp import web
from kubernetes_asyncio import client, config

from qss_api.process import configure_logging, stop_on_signals
from webhooks.certificates import (
    RETRY_SECONDS,
    CertificateSource,
    CertificateSourceError,
    FileCertificates,
    SelfSignedCertificates,
    server_context,
)
from webhooks.mutate import mutate
from webhooks.saes import ApiSaeDirectory
from webhooks.server import init
from webhooks.settings import SettingsError, WebhookSettings
from webhooks.tls import TlsError

log = logging.getLogger("webhooks")

# How long start-up waits for a first certificate before it gives up (the pod then restarts).
FIRST_CERTIFICATE_TIMEOUT: Final = 120.0


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """An API client: the kubeconfig if given, else the pod's service account."""
    cfg = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


async def _first_certificate(source: CertificateSource) -> None:
    async with asyncio.timeout(FIRST_CERTIFICATE_TIMEOUT):
        while True:
            try:
                await source.reconcile()
                return
            except (CertificateSourceError, TlsError) as exc:
                log.warning("no serving certificate yet, retrying in %ss: %s", RETRY_SECONDS, exc)
                await asyncio.sleep(RETRY_SECONDS)


async def serve(settings: WebhookSettings) -> None:
    api = await connect(settings.kubeconfig)
    context = server_context()
    source: CertificateSource
    if settings.cert_dir is not None:
        source = FileCertificates(
            settings.cert_dir, context=context, check_interval=settings.check_interval
        )
    else:
        source = SelfSignedCertificates(
            api,
            context=context,
            namespace=settings.namespace,
            secret=settings.tls_secret,
            configuration=settings.configuration,
            names=settings.serving,
            lifetimes=settings.lifetimes,
            check_interval=settings.check_interval,
        )
    stop = stop_on_signals()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, source.force_rotation)
    saes = ApiSaeDirectory(api)
    reviewer = functools.partial(mutate, saes=saes, config=settings.injector)
    runner = web.AppRunner(
        init(reviewer=reviewer),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    rotation: asyncio.Task[None] | None = None
    watching = asyncio.create_task(saes.run(), name="qss-webhook-saes")
    try:
        await _first_certificate(source)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port, ssl_context=context).start()
        log.info("kube-qss webhook listening on %s:%d", settings.host, settings.port)
        rotation = asyncio.create_task(source.run(), name="qss-webhook-certificates")
        await stop.wait()
        log.info("stopping")
    finally:
        for task in (rotation, watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await runner.cleanup()
        await api.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qss-webhook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = WebhookSettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"qss-webhook: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        asyncio.run(serve(settings))
    except TimeoutError:
        log.error("no serving certificate within %ss; exiting", FIRST_CERTIFICATE_TIMEOUT)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
