"""Calling a neighbour's KRP routes: a typed message in, its typed answer out, or one of two
exceptions: ``KrpRefused`` (the peer answered with an error; ``refusal`` says why, and for a
refused block which chunks) or ``KrpUnreachable`` (no answer, or not one the protocol allows:
the outcome is unknown). Used by the pools (reserve), the outbox worker (release, hand-over,
drop), the key relay (prepare, commit, abort) and the tests of the protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from controllers.channel import PeerError, PeerRefused
from controllers.delivery.messages import (
    DROP_PATH,
    HANDOVER_PATH,
    RELEASE_PATH,
    RESERVE_PATH,
    BlockHeld,
    DropIndices,
    Dropped,
    HandedOver,
    HandOver,
    Reason,
    Refusal,
    ReleaseBlock,
    Released,
    ReserveBlock,
)
from controllers.delivery.relay_messages import (
    ABORT_PATH,
    COMMIT_PATH,
    PREPARE_PATH,
    RelayAbort,
    RelayAborted,
    RelayCommit,
    RelayCommitted,
    RelayPrepare,
    RelayPrepared,
)
from qss_api.wire import BadMessage, check

A = TypeVar("A", bound=BaseModel)

# What a refusal without a usable Refusal in its details means, by HTTP status.
_BY_STATUS: dict[int, Reason] = {
    400: "BadMessage",
    403: "Forbidden",
    404: "UnknownStream",
    409: "Conflict",
}


class PeerCaller(Protocol):
    """Posts JSON to a neighbour node (``controllers.channel.PeerClients``)."""

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any: ...


class KrpError(Exception):
    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.message = message


class KrpUnreachable(KrpError):
    """No answer the protocol allows: the peer may have acted on the message, unless
    ``maybe_delivered`` is False (it never got it)."""

    def __init__(self, node_id: str, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(node_id, message)
        self.maybe_delivered = maybe_delivered


class KrpRefused(KrpError):
    """The peer answered with an error; it did not act on the message."""

    def __init__(self, node_id: str, message: str, *, status: int, refusal: Refusal) -> None:
        super().__init__(node_id, message)
        self.status = status
        self.refusal = refusal

    @property
    def reason(self) -> Reason:
        return self.refusal.reason


class KrpPeers:
    """The KRP calls, over the channel's peer clients."""

    def __init__(self, peers: PeerCaller) -> None:
        self._peers = peers

    async def reserve(self, node_id: str, message: ReserveBlock) -> BlockHeld:
        return await self._post(node_id, RESERVE_PATH, message, BlockHeld)

    async def release(self, node_id: str, message: ReleaseBlock) -> Released:
        return await self._post(node_id, RELEASE_PATH, message, Released)

    async def hand_over(self, node_id: str, message: HandOver) -> HandedOver:
        return await self._post(node_id, HANDOVER_PATH, message, HandedOver)

    async def drop(self, node_id: str, message: DropIndices) -> Dropped:
        return await self._post(node_id, DROP_PATH, message, Dropped)

    async def relay_prepare(self, node_id: str, message: RelayPrepare) -> RelayPrepared:
        return await self._post(node_id, PREPARE_PATH, message, RelayPrepared)

    async def relay_commit(self, node_id: str, message: RelayCommit) -> RelayCommitted:
        return await self._post(node_id, COMMIT_PATH, message, RelayCommitted)

    async def relay_abort(self, node_id: str, message: RelayAbort) -> RelayAborted:
        return await self._post(node_id, ABORT_PATH, message, RelayAborted)

    async def _post(self, node_id: str, path: str, message: BaseModel, answer: type[A]) -> A:
        try:
            raw = await self._peers.post_json(node_id, path, message.model_dump(mode="json"))
        except PeerRefused as exc:
            if exc.status >= 500 and exc.status != 503:
                raise KrpUnreachable(node_id, exc.message) from None
            refusal = _refusal(exc)
            raise KrpRefused(node_id, exc.message, status=exc.status, refusal=refusal) from None
        except PeerError as exc:
            raise KrpUnreachable(
                node_id, exc.message, maybe_delivered=exc.maybe_delivered
            ) from None
        try:
            return check(answer, raw)
        except BadMessage as exc:
            raise KrpUnreachable(
                node_id, f"node {node_id} answered {path} with {exc.message}"
            ) from None


def _refusal(exc: PeerRefused) -> Refusal:
    for detail in exc.details:
        try:
            return check(Refusal, detail)
        except BadMessage:
            continue
    return Refusal(
        reason="Unavailable" if exc.status == 503 else _BY_STATUS.get(exc.status, "Conflict")
    )
