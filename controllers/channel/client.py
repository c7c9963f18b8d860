"""Calling a neighbour node over the inter-node channel: JSON over HTTPS with mutual TLS.

The KRP, hand-over, LSA and relay code calls ``PeerClients.post_json(node_id, path, payload)``
(or holds a ``PeerClient`` for one peer). Each peer gets its own aiohttp session whose TLS
context presents this node's certificate, trusts only that peer's CA(s), and checks that the
server's certificate names the peer's node ID (it is sent as the TLS server name, so the
endpoint may be an IP address or any DNS name).

Failures are one of three exceptions with a message an operator can act on: ``UnknownPeer`` (no
QKDLink names the node), ``PeerUnreachable`` (no answer, TLS failed, timeout;
``PeerCertificateError`` when the peer's certificate is the problem) and ``PeerRefused`` (the
peer answered with an error status). Messages carry endpoints, statuses and the peer's own
error message, never request or response bodies, so no key material.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

import aiohttp

from controllers.channel.paths import PING_PATH
from controllers.channel.peers import Peer, PeerRegistry
from controllers.identity import NodeIdentity

log = logging.getLogger(__name__)

# A KRP or relay call is small; a peer that takes longer than this is treated as unreachable
# so the caller can release its reservations instead of hanging.
DEFAULT_TIMEOUT: Final = 10.0
# Connecting (TCP + TLS) to a neighbour on a working network takes milliseconds.
DEFAULT_CONNECT_TIMEOUT: Final = 3.0
# How much of a peer's error message is quoted.
_MAX_MESSAGE: Final = 300


class PeerError(Exception):
    """A call to a neighbour node failed; ``node_id`` says which. ``maybe_delivered`` is False
    when the request certainly never reached the peer (no connection, no TLS session), so a
    caller may undo what it prepared for the call at once."""

    def __init__(self, node_id: str, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.message = message
        self.maybe_delivered = maybe_delivered


class UnknownPeer(PeerError):
    """No QKDLink names the node, so there is no endpoint or CA to reach it with."""


class PeerUnreachable(PeerError):
    """The peer did not answer: connection refused or reset, TLS failure, or timeout."""


class PeerCertificateError(PeerUnreachable):
    """The peer's server certificate does not verify as the expected node."""


class PeerRefused(PeerError):
    """The peer answered with an error status; ``message`` is the peer's own message."""

    def __init__(
        self, node_id: str, message: str, *, status: int, details: list[Any] | None = None
    ) -> None:
        super().__init__(node_id, message)
        self.status = status
        self.details = details or []


def _peer_message(body: bytes) -> tuple[str, list[Any]]:
    """The ``message`` and ``details`` of an ETSI-style error body, or a stand-in."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return "(no JSON error message)", []
    if not isinstance(parsed, dict):
        return "(no JSON error message)", []
    message = str(parsed.get("message", "(no message)"))[:_MAX_MESSAGE]
    details = parsed.get("details")
    return message, details if isinstance(details, list) else []


def _verify_message(exc: aiohttp.ClientConnectorCertificateError) -> str:
    error = exc.certificate_error
    return str(getattr(error, "verify_message", None) or error)


class PeerClient:
    """Calls to one peer node over one aiohttp session (created on first use)."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        peer: Peer,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.peer = peer
        self._ssl = identity.client_ssl_context(server_ca_pem=peer.ca_bundle)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._total, self._connect = timeout, connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _where(self) -> str:
        return f"peer node {self.peer.node_id} at {self.peer.endpoint}"

    async def post_json(self, path: str, payload: Any) -> Any:
        """POST ``payload`` as JSON to ``path`` on the peer; the parsed JSON answer."""
        return await self.request_json("POST", path, payload)

    async def get_json(self, path: str) -> Any:
        return await self.request_json("GET", path)

    async def ping(self) -> Mapping[str, Any]:
        """Call the peer's ping route; its answer names both ends as the peer saw them."""
        answer = await self.get_json(PING_PATH)
        if not isinstance(answer, dict):
            raise PeerRefused(self.peer.node_id, "ping answer is not a JSON object", status=200)
        return answer

    async def request_json(self, method: str, path: str, payload: Any = None) -> Any:
        node_id, where = self.peer.node_id, self._where()
        if self._closed:
            raise PeerUnreachable(
                node_id,
                f"{where}: the client was closed (peer config changed)",
                maybe_delivered=False,
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        url = self.peer.endpoint.rstrip("/") + "/" + path.lstrip("/")
        try:
            async with self._session.request(
                method, url, json=payload, server_hostname=node_id
            ) as response:
                body = await response.read()
                status, content_type = response.status, response.content_type
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerCertificateError(
                node_id,
                f"{where} presented a certificate that does not verify as node {node_id} "
                f"with the CA of its QKDLink: {_verify_message(exc)}",
                maybe_delivered=False,
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise PeerUnreachable(
                node_id,
                f"TLS with {where} failed ({exc}); check that the peer's QKDLink trusts this "
                "node's CA and names this node's ID",
                maybe_delivered=False,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            raise PeerUnreachable(
                node_id,
                f"{where} is unreachable ({type(cause).__name__}: {cause.strerror or cause})",
                maybe_delivered=False,
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise PeerUnreachable(
                node_id,
                f"{where} broke off the connection ({type(exc).__name__}: {exc}); if this "
                "repeats, check that the peer's QKDLink trusts this node's CA and names "
                "this node's ID",
            ) from None
        except TimeoutError:
            raise PeerUnreachable(
                node_id,
                f"{where} did not answer in time (connect timeout {self._connect}s, "
                f"total {self._total}s)",
            ) from None
        except aiohttp.ClientError as exc:
            raise PeerUnreachable(node_id, f"{where} failed: {type(exc).__name__}") from None

        if status >= 400:
            message, details = _peer_message(body)
            raise PeerRefused(
                node_id,
                f"{where} refused {method} {path} with {status}: {message}",
                status=status,
                details=details,
            )
        if content_type != "application/json":
            raise PeerRefused(
                node_id,
                f"{where} answered {method} {path} with {status} but not JSON ({content_type})",
                status=status,
            )
        try:
            return json.loads(body)
        except ValueError:
            raise PeerRefused(
                node_id, f"{where} answered {method} {path} with malformed JSON", status=status
            ) from None

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class PeerClients:
    """One ``PeerClient`` per peer in the registry, replaced when the peer's link changes."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        registry: PeerRegistry,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._identity, self._registry = identity, registry
        self._timeout, self._connect_timeout = timeout, connect_timeout
        self._clients: dict[str, PeerClient] = {}

    async def client(self, node_id: str) -> PeerClient:
        """The client for ``node_id`` as the registry currently describes it."""
        peer = self._registry.get(node_id)
        current = self._clients.get(node_id)
        if current is not None and current.peer == peer:
            return current
        if peer is None:
            self._clients.pop(node_id, None)
        else:
            self._clients[node_id] = PeerClient(
                identity=self._identity,
                peer=peer,
                timeout=self._timeout,
                connect_timeout=self._connect_timeout,
            )
        if current is not None:
            # Calls in flight on the old session fail as PeerUnreachable; the link changed.
            await current.close()
        if peer is None:
            raise UnknownPeer(
                node_id,
                f"no QKDLink of this node names peer node {node_id} (with a usable CA); "
                "it cannot be reached over the channel",
                maybe_delivered=False,
            )
        return self._clients[node_id]

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any:
        client = await self.client(node_id)
        return await client.post_json(path, payload)

    async def get_json(self, node_id: str, path: str) -> Any:
        client = await self.client(node_id)
        return await client.get_json(path)

    async def ping(self, node_id: str) -> Mapping[str, Any]:
        client = await self.client(node_id)
        return await client.ping()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
