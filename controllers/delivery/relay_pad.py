"""One hop of the key relay, in pure functions: relayed keys encrypted with one-time-pad keys of
the hop's link, and an information-theoretically secure tag over the whole message.

Each relayed key is XORed with a pad key of the same size (``seal``); the message's tag is
Poly1305 keyed by ``TAG_KEY_BYTES`` of fresh link key (Wegman-Carter: an almost-universal hash
with a one-time key, so a forger succeeds with probability about 2^-100 per try whatever its
computing power). Pads and tag keys come from the link's key stream and are used once: the
relay takes them out of the store in the same step that reads them. ``open_sealed`` checks the
tag before it decrypts anything and raises ``BadTag`` otherwise. Called by
``controllers.delivery.relay`` (both ends of a hop) and the unit tests.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

TAG_KEY_BYTES = 32  # Poly1305's one-time key (r and s)
TAG_BYTES = 16


class BadTag(Exception):
    """The message's tag does not verify: it was altered (or its pads are not these)."""


def tag_keys_needed(size_bits: int) -> int:
    """How many keys of ``size_bits`` one hop spends on its tag key."""
    return math.ceil(TAG_KEY_BYTES * 8 / size_bits)


def pad_count(*, keys: int, size_bits: int) -> int:
    """Keys of ``size_bits`` one hop takes from its link for ``keys`` relayed keys."""
    return keys + tag_keys_needed(size_bits)


def header_bytes(fields: dict[str, Any]) -> bytes:
    """The canonical bytes of a message's fields the tag covers besides the ciphertext."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("a key and its pad differ in length")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _tag_key(tag_material: Sequence[bytes]) -> bytes:
    joined = b"".join(tag_material)
    if len(joined) < TAG_KEY_BYTES:
        raise ValueError(f"a tag key needs {TAG_KEY_BYTES} bytes of key material")
    return joined[:TAG_KEY_BYTES]


def seal(
    *,
    header: bytes,
    keys: Sequence[bytes],
    pads: Sequence[bytes],
    tag_material: Sequence[bytes],
) -> tuple[bytes, bytes]:
    """(ciphertext, tag): the keys XORed with their pads, back to back, and the tag over the
    header and the ciphertext."""
    if len(keys) != len(pads):
        raise ValueError(f"{len(keys)} keys need {len(keys)} pads, got {len(pads)}")
    ciphertext = b"".join(_xor(k, p) for k, p in zip(keys, pads, strict=True))
    tag = Poly1305.generate_tag(_tag_key(tag_material), _mac_input(header, ciphertext))
    return ciphertext, tag


def open_sealed(
    *,
    header: bytes,
    ciphertext: bytes,
    tag: bytes,
    pads: Sequence[bytes],
    tag_material: Sequence[bytes],
) -> list[bytes]:
    """The relayed keys, once the tag verifies (``BadTag`` otherwise, before any decryption)."""
    try:
        Poly1305.verify_tag(_tag_key(tag_material), _mac_input(header, ciphertext), tag)
    except InvalidSignature:
        raise BadTag("the relay message's tag does not verify") from None
    if len(ciphertext) != sum(len(p) for p in pads):
        raise BadTag("the relay message's ciphertext does not match its pads")
    keys, at = [], 0
    for pad in pads:
        keys.append(_xor(ciphertext[at : at + len(pad)], pad))
        at += len(pad)
    return keys


def same_tag(a: str, b: str) -> bool:
    """Constant-time comparison of two tags (hex)."""
    return hmac.compare_digest(a, b)


def _mac_input(header: bytes, ciphertext: bytes) -> bytes:
    # Length-prefixed, so no header/ciphertext split of one input reads as another.
    return len(header).to_bytes(8, "big") + header + ciphertext
