"""Key material of a simulated device pair: the same bytes at both ends, from a shared secret.

Chunk ``index`` of key stream ``ksid`` is AES-256-CTR keystream under a per-stream key
``HMAC-SHA256(root, "stream" || ksid)``, where ``root = HKDF-SHA256(pair secret)``; the counter
starts at ``index << 64``, so chunks never share counter blocks. Any process holding the pair
secret derives the same chunk for the same (KSID, index) without talking to the other end;
without the secret the bytes are unpredictable. Called by ``protocol`` for every GET_KEY.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_BYTES = 16
MAX_INDEX = 2**63 - 1


class KeyMaterial:
    def __init__(self, *, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the pair secret must be at least {MIN_SECRET_BYTES} bytes")
        self._root = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"qss-qkd-sim/v1", info=b"pair root"
        ).derive(secret)
        self._stream_keys: dict[str, bytes] = {}

    def chunk(self, *, ksid: str, index: int, size: int) -> bytes:
        """``size`` bytes of key material for chunk ``index`` of stream ``ksid``."""
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"chunk index {index} is out of range")
        key = self._stream_keys.get(ksid)
        if key is None:
            key = hmac.new(self._root, b"stream\0" + ksid.encode(), hashlib.sha256).digest()
            self._stream_keys[ksid] = key
        counter = (index << 64).to_bytes(16, "big")
        encryptor = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
        return encryptor.update(bytes(size)) + encryptor.finalize()

    def forget(self, ksid: str) -> None:
        """Drop the cached stream key of a closed stream."""
        self._stream_keys.pop(ksid, None)
