"""The log filter drops kopf's routine success lines and nothing else."""

import logging

import pytest

from controllers.logs import DropRoutineSuccess


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "message",
    [
        "Timer 'sample_link' succeeded.",
        "Daemon 'serve_stream' succeeded.",
        "Handler 'keystream_event' succeeded.",
    ],
)
def test_routine_success_lines_are_dropped(message: str) -> None:
    assert not DropRoutineSuccess().filter(_record(message))


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("Handler 'serve_keyrequest' succeeded.", logging.INFO),
        ("link node-b is Down (cost 100.0)", logging.INFO),
        ("Timer 'sample_link' succeeded.", logging.WARNING),
        ("Timer 'sample_link' failed with an exception. Will retry.", logging.ERROR),
    ],
)
def test_everything_else_is_kept(message: str, level: int) -> None:
    assert DropRoutineSuccess().filter(_record(message, level))
