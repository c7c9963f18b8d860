"""Fixtures for the simulated-device tests: a running pair, on a fake or the real clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.simdevice.helpers import FakeClock, Pair, running_pair


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pair(clock: FakeClock) -> AsyncIterator[Pair]:
    """A pair at 1280 bits/s on a fake clock: ten 16-byte chunks per simulated second."""
    async with running_pair(rate_bps=1280, clock=clock) as p:
        yield p
