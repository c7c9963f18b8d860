"""The ring of held keys: bounded, oldest out first, remembering delivered requests, and
rebuilt exactly from the snapshot it wrote."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from sidecar.files import INDEX_FILE, STATE_FILE
from sidecar.keyring import DELIVERED_MEMORY, HeldKey, Ring, RingError


def keys(n: int, size: int = 32) -> list[HeldKey]:
    return [
        HeldKey(
            key_id=str(uuid.uuid4()),
            material=os.urandom(size),
            master_sae_id="alice",
            slave_sae_id="bob",
            issued_at="2030-01-01T00:00:00.000Z",
        )
        for _ in range(n)
    ]


def test_adding_keeps_the_newest_max_keys_and_remembers_the_request() -> None:
    first, second = keys(3), keys(3)
    ring = Ring().add(first, request_uid="r1", max_keys=4).add(second, request_uid="r2", max_keys=4)
    assert [k.key_id for k in ring.keys] == [k.key_id for k in (first[2:] + second)]
    assert ring.current == second[-1]
    assert ring.delivered == ("r1", "r2")
    assert ring.generation == 2


def test_a_key_already_held_is_never_added_twice() -> None:
    batch = keys(2)
    ring = (
        Ring()
        .add(batch, request_uid="r1", max_keys=10)
        .add(batch[:1], request_uid="r2", max_keys=10)
    )
    assert len(ring.keys) == 2


def test_the_memory_of_delivered_requests_is_bounded() -> None:
    ring = Ring()
    for i in range(DELIVERED_MEMORY + 5):
        ring = ring.add(keys(1), request_uid=f"r{i}", max_keys=2)
    assert len(ring.delivered) == DELIVERED_MEMORY
    assert ring.delivered[-1] == f"r{DELIVERED_MEMORY + 4}"


def test_files_are_key_bytes_an_index_and_the_state_and_rebuild_the_same_ring() -> None:
    ring = Ring().add(keys(3, size=64), request_uid=str(uuid.uuid4()), max_keys=10)
    files = ring.files()
    index = json.loads(files[INDEX_FILE])
    assert index["current"] == ring.keys[-1].key_id
    assert [e["key_ID"] for e in index["keys"]] == [k.key_id for k in ring.keys]
    assert {e["size"] for e in index["keys"]} == {512}
    assert all(files[k.key_id] == k.material for k in ring.keys)
    assert ring.links() == {"current": ring.keys[-1].key_id}
    assert Ring.from_files(files) == ring
    # Key bytes appear in the key files only.
    for key in ring.keys:
        assert key.material.hex() not in files[INDEX_FILE].decode()
        assert key.material not in files[STATE_FILE]


def test_a_snapshot_with_a_missing_or_short_key_file_is_refused() -> None:
    ring = Ring().add(keys(2), request_uid=str(uuid.uuid4()), max_keys=10)
    files = ring.files()
    del files[ring.keys[0].key_id]
    with pytest.raises(RingError, match="missing or not 256 bits"):
        Ring.from_files(files)
    files = ring.files()
    files[ring.keys[1].key_id] = b"short"
    with pytest.raises(RingError):
        Ring.from_files(files)
    with pytest.raises(RingError, match=r"no \.state\.json"):
        Ring.from_files({INDEX_FILE: files[INDEX_FILE]})
    with pytest.raises(RingError, match="malformed"):
        Ring.from_files({**files, INDEX_FILE: b"[]"})


def test_key_material_stays_out_of_repr() -> None:
    (key,) = keys(1)
    assert key.material.hex() not in repr(key)
    assert repr(key.material) not in repr(key)
