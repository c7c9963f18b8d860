"""NodeKeyDelivery's commit is idempotent, including for a request resumed after its commit
(real redis-server; no peer is called by these steps)."""

from __future__ import annotations

import uuid
from typing import Any

from controllers.delivery.service import NodeKeyDelivery, Ticket
from controllers.delivery.topology import Topology
from controllers.keystore import Chunk, KeyStore


class _NoPeers:
    async def post_json(self, node_id: str, path: str, payload: Any) -> Any:
        raise AssertionError("these steps must not call the peer")


class _Nobody:
    def lookup(self, sae_id: str) -> tuple[str, str] | None:
        return None

    def node_of(self, sae_id: str) -> str | None:
        return None

    def is_known_absent(self, sae_id: str) -> bool:
        return True


async def test_commit_consumes_once_and_tolerates_repeats_and_empty_tickets(redis_url: str) -> None:
    async with KeyStore.from_url(redis_url) as store:
        await store.configure_stream(stream="s", capacity=10, chunk_bytes=32)
        await store.add_chunks(
            stream="s",
            chunks=[Chunk(chunk_id=str(uuid.uuid4()), material=bytes([i]) * 32) for i in range(4)],
        )
        rid = str(uuid.uuid4())
        reservation = await store.reserve(
            stream="s", reservation_id=rid, owner="a/b", count=2, size_bits=256
        )
        delivery = NodeKeyDelivery(
            node_id="node-a",
            store=store,
            topology=Topology(),
            local_saes=_Nobody(),
            directory=_Nobody(),
            peers=_NoPeers(),
        )
        ticket = Ticket(
            request_id=rid,
            stream="s",
            peer_node="node-b",
            master_sae_id="a",
            slave_sae_id="b",
            size_bits=256,
            keys=reservation.keys,
        )
        keys = await delivery.read(ticket)
        assert [k.key_id for k in keys] == ticket.key_ids
        await delivery.commit(ticket)
        await delivery.commit(ticket)  # a retried step
        resumed = Ticket(
            request_id=rid,
            stream="",
            peer_node="",
            master_sae_id="a",
            slave_sae_id="b",
            size_bits=256,
            keys=(),
        )
        await delivery.commit(resumed)  # nothing left: no error, nothing consumed
        counts = await store.counts(stream="s")
        assert (counts.consumed, counts.reserved, counts.available) == (2, 0, 2)
