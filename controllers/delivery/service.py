"""Key delivery between a local SAE and one on a neighbour node (the paper's KRP), over the
node's key store and the inter-node channel.

Master side: reserve keys on a stream towards the slave SAE's node (``reserve_pair``), have the
peer reserve the same key IDs for the slave SAE (``/qss/v1/krp/reserve``), read them, and only
after the caller has delivered them, ``commit`` (consume) them; ``abort`` releases both sides.
Slave side: ``read_with_ids`` then ``commit_ids``. Every step is idempotent under the request's
ID, so a controller that dies mid-request resumes it without delivering a key twice. The
KeyRequest reconciler uses the steps; the ETSI 014 API uses ``get_keys``/``get_keys_with_ids``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controllers.channel import PeerError, PeerRefused
from controllers.delivery.api import (
    MAX_KEY_SIZE,
    MAX_KEYS_PER_REQUEST,
    MIN_KEY_SIZE,
    DeliveredKey,
    InsufficientKeys,
    InvalidRequest,
    NoRoute,
    PairStatus,
    PeerUnreachable,
    UnknownKeys,
    UnknownSae,
)
from controllers.delivery.topology import Topology
from controllers.keystore import (
    InsufficientKeysError,
    KeyStore,
    ReservedKey,
    UnknownKeysError,
    UnknownReservationError,
    UnknownStreamError,
)

log = logging.getLogger("controllers.delivery")

RESERVE_PATH = "/qss/v1/krp/reserve"
RELEASE_PATH = "/qss/v1/krp/release"
HANDOVER_PATH = "/qss/v1/krp/handover"


class SaeLookup(Protocol):
    def lookup(self, sae_id: str) -> tuple[str, str] | None:
        """(namespace, Sae name) of a local SAE, or None."""
        ...


class SaeLocator(Protocol):
    def node_of(self, sae_id: str) -> str | None:
        """The node an SAE is registered with, or None if unknown."""
        ...

    def is_known_absent(self, sae_id: str) -> bool:
        """Whether an SAE ``node_of`` does not find is unknown for good (every neighbour has
        told us its SAEs), rather than not known yet."""
        ...


class PeerCaller(Protocol):
    """Posts JSON to a neighbour node (``controllers.channel.PeerClients``)."""

    async def post_json(self, node_id: str, path: str, payload: Any) -> Any: ...


def pair_owner(master_sae_id: str, slave_sae_id: str) -> str:
    """The store's owner tag of keys reserved for a (master, slave) SAE pair, alike on both
    nodes."""
    return f"{master_sae_id}/{slave_sae_id}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A reservation of keys for one request, held on this node and on the peer."""

    request_id: str
    stream: str
    peer_node: str
    master_sae_id: str
    slave_sae_id: str
    size_bits: int
    keys: tuple[ReservedKey, ...]

    @property
    def owner(self) -> str:
        return pair_owner(self.master_sae_id, self.slave_sae_id)

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self.keys]


def check_request(*, number: int, size_bits: int) -> None:
    if not 1 <= number <= MAX_KEYS_PER_REQUEST:
        raise InvalidRequest(f"number must be between 1 and {MAX_KEYS_PER_REQUEST}, got {number}")
    if not MIN_KEY_SIZE <= size_bits <= MAX_KEY_SIZE or size_bits % 8:
        raise InvalidRequest(
            f"size must be a multiple of 8 between {MIN_KEY_SIZE} and {MAX_KEY_SIZE} bits, "
            f"got {size_bits}"
        )


@dataclass
class NodeKeyDelivery:
    node_id: str
    store: KeyStore
    topology: Topology
    local_saes: SaeLookup
    directory: SaeLocator
    peers: PeerCaller
    poll_seconds: float = 0.05  # between tries while keys are short
    _clock: Any = field(default=time.monotonic)

    # -- where the keys come from --------------------------------------------------------------

    def _slave_node(self, master_sae_id: str, slave_sae_id: str) -> str:
        if self.local_saes.lookup(master_sae_id) is None:
            raise UnknownSae(
                f"SAE {master_sae_id!r} is not registered with node {self.node_id}",
                retryable=False,
            )
        node = self.directory.node_of(slave_sae_id)
        if node is None:
            if self.directory.is_known_absent(slave_sae_id):
                raise UnknownSae(
                    f"SAE {slave_sae_id!r} is not known in the QKD network: no neighbour of "
                    f"node {self.node_id} has it registered",
                    retryable=False,
                )
            raise UnknownSae(
                f"SAE {slave_sae_id!r} is not known yet: not every neighbour of node "
                f"{self.node_id} has told it its SAEs; try again shortly",
                retryable=True,
            )
        if node == self.node_id:
            raise NoRoute(
                f"SAE {slave_sae_id!r} is on this node too; keys are shared between nodes"
            )
        return node

    def _streams(self, node: str) -> list[str]:
        streams = [s.name for s in self.topology.streams_towards(node)]
        if not streams:
            raise NoRoute(f"no key stream leads from node {self.node_id} to node {node}")
        return streams

    async def pair_status(self, *, master_sae_id: str, slave_sae_id: str) -> PairStatus:
        node = self._slave_node(master_sae_id, slave_sae_id)
        stream = self._streams(node)[0]
        counts = await self.store.counts(stream=stream)
        return PairStatus(
            source_node=self.node_id,
            target_node=node,
            key_size=counts.chunk_bytes * 8,
            stored_key_count=counts.available,
            max_key_count=counts.capacity,
        )

    # -- master side ---------------------------------------------------------------------------

    async def reserve_pair(
        self,
        *,
        request_id: str,
        master_sae_id: str,
        slave_sae_id: str,
        number: int,
        size_bits: int,
        timeout: float,
        on_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> Ticket:
        """Reserve ``number`` keys here and the same IDs on the slave's node; all or nothing.
        Waits up to ``timeout`` seconds while keys are short or the peer lags behind, calling
        ``on_wait`` once when it first has to."""
        check_request(number=number, size_bits=size_bits)
        node = self._slave_node(master_sae_id, slave_sae_id)
        owner = pair_owner(master_sae_id, slave_sae_id)
        deadline = self._clock() + timeout
        while True:
            ticket = await self._reserve_here(
                request_id, node, owner, master_sae_id, slave_sae_id, number, size_bits
            )
            if ticket is not None:
                try:
                    if await self._reserve_there(ticket):
                        return ticket
                except BaseException:
                    await self._release_here(ticket)
                    raise
            if self._clock() >= deadline:
                if ticket is not None:
                    await self._release_here(ticket)
                    raise InsufficientKeys(
                        f"node {node} did not hold the keys node {self.node_id} reserved "
                        f"within {timeout:g} s"
                    )
                raise InsufficientKeys(
                    f"fewer than {number} keys of {size_bits} bits towards node {node} "
                    f"within {timeout:g} s"
                )
            if on_wait is not None:
                await on_wait()
                on_wait = None
            await asyncio.sleep(self.poll_seconds)

    async def _reserve_here(
        self,
        request_id: str,
        node: str,
        owner: str,
        master_sae_id: str,
        slave_sae_id: str,
        number: int,
        size_bits: int,
    ) -> Ticket | None:
        for stream in self._streams(node):
            try:
                reservation = await self.store.reserve(
                    stream=stream,
                    reservation_id=request_id,
                    owner=owner,
                    count=number,
                    size_bits=size_bits,
                    # The two directions of a link draw from opposite ends of the buffer, so
                    # masters on both nodes never reserve the same chunks while keys last.
                    from_newest=self.node_id > node,
                )
            except (InsufficientKeysError, UnknownStreamError):
                continue
            return Ticket(
                request_id=request_id,
                stream=stream,
                peer_node=node,
                master_sae_id=master_sae_id,
                slave_sae_id=slave_sae_id,
                size_bits=size_bits,
                keys=reservation.keys,
            )
        return None

    async def _reserve_there(self, ticket: Ticket) -> bool:
        """True when the peer reserved the ticket's keys; False when it lacks some yet."""
        payload = {
            "reservation_id": ticket.request_id,
            "stream": ticket.stream,
            "size_bits": ticket.size_bits,
            "master_sae": ticket.master_sae_id,
            "slave_sae": ticket.slave_sae_id,
            "keys": [{"key_id": k.key_id, "chunk_ids": list(k.chunk_ids)} for k in ticket.keys],
        }
        try:
            await self.peers.post_json(ticket.peer_node, RESERVE_PATH, payload)
        except PeerRefused as exc:
            if exc.status == 409:
                return False  # the peer's QKDM has not stored these chunks yet
            if exc.status == 404:
                # The directory had it on that node: it may be re-registering there.
                raise UnknownSae(exc.message, retryable=True) from None
            raise PeerUnreachable(
                f"node {ticket.peer_node} refused the reservation: {exc.message}"
            ) from None
        except PeerError as exc:
            raise PeerUnreachable(exc.message) from None
        return True

    async def _release_here(self, ticket: Ticket) -> None:
        with contextlib.suppress(UnknownReservationError):
            await self.store.release(stream=ticket.stream, reservation_id=ticket.request_id)

    async def read(self, ticket: Ticket) -> list[DeliveredKey]:
        """The ticket's keys, without consuming them (deliver, then ``commit``)."""
        keys = await self.store.fetch(
            stream=ticket.stream, owner=ticket.owner, key_ids=ticket.key_ids
        )
        return [DeliveredKey(key_id=k.key_id, material=k.material) for k in keys]

    async def commit(self, ticket: Ticket) -> None:
        """Consume the ticket's keys here: they were delivered. Idempotent."""
        if not ticket.keys:
            return  # nothing left to consume (a request resumed after its commit)
        try:
            await self.store.consume(
                stream=ticket.stream, owner=ticket.owner, key_ids=ticket.key_ids
            )
        except UnknownKeysError:
            pass  # already consumed by an earlier try of this request

    async def abort(self, ticket: Ticket) -> None:
        """Release the ticket here and on the peer (best effort there: it may be down)."""
        await self._release_here(ticket)
        try:
            await self.peers.post_json(
                ticket.peer_node,
                RELEASE_PATH,
                {"reservation_id": ticket.request_id, "stream": ticket.stream},
            )
        except PeerError as exc:
            log.warning("could not release reservation on node %s: %s", ticket.peer_node, exc)

    async def release_request(
        self, *, request_id: str, master_sae_id: str, slave_sae_id: str
    ) -> None:
        """Release whatever a request may hold, here and on the peer, without its ticket (a
        request deleted or failed after a restart)."""
        node = self.directory.node_of(slave_sae_id)
        if node is None:
            return
        for info in self.topology.streams_towards(node):
            ticket = Ticket(
                request_id=request_id,
                stream=info.name,
                peer_node=node,
                master_sae_id=master_sae_id,
                slave_sae_id=slave_sae_id,
                size_bits=MIN_KEY_SIZE,
                keys=(),
            )
            await self.abort(ticket)

    async def handover(self, ticket: Ticket, *, key_ids: Sequence[str]) -> None:
        """Tell the peer that the keys ``key_ids`` are delivered here, so it hands them to the
        slave SAE (it creates the slave-side KeyRequest). Idempotent on the peer."""
        payload = {
            "request_id": ticket.request_id,
            "master_sae": ticket.master_sae_id,
            "slave_sae": ticket.slave_sae_id,
            "size_bits": ticket.size_bits,
            "key_ids": list(key_ids),
        }
        try:
            await self.peers.post_json(ticket.peer_node, HANDOVER_PATH, payload)
        except PeerError as exc:
            raise PeerUnreachable(f"hand-over to node {ticket.peer_node} failed: {exc}") from None

    async def get_keys(
        self,
        *,
        request_id: str,
        master_sae_id: str,
        slave_sae_id: str,
        number: int,
        size_bits: int,
        timeout: float,
    ) -> list[DeliveredKey]:
        ticket = await self.reserve_pair(
            request_id=request_id,
            master_sae_id=master_sae_id,
            slave_sae_id=slave_sae_id,
            number=number,
            size_bits=size_bits,
            timeout=timeout,
        )
        keys = await self.read(ticket)
        await self.commit(ticket)
        return keys

    # -- slave side ----------------------------------------------------------------------------

    async def _find(
        self, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> tuple[str, list[DeliveredKey]]:
        if self.local_saes.lookup(slave_sae_id) is None:
            raise UnknownSae(
                f"SAE {slave_sae_id!r} is not registered with node {self.node_id}",
                retryable=False,
            )
        node = self.directory.node_of(master_sae_id)
        owner = pair_owner(master_sae_id, slave_sae_id)
        # Key IDs are UUIDs, unique across streams: where the master's node is not known (yet),
        # look in every stream.
        streams = (
            self.topology.streams_towards(node) if node is not None else self.topology.streams()
        )
        for stream in (s.name for s in streams):
            try:
                keys = await self.store.fetch(stream=stream, owner=owner, key_ids=key_ids)
            except (UnknownKeysError, UnknownStreamError):
                continue
            return stream, [DeliveredKey(key_id=k.key_id, material=k.material) for k in keys]
        raise UnknownKeys(
            f"{len(key_ids)} key IDs are not all reserved for SAE {slave_sae_id!r} by SAE "
            f"{master_sae_id!r} (unknown, or already delivered)"
        )

    async def read_with_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> tuple[str, list[DeliveredKey]]:
        """(stream, keys) reserved for the slave SAE under ``key_ids``, not consumed yet."""
        return await self._find(slave_sae_id, master_sae_id, key_ids)

    async def commit_ids(
        self, *, stream: str, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> None:
        with contextlib.suppress(UnknownKeysError):
            await self.store.consume(
                stream=stream, owner=pair_owner(master_sae_id, slave_sae_id), key_ids=key_ids
            )

    async def get_keys_with_ids(
        self, *, slave_sae_id: str, master_sae_id: str, key_ids: Sequence[str]
    ) -> list[DeliveredKey]:
        stream, _ = await self._find(slave_sae_id, master_sae_id, key_ids)
        owner = pair_owner(master_sae_id, slave_sae_id)
        try:
            keys = await self.store.consume(stream=stream, owner=owner, key_ids=key_ids)
        except UnknownKeysError:
            raise UnknownKeys("the keys were delivered meanwhile") from None
        return [DeliveredKey(key_id=k.key_id, material=k.material) for k in keys]
