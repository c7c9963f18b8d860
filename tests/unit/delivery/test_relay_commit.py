"""The commit of an ETSI 014 relay leaves the source at once: ``NodeKeyDelivery.commit`` wakes
the outbox as it queues it, so the slave SAE can fetch the keys without waiting for the source's
next outbox sweep (here an hour away; the repeaters wake their own outboxes as they pass it on).
Three real nodes in a line (``relay_harness``), as in ``test_relay``."""

from __future__ import annotations

import pytest

from controllers.delivery.settings import DeliverySettings
from tests.unit.delivery.conftest import Line
from tests.unit.delivery.test_relay import enc, fetched

AN_HOUR = 3600.0


@pytest.fixture
def settings() -> DeliverySettings:
    """The line's settings with no outbox sweep during the test: only a kick sends."""
    return DeliverySettings(
        serve_seconds=20.0,
        agree_seconds=2.0,
        hold_seconds=AN_HOUR / 2,
        fetch_window_seconds=AN_HOUR,
        sweep_seconds=AN_HOUR,
        retry_max_seconds=0.5,
    )


async def test_the_commit_of_a_014_relay_reaches_the_slave_without_waiting_for_a_sweep(
    line: Line,
) -> None:
    for number in (1, 3):
        keys = await enc(line, number=number)
        got = await fetched(line, keys)
        assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
