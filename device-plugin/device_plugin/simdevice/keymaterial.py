"""Key material of a simulated device pair: the same bytes at both ends, from a shared secret.

Each key stream is one AES-256-CTR keystream under a per-stream key
``HMAC-SHA256(root, "stream" || ksid)``, where ``root = HKDF-SHA256(pair secret)``: chunk
``index`` of ``size`` bytes is bytes ``[index * size, (index + 1) * size)`` of it (a stream has
one chunk size for life). Any process holding the pair secret derives the same chunk for the
same (KSID, index) without talking to the other end; without the secret the bytes are
unpredictable. A run of consecutive chunks is one cipher call, which is what lets the device
serve 100 Mbit/s and more. Called by ``protocol`` for every GET_KEY.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qss_api.qkd004 import MAX_INDEX

MIN_SECRET_BYTES = 16
_BLOCK = 16


class KeyMaterial:
    def __init__(self, *, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the pair secret must be at least {MIN_SECRET_BYTES} bytes")
        self._root = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"qss-qkd-sim/v2", info=b"pair root"
        ).derive(secret)
        self._stream_keys: dict[str, bytes] = {}

    def run(self, *, ksid: str, index: int, count: int, size: int) -> bytes:
        """``count`` consecutive chunks of ``size`` bytes from chunk ``index`` of ``ksid``."""
        if not 0 <= index <= MAX_INDEX or count < 0 or size <= 0:
            raise ValueError(f"chunk run {index}+{count} of {size} bytes is out of range")
        key = self._stream_keys.get(ksid)
        if key is None:
            key = hmac.new(self._root, b"stream\0" + ksid.encode(), hashlib.sha256).digest()
            self._stream_keys[ksid] = key
        block, skip = divmod(index * size, _BLOCK)
        encryptor = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(skip + count * size))[skip:]

    def chunk(self, *, ksid: str, index: int, size: int) -> bytes:
        """``size`` bytes of key material for chunk ``index`` of stream ``ksid``."""
        return self.run(ksid=ksid, index=index, count=1, size=size)

    def forget(self, ksid: str) -> None:
        """Drop the cached stream key of a closed stream."""
        self._stream_keys.pop(ksid, None)
