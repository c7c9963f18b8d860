"""What every kube-qss command does the same way at start-up: log in one format, and stop on
SIGTERM or SIGINT.

Called by the ``main`` of each command (controller and QKDM through ``controllers.logs``,
webhook, sidecar, device plugin, simulated device); everything else about a command (its
settings, what it serves, its exit codes) stays in its own ``main``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Final

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str) -> None:
    """Log to stderr at ``level`` in kube-qss's format.

    kubernetes_asyncio's REST logger stays at INFO even at DEBUG: at DEBUG it logs whole
    response bodies, Secrets' data (keys, CA keys) included.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT)
    logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets on SIGTERM or SIGINT: the command's cue to stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
