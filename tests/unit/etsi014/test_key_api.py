"""The 014 key API doing its job over real HTTPS with client certificates: status, enc_keys
then dec_keys with the same bytes, in POST and GET form, each key once."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import uuid

import pytest

from controllers.delivery.api import MAX_KEY_SIZE, MAX_KEYS_PER_REQUEST, MIN_KEY_SIZE
from tests.etsi014_client import Etsi014Error, key_map
from tests.unit.etsi014.conftest import GET_KEYS_TIMEOUT, KEY_SIZE, NODE_ID, PEER_NODE_ID, Kme


async def test_status_reports_the_standard_fields_for_the_callers_pair(kme: Kme) -> None:
    status = await kme.sae("sae-a").status("sae-b")
    assert status == {
        "source_KME_ID": NODE_ID,
        "target_KME_ID": PEER_NODE_ID,
        "master_SAE_ID": "sae-a",
        "slave_SAE_ID": "sae-b",
        "key_size": KEY_SIZE,
        "stored_key_count": 100,
        "max_key_count": 1000,
        "max_key_per_request": MAX_KEYS_PER_REQUEST,
        "max_key_size": MAX_KEY_SIZE,
        "min_key_size": MIN_KEY_SIZE,
        "max_SAE_ID_count": 0,
    }


async def test_stored_key_count_follows_what_was_taken(kme: Kme) -> None:
    sae_a = kme.sae("sae-a")
    await sae_a.enc_keys("sae-b", number=3)
    assert (await sae_a.status("sae-b"))["stored_key_count"] == 97


@pytest.mark.parametrize(("enc_method", "dec_method"), [("POST", "POST"), ("GET", "GET")])
async def test_enc_keys_then_dec_keys_gives_the_slave_the_same_bytes(
    kme: Kme, enc_method: str, dec_method: str
) -> None:
    container = await kme.sae("sae-a").enc_keys("sae-b", number=3, size=512, method=enc_method)
    assert set(container) == {"keys"}
    assert all(set(entry) == {"key_ID", "key"} for entry in container["keys"])
    master_keys = key_map(container)
    assert len(master_keys) == 3
    assert all(len(material) == 64 for material in master_keys.values())
    assert all(str(uuid.UUID(key_id)) == key_id for key_id in master_keys)

    ids = list(reversed(master_keys))
    slave = await kme.sae("sae-b").dec_keys("sae-a", ids, method=dec_method)
    assert [entry["key_ID"] for entry in slave["keys"]] == ids  # in the order asked
    assert key_map(slave) == master_keys


async def test_keys_are_standard_base64_with_padding(kme: Kme) -> None:
    container = await kme.sae("sae-a").enc_keys("sae-b", number=5, size=8)
    for entry in container["keys"]:
        assert re.fullmatch(r"[A-Za-z0-9+/]{2}==", entry["key"])
        assert len(base64.b64decode(entry["key"], validate=True)) == 1


async def test_enc_keys_without_parameters_gives_one_key_of_the_pairs_size(kme: Kme) -> None:
    for method in ("POST", "GET"):
        keys = key_map(await kme.sae("sae-a").enc_keys("sae-b", method=method))
        assert [len(k) * 8 for k in keys.values()] == [KEY_SIZE]


async def test_enc_keys_passes_a_fresh_request_id_and_the_configured_timeout(kme: Kme) -> None:
    sae_a = kme.sae("sae-a")
    await sae_a.enc_keys("sae-b", number=1)
    await sae_a.enc_keys("sae-b", number=1, method="GET")
    calls = [kwargs for name, kwargs in kme.delivery.calls if name == "get_keys"]
    assert len(calls) == 2
    assert calls[0]["request_id"] != calls[1]["request_id"]
    assert all(str(uuid.UUID(c["request_id"])) == c["request_id"] for c in calls)
    assert all(c["timeout"] == GET_KEYS_TIMEOUT for c in calls)
    assert all((c["master"], c["slave"]) == ("sae-a", "sae-b") for c in calls)


async def test_a_key_is_delivered_to_the_slave_only_once(kme: Kme) -> None:
    ids = list(key_map(await kme.sae("sae-a").enc_keys("sae-b", number=2)))
    sae_b = kme.sae("sae-b")
    await sae_b.dec_keys("sae-a", ids)
    with pytest.raises(Etsi014Error) as again:
        await sae_b.dec_keys("sae-a", ids[:1], method="GET")
    assert again.value.status == 400
    assert "already delivered" in (again.value.message or "")
    assert again.value.details[0]["reason"] == "UnknownKeys"


async def test_only_the_slave_the_keys_were_made_for_gets_them(kme: Kme) -> None:
    kme.register_sae("sae-c")
    kme.delivery.link("sae-a", "sae-c")
    ids = list(key_map(await kme.sae("sae-a").enc_keys("sae-b", number=1)))
    with pytest.raises(Etsi014Error) as wrong_slave:
        await kme.sae("sae-c").dec_keys("sae-a", ids)
    assert wrong_slave.value.status == 400
    # The rightful slave still gets them: the refused attempt took nothing.
    assert list(key_map(await kme.sae("sae-b").dec_keys("sae-a", ids))) == ids


async def test_enc_keys_waits_for_keys_that_arrive_within_the_timeout(kme: Kme) -> None:
    kme.delivery.pairs[("sae-a", "sae-b")].stock_bits = 0
    request = asyncio.ensure_future(kme.sae("sae-a").enc_keys("sae-b", number=2))
    await asyncio.sleep(GET_KEYS_TIMEOUT / 3)
    assert not request.done()
    await kme.delivery.add_keys("sae-a", "sae-b", 2)
    assert len(key_map(await request)) == 2


async def test_concurrent_enc_keys_get_distinct_keys(kme: Kme) -> None:
    sae_a = kme.sae("sae-a")
    containers = await asyncio.gather(*(sae_a.enc_keys("sae-b", number=4) for _ in range(20)))
    ids = [key_id for c in containers for key_id in key_map(c)]
    assert len(ids) == len(set(ids)) == 80
    assert (await sae_a.status("sae-b"))["stored_key_count"] == 20


async def test_answers_are_json_and_not_cached(kme: Kme) -> None:
    client = kme.sae("sae-a")
    for method, path in (("GET", "status"), ("POST", "enc_keys"), ("GET", "nope")):
        answer = await client.raw(method, f"{kme.server.url}/api/v1/keys/sae-b/{path}")
        assert answer.content_type == "application/json"
        assert answer.headers["Cache-Control"] == "no-store"
        assert isinstance(answer.json(), dict)


async def test_no_key_material_reaches_the_log(kme: Kme, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    container = await kme.sae("sae-a").enc_keys("sae-b", number=4, size=128)
    keys = key_map(container)
    await kme.sae("sae-b").dec_keys("sae-a", list(keys))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "enc_keys delivered 4 keys of 128 bits" in text
    for entry in container["keys"]:
        assert entry["key"] not in text
        assert keys[entry["key_ID"]].hex() not in text
