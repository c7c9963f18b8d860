"""The IDs both QKDMs of a stream derive alike: chunk IDs, and the KSID sequence that replaces
a device key stream that cannot continue."""

from __future__ import annotations

import uuid

import pytest

from controllers.qkdm.ids import (
    MAX_EPOCH,
    chunk_id,
    chunk_ids,
    default_ksid,
    epoch_ksid,
    epoch_of,
    joined_chunk_ids,
)

BASE = default_ksid(node_a="node-b", node_b="node-a", stream="s")


def test_both_ends_derive_the_same_base_ksid() -> None:
    assert default_ksid(node_a="node-a", node_b="node-b", stream="s") == BASE
    assert default_ksid(node_a="node-a", node_b="node-b", stream="t") != BASE


def test_the_fast_chunk_ids_are_the_chunk_ids() -> None:
    assert chunk_ids(BASE, 1_000_000, 50) == [
        chunk_id(BASE, i) for i in range(1_000_000, 1_000_050)
    ]
    assert chunk_id(BASE, 7) == str(uuid.uuid5(uuid.UUID(BASE), "7"))


@pytest.mark.parametrize("epoch", [0, 1, 2, 1000, MAX_EPOCH])
def test_an_epochs_ksid_names_its_stream_and_epoch(epoch: int) -> None:
    ksid = epoch_ksid(BASE, epoch)
    assert epoch_of(BASE, ksid) == epoch
    if epoch:
        assert uuid.UUID(ksid).version == 8


def test_epoch_zero_is_the_base_and_the_others_are_all_different() -> None:
    assert epoch_ksid(BASE, 0) == BASE
    assert len({epoch_ksid(BASE, e) for e in range(500)}) == 500


def test_another_streams_ksids_are_not_ours() -> None:
    other = default_ksid(node_a="node-a", node_b="node-b", stream="t")
    assert epoch_of(BASE, epoch_ksid(other, 3)) is None
    assert epoch_of(BASE, other) is None
    assert epoch_of(BASE, str(uuid.uuid4())) is None
    assert epoch_of(BASE, "not a uuid") is None


def test_chunk_ids_of_two_epochs_never_meet() -> None:
    first = set(chunk_ids(epoch_ksid(BASE, 0), 0, 1000))
    second = set(chunk_ids(epoch_ksid(BASE, 1), 0, 1000))
    assert not first & second


def test_the_fast_chunk_ids_match_uuid5_for_every_variant_digit() -> None:
    # 2,000 IDs cover all 16 values of the digit that carries the variant bits, and indices of
    # every length from 1 to 7 digits.
    indices = [*range(0, 1000), *range(9_999_000, 10_000_000)]
    fast = chunk_ids(BASE, 0, 1000) + chunk_ids(BASE, 9_999_000, 1000)
    assert fast == [str(uuid.uuid5(uuid.UUID(BASE), str(i))) for i in indices]
    assert {h[19] for h in fast} == set("89ab")


def test_the_joined_chunk_ids_are_the_chunk_ids_back_to_back() -> None:
    assert joined_chunk_ids(BASE, 123, 500) == "".join(chunk_ids(BASE, 123, 500)).encode()
    assert joined_chunk_ids(BASE, 5, 0) == b""
