"""The ``qss-qkdm`` command: the QKD module of one key-stream end, as a kopf operator.

It watches only its own KeyStream. A kopf daemon runs the pump (device -> store) for as long as
the KeyStream exists, and a reporter beside it applies the stream's status every
``status_interval`` seconds, with an Event on every state change, QBER abort and KSID change
(``controllers.events``). The health port serves ``/healthz`` and the pump's metrics
(``controllers.qkdm.metrics``). SIGTERM stops both and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import kopf

from controllers.conditions import merge_conditions
from controllers.events import EventRecorder, Regarding
from controllers.health import serving_health
from controllers.keystore import KeyStore
from controllers.kube import Kube, NotFoundError, connect
from controllers.logs import configure_logging
from controllers.qkdm.metrics import REGISTRY, forget_pump, watch_pump
from controllers.qkdm.pump import Pump
from controllers.qkdm.settings import QkdmSettings, SettingsError
from controllers.qkdm.status import Fault, decide_state, stream_status
from qss_api import GROUP, KEYSTREAMS, KOPF_PREFIX
from qss_api.qkd004_client import DeviceClient

FIELD_MANAGER = "qss-qkdm"  # owner of the KeyStream status fields the QKDM writes


@kopf.on.startup()
async def _startup(settings: Any, memo: kopf.Memo, **_: Any) -> None:
    qkdm: QkdmSettings = memo["settings"]
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="qkdm-last-handled-configuration"
    )
    # Not the controller's finalizer: each writer releases only its own hold on deletion.
    settings.persistence.finalizer = f"{GROUP}/qkdm-{qkdm.node_id}"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.posting.enabled = False  # Events are controllers.events', deduplicated
    memo["kube"] = Kube(api=await connect(qkdm.kubeconfig), field_manager=FIELD_MANAGER)
    memo["events"] = EventRecorder(
        api=memo["kube"].api,
        controller=f"{GROUP}/qkdm",
        instance=f"qss-qkdm-{qkdm.node_id}-{qkdm.stream}",
    )
    memo["events"].start()
    memo["store"] = KeyStore.from_url(qkdm.redis_url)
    # Shared with the daemons: kopf hands each object a shallow copy of this memo.
    memo["pumps"] = {}


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "kube" in memo:
        # Nobody serves these stream ends any more: say so, rather than leave the last "Up"
        # standing (key delivery prefers Up streams).
        for pump in memo["pumps"].values():
            await _report_stopped(pump, memo["kube"])
    if "store" in memo:
        await memo["store"].aclose()
    if "events" in memo:
        await memo["events"].aclose()
    if "kube" in memo:
        await memo["kube"].api.close()


def _is_my_stream(name: str, memo: kopf.Memo, **_: Any) -> bool:
    settings: QkdmSettings = memo["settings"]
    return name == settings.stream


@kopf.daemon(KEYSTREAMS, when=_is_my_stream, cancellation_timeout=10.0)
async def serve_stream(
    name: str, body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any
) -> None:
    settings: QkdmSettings = memo["settings"]
    kube: Kube = memo["kube"]
    device = DeviceClient(path=settings.device_path)
    pump = Pump(
        node_id=settings.node_id, stream_name=name, kube=kube, store=memo["store"], device=device
    )
    memo["pumps"][name] = pump
    watch_pump(pump)
    reporter = asyncio.create_task(
        _report(pump, body, kube, memo["events"], settings.status_interval)
    )
    try:
        await pump.run(stopped)
    finally:
        forget_pump(pump)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await device.aclose()


async def _report_stopped(pump: Pump, kube: Kube) -> None:
    pump.fault = Fault(
        reason="QkdmStopped", message="the QKD module of this stream end has stopped"
    )
    status = stream_status(pump.observation())
    log = logging.getLogger("controllers.qkdm")
    try:
        await kube.apply_status(KEYSTREAMS, pump.stream_name, status)
    except Exception as exc:  # the API server may be gone too; nothing more to do
        log.info("stream %s: final status not written: %r", pump.stream_name, exc)
    else:
        log.info("stream %s: reported stopped", pump.stream_name)


async def _report(
    pump: Pump, body: kopf.Body, kube: Kube, events: EventRecorder, interval: float
) -> None:
    """Apply the stream's status every ``interval`` seconds; Events on state changes, QBER
    aborts and KSID changes."""
    last_state: str | None = (body.get("status") or {}).get("state")
    conditions: list[Any] = list((body.get("status") or {}).get("conditions") or [])
    stream = Regarding.of(body)
    aborted = pump.aborted
    ksid: str | None = (body.get("status") or {}).get("ksid")
    while True:
        obs = pump.observation()
        if pump.plan is not None:
            with contextlib.suppress(Exception):
                pump.counts = await pump.store.counts(stream=pump.plan.name)
            obs = pump.observation()
        status = stream_status(obs)
        conditions = merge_conditions(conditions, status["conditions"])
        status["conditions"] = [c for c in conditions if c["type"] == "Ready"]
        try:
            await kube.apply_status(KEYSTREAMS, pump.stream_name, status)
        except NotFoundError:
            return
        except Exception as exc:  # the API server may be restarting; try again next round
            logging.getLogger("controllers.qkdm").warning("status not written: %r", exc)
        state, reason, message = decide_state(obs)
        if state != last_state:
            events.record(
                stream,
                type="Normal" if state == "Up" else "Warning",
                reason=f"Stream{state}",
                note=f"{last_state or 'Unknown'} -> {state} ({reason}): {message}",
            )
            last_state = state
        if pump.aborted > aborted:
            events.record(
                stream,
                type="Warning",
                reason="StreamAborted",
                note=f"the QKD device aborted the key stream {pump.aborted - aborted} time(s) "
                "(QBER too high); moving to the next key stream ID",
            )
        if pump.ksid is not None and pump.ksid != ksid:
            if ksid is not None:
                events.record(
                    stream,
                    type="Normal",
                    reason="KsidChanged",
                    note=f"device key stream {ksid} -> {pump.ksid}",
                )
            ksid = pump.ksid
        aborted = pump.aborted
        await asyncio.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qss-qkdm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-id", help="this node's ID (QSS_NODE_ID)")
    parser.add_argument("--stream", help="the KeyStream to serve (QSS_KEYSTREAM)")
    parser.add_argument("--device", help="the QKD device's socket (QSS_QKD_DEVICE_PATH)")
    parser.add_argument("--redis-url", help="the node's key store (QSS_REDIS_URL)")
    parser.add_argument("--health-endpoint", help="liveness URL (QSS_QKDM_HEALTH_ENDPOINT)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = QkdmSettings.from_env(
            os.environ,
            node_id=args.node_id,
            stream=args.stream,
            device_path=args.device,
            redis_url=args.redis_url,
            health_endpoint=args.health_endpoint,
        )
    except SettingsError as exc:
        print(f"qss-qkdm: {exc}", file=sys.stderr)
        return 2
    configure_logging()
    asyncio.run(_operate(settings))
    return 0


async def _operate(settings: QkdmSettings) -> None:
    ready = asyncio.Event()
    async with serving_health(settings.health_endpoint, ready=ready, registry=REGISTRY):
        await kopf.operator(
            clusterwide=True, standalone=True, ready_flag=ready, memo=kopf.Memo(settings=settings)
        )


if __name__ == "__main__":
    sys.exit(main())
