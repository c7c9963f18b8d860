"""Shared pytest set-up: the real services (control plane, Redis) as fixtures, and hygiene checks.

Fixture modules live in tests/fixtures/; each starts a real part (etcd + kube-apiserver,
redis-server) once per session and hands tests a handle on it.
"""

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.redis",
    "tests.fixtures.qss",
    "tests.fixtures.webhook",
    "tests.fixtures.realnodes",
]


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it (as kopf's own suite does)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leftover = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    for task in leftover:
        task.cancel()
    assert not leftover, f"test left asyncio tasks running: {leftover!r}"
