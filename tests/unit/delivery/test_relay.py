"""The key relay between three real nodes in a line (real stores, the real channel over mutual
TLS, the real pools and upkeep; routing's table fixed by the test): keys asked for on node-a
for an SAE on node-c arrive alike at node-c through node-b; node-b keeps nothing of them; each
link spends exactly the keys, pads and tag keys the relay needs; a tampered message aborts and
releases every hold on the path; a replayed one changes nothing; a node that does not answer
aborts the relay and leaves nothing held."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from controllers.delivery.api import DeliveredKey, DeliveryError, InsufficientKeys, UnknownKeys
from controllers.delivery.peer import KrpPeers, KrpRefused
from controllers.delivery.relay_messages import RelayPrepare, RelayPrepared
from controllers.delivery.settings import DeliverySettings
from controllers.keystore import StreamCounts
from controllers.keystore.layout import NAMES, stream_keys
from tests.unit.delivery.conftest import Line
from tests.unit.delivery.harness import start_node
from tests.unit.delivery.relay_harness import feed_line, join_line, register_line, stream_name
from tests.waiting import eventually_async

AB, BC = stream_name("node-a", "node-b"), stream_name("node-b", "node-c")


async def enc(line: Line, *, number: int = 5, size: int = 256) -> list[DeliveredKey]:
    return await line.a.delivery.get_keys(
        request_id="r",
        master_sae_id="alice",
        slave_sae_id="carol",
        number=number,
        size_bits=size,
        timeout=20,
    )


async def dec(line: Line, key_ids: list[str]) -> list[DeliveredKey]:
    return await line.c.delivery.get_keys_with_ids(
        slave_sae_id="carol", master_sae_id="alice", key_ids=key_ids
    )


async def fetched(line: Line, keys: list[DeliveredKey]) -> list[DeliveredKey]:
    """The keys at node-c once the commit got there (it follows the master's answer)."""

    async def claim() -> list[DeliveredKey] | None:
        try:
            return await dec(line, [k.key_id for k in keys])
        except UnknownKeys:
            return None

    got: list[DeliveredKey] = await eventually_async(claim, what="the relayed keys at node-c")
    return got


async def warm(line: Line) -> None:
    """One relay through, to its end, so that every link's pool for the pair is agreed."""
    await fetched(line, await enc(line, number=1))


async def stored_values(url: str) -> list[bytes]:
    """Every value and member in a node's Redis database: what a scan for key material reads."""
    client: Any = aioredis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        async for name in client.scan_iter():
            kind = (await client.type(name)).decode()
            if kind == "hash":
                for k, v in (await client.hgetall(name)).items():
                    out += [k, v]
            elif kind == "string":
                out.append(await client.get(name))
            elif kind == "list":
                out += await client.lrange(name, 0, -1)
            elif kind == "set":
                out += list(await client.smembers(name))
            elif kind == "zset":
                out += [m for m, _ in await client.zrange(name, 0, -1, withscores=True)]
            out.append(name)
    finally:
        await client.aclose()
    return out


async def nothing_held(line: Line) -> None:
    for node in line.nodes:
        for stream in await node.store.streams():
            counts = await node.counts(stream)
            assert counts.holding == 0, (node.node_id, stream, counts)


def spent(before: StreamCounts, after: StreamCounts) -> tuple[int, int]:
    return after.consumed - before.consumed, after.dropped - before.dropped


async def test_relayed_keys_reach_the_destination_alike_and_the_repeater_keeps_nothing(
    line: Line,
) -> None:
    await warm(line)
    before = {
        (n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()
    }
    keys = await enc(line, number=5)
    assert len({k.key_id for k in keys}) == 5
    assert all(len(k.material) == 32 for k in keys)
    got = await fetched(line, keys)
    assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
    # Each is delivered once.
    with pytest.raises(UnknownKeys):
        await dec(line, [keys[0].key_id])
    # Exactly what the relay spends: 5 keys on a-b (both ends), 5 pads + 1 tag key on b-c.
    after = {(n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()}
    assert spent(before["node-a", AB], after["node-a", AB]) == (5, 0)
    assert spent(before["node-b", AB], after["node-b", AB]) == (5, 0)
    assert spent(before["node-b", BC], after["node-b", BC]) == (6, 0)
    assert spent(before["node-c", BC], after["node-c", BC]) == (6, 0)
    await nothing_held(line)
    # node-b keeps nothing of the relayed keys: no byte of them anywhere in its Redis.
    values = await stored_values(line.urls["node-b"])
    for key in keys:
        assert not any(key.material in v for v in values), "node-b's Redis holds a relayed key"
        assert not any(key.key_id.encode() in v for v in values if not v.startswith(b"{")), (
            "node-b's Redis names a relayed key"
        )


class TamperingPeers(KrpPeers):
    """The channel as an attacker on it would be: flips a bit of every relayed ciphertext."""

    async def relay_prepare(self, node_id: str, message: RelayPrepare) -> RelayPrepared:
        if message.sealed is not None:
            raw = bytearray(base64.b64decode(message.sealed.ciphertext))
            raw[0] ^= 1
            sealed = message.sealed.model_copy(
                update={"ciphertext": base64.b64encode(bytes(raw)).decode()}
            )
            message = message.model_copy(update={"sealed": sealed})
        return await super().relay_prepare(node_id, message)


class RecordingPeers(KrpPeers):
    """The channel as a recorder on it would be: keeps every relay message it carried."""

    sent: list[tuple[str, RelayPrepare]]

    async def relay_prepare(self, node_id: str, message: RelayPrepare) -> RelayPrepared:
        self.sent.append((node_id, message))
        return await super().relay_prepare(node_id, message)


async def test_a_tampered_relay_message_aborts_and_releases_every_hold(line: Line) -> None:
    await warm(line)
    before = {
        (n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()
    }
    line.b.relay.peers = TamperingPeers(line.b.clients)
    with pytest.raises(DeliveryError, match="tag does not verify"):
        await enc(line, number=5)
    after = {(n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()}
    await nothing_held(line)
    # Nothing delivered; what left its node (the keys' IDs, the pads as ciphertext) is dropped.
    assert spent(before["node-a", AB], after["node-a", AB]) == (0, 5)
    assert spent(before["node-b", AB], after["node-b", AB]) == (0, 5)
    assert spent(before["node-b", BC], after["node-b", BC]) == (0, 6)
    assert spent(before["node-c", BC], after["node-c", BC]) == (0, 6)
    # Untampered, the next relay goes through.
    line.b.relay.peers = KrpPeers(line.b.clients)
    keys = await enc(line, number=2)
    got = await fetched(line, keys)
    assert [k.material for k in got] == [k.material for k in keys]


async def test_a_replayed_relay_message_changes_nothing(line: Line) -> None:
    await warm(line)
    recorder = RecordingPeers(line.b.clients)
    recorder.sent = []
    line.b.relay.peers = recorder
    keys = await enc(line, number=3)
    got = await fetched(line, keys)
    assert len(got) == 3
    [(to, message)] = recorder.sent
    assert to == "node-c"
    before = {
        (n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()
    }
    for _ in range(3):
        with pytest.raises(KrpRefused) as refused:
            await KrpPeers(line.b.clients).relay_prepare("node-c", message)
        assert refused.value.status == 409
    after = {(n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()}
    assert after == before
    with pytest.raises(UnknownKeys):
        await dec(line, [keys[0].key_id])


async def test_a_node_that_does_not_answer_aborts_the_relay_and_nothing_stays_held(
    line: Line,
) -> None:
    await warm(line)
    await line.c.server.close()
    with pytest.raises(DeliveryError, match="did not answer"):
        await enc(line, number=4)
    await nothing_held(line)


async def test_no_key_pad_or_tag_key_in_logs_or_errors(
    line: Line, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await warm(line)
    recorder = RecordingPeers(line.b.clients)
    recorder.sent = []
    line.b.relay.peers = recorder
    keys = await enc(line, number=4)
    await fetched(line, keys)
    line.b.relay.peers = TamperingPeers(line.b.clients)
    with pytest.raises(DeliveryError) as failed:
        await enc(line, number=2)
    [(_, message)] = recorder.sent
    assert message.sealed is not None
    ciphertext = base64.b64decode(message.sealed.ciphertext)
    pads = [
        bytes(x ^ y for x, y in zip(ciphertext[i * 32 : (i + 1) * 32], k.material, strict=True))
        for i, k in enumerate(keys)
    ]
    secrets = [k.material for k in keys] + pads
    text = caplog.text + str(failed.value) + repr(failed.value)
    assert "relay" in text  # the log was captured
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in text


async def test_a_repeater_without_pads_holds_nothing_and_the_source_retries_then_gives_back(
    line: Line,
) -> None:
    await warm(line)
    before = {
        (n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()
    }
    # node-b cannot hold pads towards node-c for now (its stream is not known there).
    saved = next(s for s in line.b.topology.streams() if s.name == BC)
    line.b.topology.forget_stream(BC)
    with pytest.raises(InsufficientKeys, match="no key stream leads from node node-b"):
        await line.a.delivery.get_keys(
            request_id="r",
            master_sae_id="alice",
            slave_sae_id="carol",
            number=3,
            size_bits=256,
            timeout=1.0,
        )
    after = {(n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()}
    await nothing_held(line)
    # Nothing left node-a but key IDs: its keys went back, nothing was dropped anywhere.
    assert all(after[k].dropped == before[k].dropped for k in after)
    assert all(after[k].consumed == before[k].consumed for k in after)
    line.b.topology.update_stream(
        {
            "metadata": {"name": BC},
            "spec": {"link": saved.link, "ksid": saved.ksid},
            "status": {"state": "Up"},
        }
    )
    keys = await enc(line, number=3)
    assert [k.material for k in await fetched(line, keys)] == [k.material for k in keys]


async def test_a_prepare_repeated_before_the_commit_is_answered_alike_and_changes_nothing(
    line: Line,
) -> None:
    await warm(line)
    recorder = RecordingPeers(line.b.clients)
    recorder.sent = []
    line.b.relay.peers = recorder
    pool = await line.a.delivery.pool_for(
        master_sae_id="alice", slave_sae_id="carol", number=2, size_bits=256
    )
    relay_id = str(uuid.uuid4())
    placed = await line.a.delivery.hold(pool=pool, number=2, hold_id=relay_id, timeout=10)
    await line.a.delivery.relay_prepare(pool=pool, hold=placed.hold, relay_id=relay_id, timeout=10)
    [(_, message)] = recorder.sent
    before = {
        (n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()
    }
    answer = await KrpPeers(line.b.clients).relay_prepare("node-c", message)
    assert answer.again
    # The same relay ID with another tag is refused.
    assert message.sealed is not None
    forged = message.model_copy(
        update={
            "sealed": message.sealed.model_copy(
                update={"tag": base64.b64encode(bytes(16)).decode()}
            )
        }
    )
    with pytest.raises(KrpRefused) as refused:
        await KrpPeers(line.b.clients).relay_prepare("node-c", forged)
    assert refused.value.reason == "BadTag"
    # The source's own retry of the whole prepare is answered alike too.
    await line.a.delivery.relay_prepare(pool=pool, hold=placed.hold, relay_id=relay_id, timeout=10)
    after = {(n.node_id, s): await n.counts(s) for n in line.nodes for s in await n.store.streams()}
    assert after == before
    # Then committed: carol gets the keys.
    await line.a.delivery.commit(
        stream=pool.stream,
        hold_id=relay_id,
        notice=line.a.delivery.relay_commit_notice(
            pool=pool, relay_id=relay_id, key_ids=placed.hold.key_ids, hand_over=True
        ),
    )
    line.a.upkeep.kick()
    keys = [DeliveredKey(key_id=k.key_id, material=k.material) for k in placed.hold.keys]
    got = await fetched(line, keys)
    assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
    assert [h.key_ids for h in line.c.handovers.received] == [tuple(placed.hold.key_ids)]


async def test_three_hops_reseal_at_every_repeater_and_spend_pads_on_every_later_link(
    redis_url: str, settings: DeliverySettings
) -> None:
    names = ("node-a", "node-b", "node-c", "node-d")
    links = [stream_name(x, y) for x, y in itertools.pairwise(names)]
    streams = {n: [s for s in links if n.removeprefix("node-") in _ends(s)] for n in names}
    urls = {n: redis_url.rsplit("/", 1)[0] + f"/{10 + i}" for i, n in enumerate(names)}
    nodes = [
        await start_node(n, urls[n], settings, streams=streams[n], capacity=4000) for n in names
    ]
    try:
        await join_line(nodes)
        register_line(nodes, nodes[0], "alice")
        register_line(nodes, nodes[3], "dave")
        await feed_line(nodes, 0, 2000)
        a, d = nodes[0], nodes[3]

        async def relay(number: int) -> list[DeliveredKey]:
            keys = await a.delivery.get_keys(
                request_id="r",
                master_sae_id="alice",
                slave_sae_id="dave",
                number=number,
                size_bits=256,
                timeout=20,
            )

            async def claim() -> list[DeliveredKey] | None:
                try:
                    return await d.delivery.get_keys_with_ids(
                        slave_sae_id="dave", master_sae_id="alice", key_ids=[k.key_id for k in keys]
                    )
                except UnknownKeys:
                    return None

            got: list[DeliveredKey] = await eventually_async(claim, what="the keys at node-d")
            assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
            return keys

        await relay(1)
        counts = {(n.node_id, s): await n.counts(s) for n in nodes for s in streams[n.node_id]}
        keys = await relay(3)
        after = {(n.node_id, s): await n.counts(s) for n in nodes for s in streams[n.node_id]}
        spent = {k: after[k].consumed - counts[k].consumed for k in after}
        assert spent == {
            ("node-a", links[0]): 3,
            ("node-b", links[0]): 3,
            ("node-b", links[1]): 4,
            ("node-c", links[1]): 4,
            ("node-c", links[2]): 4,
            ("node-d", links[2]): 4,
        }
        assert all(c.holding == 0 for c in after.values())
        for repeater in ("node-b", "node-c"):
            values = await stored_values(urls[repeater])
            assert not any(k.material in v for k in keys for v in values), repeater
    finally:
        for node in nodes:
            await node.stop_calling()
        for node in nodes:
            await node.stop()


def _ends(stream: str) -> tuple[str, str]:
    """The two node letters of a line stream's name ("node-a-node-b" -> ("a", "b"))."""
    first, second = stream.removeprefix("node-").split("-node-")
    return first, second


async def test_a_repeater_short_of_pads_gives_back_what_came_in_and_the_retry_goes_through(
    line: Line,
) -> None:
    await warm(line)
    owner, store = "alice/carol", line.b.store
    # node-b's pool towards node-c for the pair is empty, and so is its buffer (all of it in a
    # block pending for another pair), so node-b cannot hold pads for the next hop for now.
    level = await store.pool_level(stream=BC, owner=owner, size_bits=256)
    if level.keys:
        await store.take(stream=BC, owner=owner, size_bits=256, count=level.keys)
    blocker = await store.reserve_block(
        stream=BC,
        block_id=str(uuid.uuid4()),
        owner="x/y",
        size_bits=256,
        count=(await line.b.counts(BC)).available,
        from_newest=False,
        lease_ms=60_000,
        pending_ms=60_000,
    )
    request = asyncio.create_task(enc(line, number=2))
    client: Any = aioredis.Redis.from_url(line.urls["node-b"])
    blk = stream_keys(AB)[NAMES.index("blk")]

    async def given_back() -> bool:
        # node-b claimed what came in, waited for pads in vain, gave the keys back (a block of
        # their own under a new ID) and answered 503; node-a tries again.
        return any(b"@" in k for k in await client.hkeys(blk))

    try:
        await eventually_async(given_back, what="node-b giving back what came in")
    finally:
        await client.aclose()
    await store.refuse_block(stream=BC, block_id=blocker.block_id)
    keys = await request
    assert [k.material for k in await fetched(line, keys)] == [k.material for k in keys]
    await nothing_held(line)
