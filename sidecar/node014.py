"""The sidecar as an ETSI GS QKD 014 client of its node: mutual TLS with the SAE's credentials.

``sidecar.keyapi`` forwards the app's checked requests through ``NodeKeyApi.request``. The
credentials come from the Sae's credentials Secret, mounted into the sidecar only
(``tls.crt``, ``tls.key``, ``ca.crt``). The node renews an SAE's certificate before it expires
and the kubelet swaps the mounted files; the client notices the change on the next request and
connects with the new certificate, without a restart.

Answers are returned as they came (status and parsed JSON); reading them against the standard
is the caller's job. A node that cannot be reached is ``NodeUnreachable``.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from qss_api.etsi014 import API_PREFIX

log = logging.getLogger(__name__)

# The node's enc_keys waits up to 5 s for keys; 014 clients commonly give up after 10 s.
TIMEOUT_SECONDS: Final = 10.0
# A node's answer larger than this is not a 014 answer (1,000 keys of 4 KiB in base64: 5.5 MB).
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024

TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_CRT: Final = "ca.crt"


class NodeUnreachable(Exception):
    """The node's 014 API could not be asked; the message says why (no key material)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class NodeKeyApi:
    """One SAE's connection to its node's 014 API."""

    def __init__(self, base_url: str, credentials_dir: Path, *, timeout: float = TIMEOUT_SECONDS):
        self.base_url = base_url.rstrip("/")
        self._dir = credentials_dir
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loaded: tuple[int, ...] | None = None

    def _fingerprint(self) -> tuple[int, ...]:
        """Changes whenever the kubelet replaces the mounted credentials."""
        out: list[int] = []
        for name in (TLS_CRT, TLS_KEY, CA_CRT):
            info = os.stat(self._dir / name)
            out += [info.st_ino, info.st_mtime_ns, info.st_size]
        return tuple(out)

    async def _client(self) -> aiohttp.ClientSession:
        try:
            fingerprint = self._fingerprint()
            if self._session is not None and fingerprint == self._loaded:
                return self._session
            context = ssl.create_default_context(cafile=str(self._dir / CA_CRT))
            context.load_cert_chain(self._dir / TLS_CRT, self._dir / TLS_KEY)
        except (OSError, ssl.SSLError) as exc:
            raise NodeUnreachable(
                f"the SAE's credentials in {self._dir} cannot be used ({type(exc).__name__}); "
                "is the Sae registered and its credentials Secret mounted?"
            ) from None
        if self._session is not None:
            await self._session.close()
            log.info("SAE credentials changed; reconnecting to the node with the new ones")
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=context)
        )
        self._loaded = fingerprint
        return self._session

    async def request(
        self,
        method: str,
        sae_id: str,
        api_method: str,
        *,
        json_body: Any = None,
        params: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        session = await self._client()
        url = f"{self.base_url}{API_PREFIX}/{sae_id}/{api_method}"
        headers = {"Accept": "application/json"}
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with session.request(
                method, url, data=data, params=list(params), headers=headers
            ) as response:
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise NodeUnreachable("the node's answer is larger than any 014 answer")
                    chunks.append(chunk)
                return Answer(status=response.status, body=b"".join(chunks))
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise NodeUnreachable(
                f"the node's key API at {self.base_url} did not answer ({type(exc).__name__})"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
