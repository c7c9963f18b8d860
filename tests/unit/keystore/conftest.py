"""Fixtures for the key-store tests: stores on the real redis-server of tests/fixtures/redis.py.

``store`` is node A's key store, ``peer_store`` node B's (another database of the same server,
standing in for the peer node's own Redis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controllers.keystore import KeyStore
from tests.unit.keystore.helpers import STREAM


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[KeyStore]:
    async with KeyStore.from_url(redis_url) as s:
        await s.configure_stream(stream=STREAM, capacity=1000, chunk_bytes=16)
        yield s


@pytest.fixture
async def peer_store(redis_url: str) -> AsyncIterator[KeyStore]:
    async with KeyStore.from_url(redis_url.rsplit("/", 1)[0] + "/1") as s:
        await s.configure_stream(stream=STREAM, capacity=1000, chunk_bytes=16)
        yield s
