"""Identifiers both ends of a key stream derive alike, without talking to each other.

The two QKDMs of a KeyStream agree on its base KSID (``default_ksid``, unless the KeyStream
names one) and on the ID of every chunk: chunk ``i`` of a device key stream is the same key
material at both ends (ETSI GS QKD 004 GET_KEY by index), so its ID is a name-based UUID of
(KSID, i). Called by the pump for every chunk it stores.

When a device key stream cannot continue (the device restarted, or the stream was aborted for
QBER), the QKDMs replace it with the next of a sequence of KSIDs both derive from the base:
epoch 0 is the base itself, epoch ``e`` >= 1 is ``epoch_ksid(base, e)``, a UUID (version 8, the
RFC 9562 form for application-defined UUIDs) whose first 96 bits come from the base and whose
last 32 bits are ``e``. So either end can tell, from a KSID alone, whether it belongs to its
stream and which epoch it is (``epoch_of``); see ``docs/key-streams.md``.
"""

from __future__ import annotations

import hashlib
import uuid

# Namespace of kube-qss's KSIDs: uuid5(NAMESPACE_URL, "https://qss.dev/ksid").
KSID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://qss.dev/ksid")
MAX_EPOCH = 2**32 - 1


def default_ksid(*, node_a: str, node_b: str, stream: str) -> str:
    """The KSID of a KeyStream named ``stream`` on the link between two nodes (order-free)."""
    first, second = sorted((node_a, node_b))
    return str(uuid.uuid5(KSID_NAMESPACE, f"{first}/{second}/{stream}"))


def _family(base: str) -> bytes:
    """The 12 leading bytes every epoch >= 1 of ``base`` shares (version and variant set)."""
    prefix = bytearray(hashlib.sha256(b"qss-ksid-epochs\0" + uuid.UUID(base).bytes).digest()[:12])
    prefix[6] = (prefix[6] & 0x0F) | 0x80  # version 8
    prefix[8] = (prefix[8] & 0x3F) | 0x80  # RFC 9562 variant
    return bytes(prefix)


def epoch_ksid(base: str, epoch: int) -> str:
    """The KSID of epoch ``epoch`` of the key stream whose first KSID is ``base``."""
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"key stream epoch {epoch} is out of range")
    if epoch == 0:
        return base
    return str(uuid.UUID(bytes=_family(base) + epoch.to_bytes(4, "big")))


def epoch_of(base: str, ksid: str) -> int | None:
    """The epoch ``ksid`` is of the stream whose first KSID is ``base``; None if it is not."""
    if ksid == base:
        return 0
    try:
        raw = uuid.UUID(ksid).bytes
    except ValueError:
        return None
    if raw[:12] != _family(base):
        return None
    epoch = int.from_bytes(raw[12:], "big")
    return epoch if epoch >= 1 else None


def chunk_id(ksid: str, index: int) -> str:
    """The ID of chunk ``index`` of key stream ``ksid``, the same on both nodes."""
    if index < 0:
        raise ValueError(f"chunk index must not be negative, got {index}")
    return str(uuid.uuid5(uuid.UUID(ksid), str(index)))


# Byte 6 of a name-based SHA-1 UUID carries its version (5), byte 8 its variant (RFC 4122).
_VERSION_5 = bytes((b & 0x0F) | 0x50 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
# Where each of a UUID's 32 hex digits goes in its 36-character form (dashes after 8, 12, 16, 20).
_PLACE = [k + (k >= 8) + (k >= 12) + (k >= 16) + (k >= 20) for k in range(32)]


def chunk_ids(ksid: str, first: int, count: int) -> list[str]:
    """``chunk_id(ksid, i)`` for ``first <= i < first + count``."""
    joined = joined_chunk_ids(ksid, first, count).decode()
    return [joined[i : i + 36] for i in range(0, 36 * count, 36)]


def joined_chunk_ids(ksid: str, first: int, count: int) -> bytes:
    """The IDs of chunks ``first`` .. ``first + count - 1``, 36 ASCII bytes each, back to back
    (as ``KeyStore.add_run`` takes them). The QKDM names hundreds of thousands of chunks a
    second, so only the hashing is done per chunk (the namespace hashed once and copied): the
    version and variant bits, the hex and the dashes are set for all chunks at once, by strided
    slices at C speed."""
    if first < 0:
        raise ValueError(f"chunk index must not be negative, got {first}")
    copy = hashlib.sha1(uuid.UUID(ksid).bytes).copy
    digests: list[bytes] = []
    append = digests.append
    for index in range(first, first + count):
        digest = copy()
        digest.update(b"%d" % index)
        append(digest.digest())
    sha1s = b"".join(digests)  # 20 bytes each; a UUID takes the first 16
    raw = bytearray(16 * count)
    for i in range(16):
        raw[i::16] = sha1s[i::20]
    raw[6::16] = raw[6::16].translate(_VERSION_5)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    hexed = raw.hex().encode()
    text = bytearray(b"-" * (36 * count))
    for k, place in enumerate(_PLACE):
        text[place::36] = hexed[k::32]
    return bytes(text)
