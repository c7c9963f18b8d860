"""Argument checks of the key store's public methods: they run before any Redis round trip,
so a bad call fails at once with a message that says what was wrong (never with key material).
Used by ``controllers.keystore.store`` only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
UUID = re.compile(f"^{UUID_PATTERN}$")
# Many UUIDs back to back (a batch's IDs joined), checked in one regex call at C speed.
UUIDS = re.compile(f"(?:{UUID_PATTERN})*")
_HEX_AND_DASH = b"0123456789abcdef-"
_DASHES = (8, 13, 18, 23)


def joined_uuids_ok(joined: bytes) -> bool:
    """Whether ``joined`` is lowercase UUIDs back to back, 36 bytes each: only hex digits and
    dashes, and exactly the dashes of a UUID, all checked by whole-buffer operations (a QKDM
    adds hundreds of thousands of chunk IDs a second; the regex takes about a microsecond an
    ID)."""
    count, rest = divmod(len(joined), 36)
    return (
        not rest
        and not joined.translate(None, _HEX_AND_DASH)
        and joined.count(b"-") == 4 * count
        and all(joined[at::36] == b"-" * count for at in _DASHES)
    )


_TOKEN = re.compile(r"^[A-Za-z0-9._:@/-]{1,253}$")
# Upper bound on one key (bits): 1 MiB, far above any ETSI 014 key size.
MAX_KEY_BITS = 8 * 1024 * 1024


def check_token(what: str, value: str) -> None:
    if not _TOKEN.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-253 characters of letters, digits and '._:@/-'"
        )


def check_key_ids(key_ids: Sequence[str]) -> None:
    if not key_ids:
        raise ValueError("no key IDs given")
    for key_id in key_ids:
        if not UUID.match(key_id):
            raise ValueError(f"key ID {key_id!r} is not a lowercase UUID")
    if len(set(key_ids)) != len(key_ids):
        raise ValueError("the same key ID is given more than once")


def check_size(size_bits: int) -> None:
    if size_bits <= 0 or size_bits % 8 or size_bits > MAX_KEY_BITS:
        raise ValueError(
            f"key size {size_bits} bits must be a positive multiple of 8 up to {MAX_KEY_BITS}"
        )
