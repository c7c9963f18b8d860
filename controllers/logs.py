"""Logging set-up shared by the controller's and the QKDM's ``main``.

The format, and kubernetes_asyncio's REST logger kept at INFO even under ``--verbose``, are every
command's (``qss_api.process``); what is the controllers' own lives here: kopf's per-run success
lines for timers, daemons and watch-event handlers ("Timer 'sample_link' succeeded.", every
few seconds per object) are dropped, so the log shows what changed rather than that nothing did.
"""

from __future__ import annotations

import logging
import re

from qss_api import process

# Timers and daemons, and the watch-event handlers (named *_event by convention), which run on
# every status change of every stream.
_CHATTER = re.compile(r"^((Timer|Daemon) '[^']+'|Handler '[^']+_event') succeeded\.$")


class DropRoutineSuccess(logging.Filter):
    """Drops kopf's INFO lines saying a timer or daemon run succeeded; keeps all else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and _CHATTER.match(record.getMessage()))


def configure_logging(*, verbose: bool = False) -> None:
    process.configure_logging(logging.DEBUG if verbose else logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(DropRoutineSuccess())
