"""Waiting on conditions, never on time: the one ``eventually`` (and its async twin) every test
uses. A condition is polled until it returns something truthy, which is returned; past the
timeout the test fails, naming what it waited for and the last value seen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_SECONDS = 0.2


def eventually(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "", poll: float = POLL_SECONDS
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"{what or 'condition'} not met within {timeout}s; last {last!r}")


async def eventually_async(
    check: Callable[[], Awaitable[Any]],
    timeout: float = 30.0,
    what: str = "",
    poll: float = 0.05,
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(poll)
    raise AssertionError(f"{what or 'condition'} not met within {timeout}s; last {last!r}")
