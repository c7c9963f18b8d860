"""Key material: both ends give the same bytes for a (KSID, index); anything else differs."""

from __future__ import annotations

import base64
import os

import pytest

from device_plugin.simdevice.keymaterial import KeyMaterial
from qss_api.qkd004 import Keys, Metadata, decode_reply, encode, encode_keys
from tests.unit.simdevice.helpers import SECRET, FakeClock, Pair, key_bytes


async def test_both_ends_give_identical_bytes_for_the_same_index(
    pair: Pair, clock: FakeClock
) -> None:
    ksid = await pair.open_both(key_chunk_size=16)
    clock.advance(1.0)
    at_a = [key_bytes(await pair.a.get_key(key_stream_id=ksid)) for _ in range(5)]
    at_b = [key_bytes(await pair.b.get_key(key_stream_id=ksid, index=i)) for i in range(5)]
    assert at_a == at_b
    assert len(set(at_a)) == 5
    assert all(len(k) == 16 for k in at_a)


async def test_get_key_returns_the_index_it_served(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both()
    clock.advance(1.0)
    assert (await pair.a.get_key(key_stream_id=ksid))["index"] == 0
    assert (await pair.a.get_key(key_stream_id=ksid, index=7))["index"] == 7
    # Without an index, the end goes on after the highest index it served.
    assert (await pair.a.get_key(key_stream_id=ksid))["index"] == 8


async def test_different_streams_give_different_bytes(pair: Pair, clock: FakeClock) -> None:
    first = await pair.open_both(max_bps=640)
    second = await pair.open_both(max_bps=640)
    clock.advance(1.0)
    assert key_bytes(await pair.a.get_key(key_stream_id=first, index=0)) != key_bytes(
        await pair.a.get_key(key_stream_id=second, index=0)
    )


async def test_chunk_size_is_in_bytes(pair: Pair, clock: FakeClock) -> None:
    ksid = await pair.open_both(key_chunk_size=4)
    clock.advance(1.0)
    assert len(key_bytes(await pair.a.get_key(key_stream_id=ksid))) == 4


def test_key_material_depends_on_the_pair_secret() -> None:
    mine = KeyMaterial(secret=SECRET)
    same = KeyMaterial(secret=SECRET)
    other = KeyMaterial(secret=b"another secret of 32 bytes......")
    chunk = mine.chunk(ksid="k", index=3, size=64)
    assert same.chunk(ksid="k", index=3, size=64) == chunk
    assert other.chunk(ksid="k", index=3, size=64) != chunk
    assert mine.chunk(ksid="other", index=3, size=64) != chunk


def test_a_run_is_its_chunks_one_after_another() -> None:
    keys = KeyMaterial(secret=SECRET)
    for size in (1, 5, 16, 32, 100):
        run = keys.run(ksid="k", index=7, count=9, size=size)
        assert run == b"".join(keys.chunk(ksid="k", index=i, size=size) for i in range(7, 16))
        if size >= 5:
            assert len({run[i : i + size] for i in range(0, len(run), size)}) == 9


@pytest.mark.parametrize("request_id", [None, 7, -3, 'a "quoted" id'])
def test_a_key_reply_is_encoded_as_the_keys_model_would_be(request_id: int | str | None) -> None:
    material = os.urandom(3 * 32)
    metadata = Metadata(qber=0.0123, rate_bps=2_000_000_000)
    fast = encode_keys(index=41, count=3, material=material, metadata=metadata, id=request_id)
    model = Keys(
        status=0,
        id=request_id,
        index=41,
        count=3,
        key_buffer=base64.b64encode(material).decode(),
        metadata=metadata,
    )
    assert fast == encode(model)
    assert decode_reply("GET_KEY", fast) == model
