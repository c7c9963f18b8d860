"""A small ETSI GS QKD 014 (V1.1.1) client for the tests, written from the standard's text.

It stands in for the unmodified 014 clients the API must serve (strongSwan's QKD plugin,
WireGuard PSK rotators), so it deliberately imports nothing from ``controllers.etsi014``: what
it knows of paths, methods, members and status codes comes from the standard, clause 5 (Get
status, Get key, Get key with key IDs) and clause 6 (Status, Key request, Key IDs, Key container,
Error). Unit tests of the 014 server and the integration tests of two nodes use it.

An SAE connects with HTTPS and its client certificate; it trusts the KME's CA::

    async with Etsi014Client(url, cert_pem=..., key_pem=..., ca_pem=...) as sae:
        container = await sae.enc_keys("sae-b", number=2, size=256)
        keys = key_map(container)  # key_ID -> bytes

Answers other than 200 raise ``Etsi014Error`` with the status and the parsed body.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

# Clause 5.1: every method lives under this path, followed by the SAE ID and the method name.
API_PREFIX = "/api/v1/keys"

Query = Sequence[tuple[str, str | int]]


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as received."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed, if it is JSON; else None."""
        if self.content_type != "application/json":
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Etsi014Error(Exception):
    """The KME answered with an error status (400, 401, 503, ...); ``body`` is the parsed JSON
    Error (``message``, optional ``details``) or the raw text if it was not JSON."""

    def __init__(self, status: int, body: Any, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")

    @property
    def message(self) -> str | None:
        return self.body.get("message") if isinstance(self.body, dict) else None

    @property
    def details(self) -> list[Any]:
        details = self.body.get("details") if isinstance(self.body, dict) else None
        return details if isinstance(details, list) else []


def key_map(container: Mapping[str, Any]) -> dict[str, bytes]:
    """The keys of a Key container, key_ID -> key material (base64-decoded, strictly)."""
    return {
        entry["key_ID"]: base64.b64decode(entry["key"], validate=True)
        for entry in container["keys"]
    }


def _ssl_context(cert_pem: bytes | None, key_pem: bytes | None, ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    if cert_pem is not None and key_pem is not None:
        # ssl only loads a key from a file; it lives on disk for as long as this call takes.
        with tempfile.TemporaryDirectory(prefix="etsi014-client-") as tmp:
            cert_path, key_path = Path(tmp, "sae.crt"), Path(tmp, "sae.key")
            for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
                path.touch(mode=0o600)
                path.write_bytes(data)
            context.load_cert_chain(cert_path, key_path)
    return context


class Etsi014Client:
    """One SAE talking to one KME. ``cert_pem``/``key_pem`` None: connect without a client
    certificate (to see the KME refuse it). ``server_hostname`` overrides the name checked
    against the KME's certificate (default: the URL's host)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_pem: bytes,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        server_hostname: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = _ssl_context(cert_pem, key_pem, ca_pem)
        self._server_hostname = server_hostname
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _url(self, sae_id: str, method: str) -> str:
        return f"{self.base_url}{API_PREFIX}/{quote(sae_id, safe='')}/{method}"

    async def request(
        self,
        http_method: str,
        sae_id: str,
        api_method: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Query | None = None,
    ) -> Any:
        """One call: the parsed JSON of a 200 answer, else ``Etsi014Error``. ``data`` sends raw
        bytes (e.g. malformed JSON) instead of ``json_body``."""
        return await self.request_path(
            http_method,
            self._url(sae_id, api_method),
            json_body=json_body,
            data=data,
            params=params,
        )

    async def request_path(
        self,
        http_method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Query | None = None,
    ) -> Any:
        answer = await self.raw(http_method, url, json_body=json_body, data=data, params=params)
        parsed = answer.json()
        if answer.status != 200:
            raise Etsi014Error(
                answer.status,
                parsed if parsed is not None else answer.body.decode(errors="replace"),
                answer.content_type,
            )
        if parsed is None:
            raise Etsi014Error(
                answer.status, answer.body.decode(errors="replace"), answer.content_type
            )
        return parsed

    async def raw(
        self,
        http_method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        params: Query | None = None,
    ) -> Answer:
        """Any request to the KME, answered as it came (no status check)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        headers = {"Accept": "application/json"}
        body: bytes | None = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if body is not None:
            # Clause 5.1: request bodies are JSON.
            headers["Content-Type"] = "application/json"
        async with self._session.request(
            http_method,
            url,
            data=body,
            params=[(k, str(v)) for k, v in params] if params is not None else None,
            headers=headers,
            server_hostname=self._server_hostname,
        ) as response:
            return Answer(
                status=response.status,
                content_type=response.content_type,
                headers=dict(response.headers),
                body=await response.read(),
            )

    async def status(self, slave_sae_id: str) -> dict[str, Any]:
        """Get status (clause 5.2): GET {slave_SAE_ID}/status."""
        result: dict[str, Any] = await self.request("GET", slave_sae_id, "status")
        return result

    async def enc_keys(
        self,
        slave_sae_id: str,
        number: int | None = None,
        size: int | None = None,
        *,
        method: str = "POST",
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Get key (clause 5.3) as master SAE: POST a Key request (``number``, ``size`` and any
        ``extra`` members such as ``extension_mandatory``), or GET with ``?number=&size=``.
        Omitted parameters take the KME's defaults."""
        if method == "GET":
            params: list[tuple[str, str | int]] = []
            if number is not None:
                params.append(("number", number))
            if size is not None:
                params.append(("size", size))
            result: dict[str, Any] = await self.request(
                "GET", slave_sae_id, "enc_keys", params=params
            )
            return result
        body: dict[str, Any] = dict(extra or {})
        if number is not None:
            body["number"] = number
        if size is not None:
            body["size"] = size
        result = await self.request("POST", slave_sae_id, "enc_keys", json_body=body)
        return result

    async def dec_keys(
        self, master_sae_id: str, key_ids: Iterable[str], *, method: str = "POST"
    ) -> dict[str, Any]:
        """Get key with key IDs (clause 5.4) as slave SAE: POST Key IDs
        (``{"key_IDs": [{"key_ID": ...}]}``), or GET with ``?key_ID=`` once per key."""
        ids = list(key_ids)
        if method == "GET":
            result: dict[str, Any] = await self.request(
                "GET", master_sae_id, "dec_keys", params=[("key_ID", i) for i in ids]
            )
            return result
        body = {"key_IDs": [{"key_ID": i} for i in ids]}
        result = await self.request("POST", master_sae_id, "dec_keys", json_body=body)
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Etsi014Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
