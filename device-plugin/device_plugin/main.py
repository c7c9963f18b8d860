"""Entry point of the ``qss-device-plugin`` console script (the DaemonSet's command).

:func:`main` reads the command line into :class:`~device_plugin.config.Settings`, loads the device
configuration once, and runs :func:`serve` until SIGTERM or SIGINT, then exits 0. A bad
configuration is one line on stderr and exit code 2, before anything starts. Tests call
:func:`serve` directly with their own settings and stop event.
"""

import argparse
import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from device_plugin.api import KUBELET_SOCKET_NAME
from device_plugin.config import ConfigError, DeviceConfig, Settings, load_device_config
from device_plugin.inventory import Inventory, LinkView
from device_plugin.lifecycle import Lifecycle
from device_plugin.metrics import Counters, init
from device_plugin.resources import resources_for
from device_plugin.servicer import DevicePluginServicer
from qss_api.process import configure_logging, stop_on_signals

PROG = "qss-device-plugin"
EXIT_CONFIG = 2

logger = logging.getLogger(__name__)

# An extended resource name as the kubelet accepts it: "<domain>/<name>".
_RESOURCE_NAME = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)


async def serve(settings: Settings, config: DeviceConfig, stop: asyncio.Event) -> None:
    """Run the plugin until ``stop`` is set: health rounds, one gRPC lifecycle per resource (QKD
    link), optional metrics. A link that cannot name a resource raises ``ConfigError``."""
    resources = resources_for(
        config, prefix=settings.resource_prefix, socket_prefix=settings.socket_prefix
    )
    inventory = Inventory(
        config=config, host_root=settings.host_root, probe_timeout=settings.probe_timeout
    )
    await inventory.refresh()  # the first ListAndWatch answer must already be right
    counters = Counters()
    lifecycles = [
        Lifecycle(
            settings=settings,
            resource=resource,
            servicer=DevicePluginServicer(
                inventory=LinkView(inventory, resource.link), counters=counters
            ),
            counters=counters,
        )
        for resource in resources
    ]
    runner: web.AppRunner | None = None
    monitor = asyncio.create_task(inventory.run(interval=settings.health_interval))
    try:
        if settings.metrics_address is not None:
            host, _, port = settings.metrics_address.rpartition(":")
            runner = web.AppRunner(init(inventory=inventory, counters=counters))
            await runner.setup()
            await web.TCPSite(runner, host or None, int(port)).start()
        await asyncio.gather(*(lifecycle.run(stop) for lifecycle in lifecycles))
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        if runner is not None:
            await runner.cleanup()


def parse_settings(argv: Sequence[str]) -> Settings:
    """Settings from the command line; argparse exits 2 with a usage line on a bad flag."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog=PROG, description="kubelet device plugin offering QKD devices as a resource"
    )
    parser.add_argument(
        "--config", type=Path, default=defaults.config_path, help="device configuration file (YAML)"
    )
    parser.add_argument(
        "--device-plugin-dir",
        type=Path,
        default=defaults.device_plugin_dir,
        help="directory of the kubelet's and the plugins' sockets",
    )
    parser.add_argument(
        "--kubelet-socket",
        type=Path,
        default=None,
        help="kubelet Registration socket (default: kubelet.sock in that dir)",
    )
    parser.add_argument(
        "--socket-prefix",
        default=defaults.socket_prefix,
        help="this plugin's sockets in that directory are <prefix>-<link>.sock",
    )
    parser.add_argument(
        "--resource-prefix",
        default=defaults.resource_prefix,
        help="pods request the devices of link L as the extended resource <prefix>-L",
    )
    parser.add_argument(
        "--host-root",
        type=Path,
        default=defaults.host_root,
        help="where host paths are visible to the plugin",
    )
    parser.add_argument(
        "--health-interval",
        type=_positive,
        default=defaults.health_interval,
        help="seconds between health rounds",
    )
    parser.add_argument(
        "--probe-timeout",
        type=_positive,
        default=defaults.probe_timeout,
        help="seconds a simulated device has to answer its health probe",
    )
    parser.add_argument(
        "--socket-poll-interval",
        type=_positive,
        default=defaults.socket_poll_interval,
        help="seconds between checks for a kubelet restart",
    )
    parser.add_argument(
        "--metrics-address",
        default=defaults.metrics_address,
        help="host:port for /metrics and /healthz (default: off)",
    )
    parser.add_argument(
        "--log-level", default=defaults.log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    if not _RESOURCE_NAME.fullmatch(args.resource_prefix):
        parser.error(f"--resource-prefix {args.resource_prefix!r} is not '<domain>/<name>'")
    if "/" in args.socket_prefix or not args.socket_prefix:
        parser.error("--socket-prefix must be a plain file name")
    if args.metrics_address is not None and not re.fullmatch(r".*:\d+", args.metrics_address):
        parser.error("--metrics-address must be host:port, e.g. 0.0.0.0:9410")
    return Settings(
        config_path=args.config,
        device_plugin_dir=args.device_plugin_dir,
        kubelet_socket=args.kubelet_socket or args.device_plugin_dir / KUBELET_SOCKET_NAME,
        socket_prefix=args.socket_prefix,
        resource_prefix=args.resource_prefix,
        host_root=args.host_root,
        health_interval=args.health_interval,
        probe_timeout=args.probe_timeout,
        socket_poll_interval=args.socket_poll_interval,
        metrics_address=args.metrics_address,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the device plugin; exit 0 on SIGTERM, 2 on a bad command line or configuration."""
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level)
    try:
        config = load_device_config(settings.config_path)
        resources_for(config, prefix=settings.resource_prefix, socket_prefix=settings.socket_prefix)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    asyncio.run(_run_until_signalled(settings, config))
    sys.exit(0)


async def _run_until_signalled(settings: Settings, config: DeviceConfig) -> None:
    stop = stop_on_signals()
    logger.info(
        "starting with %d configured devices, %d discovery rules",
        len(config.devices),
        len(config.discover),
    )
    await serve(settings, config, stop)
    logger.info("stopped")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value
