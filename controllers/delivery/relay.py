"""Multi-hop key relay through trusted repeaters: keys for a pair of SAEs whose nodes share no
QKD link, carried along the routing path hop by hop with one-time pads of each hop's link.

The relayed keys are fresh keys of the path's first link, from the pair's pool on it (the same
pools, blocks and leases as a point-to-point pair: ``controllers.delivery.pools``). Every later
link of the path has a pool for the pair too, mastered by the node before it; its keys are the
pads and tag keys of that hop (``relay_pad``). So serving a relay needs one message per hop
(``RelayPrepare``, answered back along the path) and no key agreement on the way.

Two phases, with the source as coordinator, every step idempotent under the relay ID (which
is the hold ID of every hold the relay makes, on every node):

1. Prepare. The source holds the keys (``NodeKeyDelivery.hold``) and posts ``RelayPrepare`` to
   the first repeater (``prepare``). A repeater (``on_prepare``) reads its copies of what came
   in (the keys by ID, or the pads by ID, then checks the tag and decrypts), then in one store
   batch moves them into a hold and holds pads and tag keys from its pool on the next link,
   seals and posts on. The destination reads its pads, checks the tag, decrypts, and in one
   batch holds its pads and turns them into the relayed keys (``KeyStore.open_relayed``), still
   held. Each answers once the rest of the path did. So a hop costs each node one read and one
   fsync'd write (``KeyStore.relay_view``, ``KeyStore.batch``), and nothing is written before
   the message was checked.
2. Commit, once the source delivered the keys to its SAE: ``commit_notice`` is queued with the
   source's own commit (one atomic store step); every repeater commits its holds and queues the
   commit for the next node the same way; the destination makes the keys claimable by the slave
   SAE for its fetch window (``deliver_relayed``) and creates its automatic KeyRequest.

A failure anywhere aborts: the failing node drops its holds and refuses; each node back along
the path drops its own and refuses in turn. A node that cannot tell whether the next one acted
(no answer) queues ``RelayAbort`` for it with the drop; the abort is retried until answered and
passed on the same way. What a relay set aside is dropped, not returned, once its keys or pads
may have been sent on (as IDs or ciphertext): a pad must never serve twice, and the relayed key
must never serve a point-to-point pair a repeater did not belong to. Holds have deadlines, so
even a node that never hears the outcome drops what it held. A repeater keeps nothing after the
relay: its holds are deleted (commit) or dropped (abort); its store keeps only the message IDs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from controllers import metrics
from controllers.delivery.api import (
    DeliveryError,
    InsufficientKeys,
    KeyConflict,
    NoRoute,
    PeerUnreachable,
    RelayFailed,
)
from controllers.delivery.messages import HandOver, HandOverSink, Reason
from controllers.delivery.peer import KrpPeers, KrpRefused, KrpUnreachable
from controllers.delivery.pools import PoolKey, Pools, pair_owner
from controllers.delivery.relay_messages import (
    RelayAbort,
    RelayCommit,
    RelayPrepare,
    RelayPrepared,
    Sealed,
)
from controllers.delivery.relay_pad import BadTag, header_bytes, open_sealed, pad_count, seal
from controllers.delivery.relay_pad import same_tag as tags_match
from controllers.delivery.settings import DeliverySettings
from controllers.delivery.topology import Topology
from controllers.keystore import (
    BlockConflictError,
    Hold,
    InsufficientKeysError,
    Key,
    KeyStore,
    KeyStoreError,
    Notice,
    UnknownKeysError,
    UnknownStreamError,
)

log = logging.getLogger("controllers.delivery.relay")

# A hop waits for pads at most this long, so that every answer comes back well inside the
# channel's own timeout (10 s) even on a path of several hops.
MAX_HOP_WAIT_SECONDS = 4.0
# Outbox message IDs: a commit is remembered once acknowledged ('ho:', as hand-overs are).
COMMIT_ID = "ho:{}"
ABORT_ID = "ab:{}"
# A prepare the next node could not serve yet (503: it held nothing) is tried again this often.
RETRY_SECONDS = 0.2


class RelayRefusal(Exception):
    """This node refuses a relay message; ``status`` and ``reason`` go into the answer."""

    def __init__(self, status: int, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _by_id(keys: Sequence[Key], ids: Sequence[str]) -> list[Key]:
    found = {k.key_id: k for k in keys}
    return [found[i] for i in ids]


_ERRORS: dict[str, type[DeliveryError]] = {
    "InsufficientKeys": InsufficientKeys,
    "NoRoute": NoRoute,
    "PeerUnreachable": PeerUnreachable,
}


@dataclass
class Relay:
    node_id: str
    store: KeyStore
    topology: Topology
    pools: Pools
    peers: KrpPeers
    hand_over: HandOverSink
    is_local_sae: Callable[[str], bool]
    settings: DeliverySettings
    clock: Callable[[], float] = field(default=time.monotonic)
    kick: Callable[[], None] = field(default=lambda: None)  # the outbox has a new message

    # -- the source ----------------------------------------------------------------------------

    async def prepare(
        self, *, relay_id: str, request_id: str, pool: PoolKey, hold: Hold, timeout: float
    ) -> None:
        """Relay the keys of ``hold`` (held from ``pool``, whose ``path`` leads to the slave
        SAE's node) along the path; once this returns, every node on it holds its part. On
        failure the hold is dropped (and the path told to drop theirs), and the error says
        why."""
        if await self.store.relay_aborted(stream=pool.stream, hold_id=relay_id):
            await self.store.drop_hold(stream=pool.stream, hold_id=relay_id)
            raise RelayFailed(f"relay {relay_id} was aborted before; a new request relays anew")
        message = RelayPrepare(
            relay_id=relay_id,
            request_id=request_id,
            stream=pool.stream,
            master_sae=pool.master_sae_id,
            slave_sae=pool.slave_sae_id,
            size_bits=pool.size_bits,
            path=pool.path,
            hop=1,
            wait_ms=max(1, int(1000 * min(timeout, MAX_HOP_WAIT_SECONDS))),
            key_ids=hold.key_ids,
        )
        deadline = self.clock() + timeout
        while True:
            try:
                await self.peers.relay_prepare(pool.peer, message)
                return
            except KrpRefused as exc:
                if exc.status == 503 and self.clock() + RETRY_SECONDS < deadline:
                    # The next node held nothing (it lacks pads for a moment, or is starting).
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                await self._failed(pool, relay_id, exc)
            except KrpUnreachable as exc:
                await self._drop_after(pool.stream, relay_id, maybe_sent=exc.maybe_delivered)
                raise PeerUnreachable(
                    f"relay to node {pool.path[-1]}: node {pool.peer} did not answer"
                    f" ({exc.message})"
                ) from None

    async def _failed(self, pool: PoolKey, relay_id: str, exc: KrpRefused) -> NoReturn:
        """The path refused the relay: our hold goes (back, when nothing left this node)."""
        destination = pool.path[-1]
        log.warning(
            "relay %s to node %s refused (%s): %s", relay_id, destination, exc.reason, exc.message
        )
        if exc.status == 503:
            # Nothing was held or sent on: the keys provably went nowhere.
            await self.store.cancel_hold(stream=pool.stream, hold_id=relay_id)
            raise InsufficientKeys(f"relay to node {destination}: {exc.message}")
        await self.store.drop_hold(stream=pool.stream, hold_id=relay_id)
        raise _error(exc.reason, f"relay to node {destination}: {exc.message}")

    def commit_notice(
        self,
        *,
        relay_id: str,
        request_id: str,
        pool: PoolKey,
        key_ids: Sequence[str],
        hand_over: bool,
    ) -> Notice:
        """The message the source's commit queues for the first repeater."""
        commit = RelayCommit(
            relay_id=relay_id,
            request_id=request_id,
            master_sae=pool.master_sae_id,
            slave_sae=pool.slave_sae_id,
            size_bits=pool.size_bits,
            key_ids=tuple(key_ids),
            hand_over=hand_over,
        )
        return self._commit_notice(commit)

    def _commit_notice(self, commit: RelayCommit) -> Notice:
        return Notice(
            message_id=COMMIT_ID.format(commit.relay_id),
            kind="relay_commit",
            payload=commit.model_dump(mode="json"),
            valid_ms=int(self.settings.fetch_window_seconds * 1000),
        )

    def _abort_notice(self, relay_id: str) -> Notice:
        return Notice(
            message_id=ABORT_ID.format(relay_id),
            kind="relay_abort",
            payload=RelayAbort(relay_id=relay_id).model_dump(mode="json"),
            valid_ms=int(self.settings.lease_ms),
        )

    async def _drop_after(self, stream: str, relay_id: str, *, maybe_sent: bool) -> None:
        """Drop the relay's hold on ``stream``; if the peer may have acted on what was sent,
        queue the abort for it in the same step."""
        notice = self._abort_notice(relay_id) if maybe_sent else None
        await self.store.drop_hold(stream=stream, hold_id=relay_id, notice=notice)
        if notice is not None:
            self.kick()

    # -- a repeater or the destination: prepare ------------------------------------------------

    async def on_prepare(self, message: RelayPrepare, caller: str) -> RelayPrepared:
        path, hop = message.path, message.hop
        if path[hop] != self.node_id or path[hop - 1] != caller:
            raise RelayRefusal(
                403,
                "Forbidden",
                f"hop {hop} of the path is node {path[hop]}, from node {path[hop - 1]}; this is"
                f" node {self.node_id}, called by node {caller}",
            )
        destination = hop == len(path) - 1
        if destination and not self.is_local_sae(message.slave_sae):
            raise RelayRefusal(
                404, "UnknownSae", f"SAE {message.slave_sae!r} is not registered with this node"
            )
        stream, relay_id = message.stream, message.relay_id
        owner = pair_owner(message.master_sae, message.slave_sae)
        ids = message.sealed.pad_key_ids if message.sealed else message.key_ids
        # One read (no write, so no fsync) finds what came in: it must be held here for the
        # pair (or in this relay's hold already); a message about other keys, or for a relay
        # aborted here, is refused before anything changes.
        try:
            view = await self.store.relay_view(
                stream=stream, hold_id=relay_id, owner=owner, key_ids=ids
            )
        except (UnknownKeysError, BlockConflictError):
            raise RelayRefusal(
                409,
                "KeysNotHeld",
                f"the {len(ids)} keys of relay {relay_id} are not held here for SAE"
                f" {message.master_sae!r} and SAE {message.slave_sae!r}",
            ) from None
        if view.aborted:
            raise RelayRefusal(409, "Aborted", f"relay {relay_id} was aborted here")
        if view.tag is not None:
            # Opened before (the destination): a retry of the same message is answered alike.
            return self._opened_again(message, view.tag)
        if {k.key_id for k in view.keys} != set(ids):
            raise RelayRefusal(409, "Conflict", f"relay {relay_id} names other keys")
        if message.sealed is None:
            keys = _by_id(view.keys, message.key_ids)
        else:
            keys = await self._unseal(message, owner, view.keys)
        if destination:
            return await self._open(message, owner, keys)
        pool, pads = await self._hold_pads_and_claim(message, owner)
        return await self._pass_on(message, keys, pool, pads)

    def _next_pool(self, message: RelayPrepare) -> PoolKey:
        """The pair's pool on the link to the next node of the path."""
        after = message.path[message.hop + 1]
        streams = self.topology.streams_towards(after)
        if not streams:
            raise RelayRefusal(
                503, "Unavailable", f"no key stream leads from node {self.node_id} to node {after}"
            )
        return PoolKey(
            stream=streams[0].name,
            peer=after,
            master_sae_id=message.master_sae,
            slave_sae_id=message.slave_sae,
            size_bits=message.size_bits,
        )

    async def _hold_pads_and_claim(self, message: RelayPrepare, owner: str) -> tuple[PoolKey, Hold]:
        """A repeater's one write: the next hop's pads and tag keys held from the pair's pool
        on its link, and what came in claimed into this relay's hold, in one batch (one
        fsync). If either fails, the other is undone: nothing is held here and nothing was
        sent, so the node before may try again (503) or gives up (409)."""
        pool = self._next_pool(message)
        relay_id, stream_in = message.relay_id, message.stream
        count = pad_count(keys=len(message.key_ids), size_bits=message.size_bits)
        hold_ms = int(self.settings.hold_seconds * 1000)
        batch = self.store.batch()
        pads_held = batch.hold(
            stream=pool.stream,
            hold_id=relay_id,
            owner=owner,
            size_bits=message.size_bits,
            count=count,
            hold_ms=hold_ms,
        )
        claimed = batch.claim(
            stream=stream_in,
            owner=owner,
            key_ids=message.sealed.pad_key_ids if message.sealed else message.key_ids,
            hold_id=relay_id,
            hold_ms=hold_ms,
        )
        await batch.run()
        try:
            claimed.result()
        except (UnknownKeysError, BlockConflictError) as exc:
            with contextlib.suppress(KeyStoreError):
                pads_held.result()
                await self.store.cancel_hold(stream=pool.stream, hold_id=relay_id)
            if isinstance(exc, UnknownKeysError):
                raise RelayRefusal(409, "KeysNotHeld", str(exc)) from None
            raise RelayRefusal(409, "Conflict", f"relay {relay_id} names other keys") from None
        try:
            try:
                pads = pads_held.result()
                self.pools.used(pool, count=count, left=pads.pool_left)
            except InsufficientKeysError:
                # The pool is short: wait for its refill (up to half this hop's wait).
                pads = await self.pools.hold(
                    pool,
                    count=count,
                    hold_id=relay_id,
                    deadline=self.clock() + message.wait_ms / 2000,
                )
        except DeliveryError as exc:
            await self.store.unclaim(stream=stream_in, hold_id=relay_id)
            raise RelayRefusal(503, "Unavailable", f"node {self.node_id}: {exc.message}") from None
        except BlockConflictError:
            await self.store.unclaim(stream=stream_in, hold_id=relay_id)
            raise RelayRefusal(
                409, "Conflict", f"relay {relay_id} was tried here with other keys"
            ) from None
        except UnknownStreamError:
            await self.store.unclaim(stream=stream_in, hold_id=relay_id)
            raise RelayRefusal(
                503,
                "Unavailable",
                f"key stream {pool.stream} has no keys on node {self.node_id} yet",
            ) from None
        return pool, pads

    async def _unseal(self, message: RelayPrepare, owner: str, came: Sequence[Key]) -> list[Key]:
        sealed = message.sealed
        assert sealed is not None
        n = len(message.key_ids)
        pads = _by_id(came, sealed.pad_key_ids)
        try:
            material = open_sealed(
                header=header_bytes(message.tagged_fields()),
                ciphertext=_unb64(sealed.ciphertext),
                tag=_unb64(sealed.tag),
                pads=[p.material for p in pads[:n]],
                tag_material=[p.material for p in pads[n:]],
            )
        except BadTag as exc:
            # The pads were used on the wire: they never serve again.
            with contextlib.suppress(UnknownKeysError, BlockConflictError):
                await self.store.claim(
                    stream=message.stream,
                    owner=owner,
                    key_ids=sealed.pad_key_ids,
                    hold_id=message.relay_id,
                    hold_ms=int(self.settings.hold_seconds * 1000),
                )
            await self.store.drop_hold(stream=message.stream, hold_id=message.relay_id)
            log.warning(
                "relay %s from node %s refused: %s",
                message.relay_id,
                message.path[message.hop - 1],
                exc,
            )
            raise RelayRefusal(409, "BadTag", str(exc)) from None
        return [
            Key(key_id=kid, size_bits=message.size_bits, material=m)
            for kid, m in zip(message.key_ids, material, strict=True)
        ]

    async def _open(self, message: RelayPrepare, owner: str, keys: list[Key]) -> RelayPrepared:
        """The destination's one write: its pads claimed into the relay's hold and turned into
        the relayed keys, in one batch (one MULTI/EXEC, one fsync)."""
        sealed = message.sealed
        assert sealed is not None
        n = len(message.key_ids)
        tag = _unb64(sealed.tag).hex()
        batch = self.store.batch()
        claimed = batch.claim(
            stream=message.stream,
            owner=owner,
            key_ids=sealed.pad_key_ids,
            hold_id=message.relay_id,
            hold_ms=int(self.settings.hold_seconds * 1000),
        )
        opened = batch.open_relayed(
            stream=message.stream,
            hold_id=message.relay_id,
            owner=owner,
            tag=tag,
            consumed=sealed.pad_key_ids[n:],
            relayed=list(zip(sealed.pad_key_ids[:n], keys, strict=True)),
        )
        await batch.run()
        try:
            claimed.result()
        except (UnknownKeysError, BlockConflictError) as exc:
            # Taken meanwhile: nothing was held, so the open changed nothing either.
            raise RelayRefusal(409, "KeysNotHeld", str(exc)) from None
        try:
            before = opened.result()
        except (UnknownKeysError, BlockConflictError) as exc:
            await self.store.drop_hold(stream=message.stream, hold_id=message.relay_id)
            raise RelayRefusal(409, "Conflict", str(exc)) from None
        if before is not None:
            return self._opened_again(message, before)
        return RelayPrepared(relay_id=message.relay_id, again=False)

    def _opened_again(self, message: RelayPrepare, tag: str) -> RelayPrepared:
        sealed = message.sealed
        if sealed is None or not tags_match(tag, _unb64(sealed.tag).hex()):
            raise RelayRefusal(
                409, "BadTag", f"relay {message.relay_id} was prepared here with another message"
            )
        return RelayPrepared(relay_id=message.relay_id, again=True)

    async def _pass_on(
        self, message: RelayPrepare, keys: list[Key], pool: PoolKey, pads: Hold
    ) -> RelayPrepared:
        relay_id, stream_in, after = message.relay_id, message.stream, pool.peer
        n = len(keys)
        pad_keys = sorted(pads.keys, key=lambda k: k.key_id)
        pad_ids = tuple(k.key_id for k in pad_keys)
        unsealed = message.model_copy(
            update={
                "stream": pool.stream,
                "hop": message.hop + 1,
                "wait_ms": max(1, message.wait_ms // 2),
                "sealed": None,
            }
        )
        ciphertext, tag = seal(
            header=header_bytes({**unsealed.tagged_fields(), "pad_key_ids": list(pad_ids)}),
            keys=[k.material for k in keys],
            pads=[p.material for p in pad_keys[:n]],
            tag_material=[p.material for p in pad_keys[n:]],
        )
        onward = unsealed.model_copy(
            update={
                "sealed": Sealed(pad_key_ids=pad_ids, ciphertext=_b64(ciphertext), tag=_b64(tag))
            }
        )
        try:
            answer = await self.peers.relay_prepare(after, onward)
        except KrpRefused as exc:
            await self.store.drop_hold(stream=pool.stream, hold_id=relay_id)
            await self.store.drop_hold(stream=stream_in, hold_id=relay_id)
            # Whatever it was, the pads went on the wire: the relay ends here (409, never 503).
            reason: Reason = "PeerUnreachable" if exc.reason == "Unavailable" else exc.reason
            raise RelayRefusal(409, reason, exc.message) from None
        except KrpUnreachable as exc:
            await self._drop_after(pool.stream, relay_id, maybe_sent=exc.maybe_delivered)
            await self.store.drop_hold(stream=stream_in, hold_id=relay_id)
            raise RelayRefusal(
                409, "PeerUnreachable", f"node {after} did not answer node {self.node_id}"
            ) from None
        return RelayPrepared(relay_id=relay_id, again=answer.again)

    # -- a repeater or the destination: commit and abort ---------------------------------------

    async def on_commit(self, message: RelayCommit, caller: str) -> None:
        """Commit what this node holds for the relay; pass the commit on, or at the
        destination, hold the keys for the slave SAE (and hand them over)."""
        relay_id = message.relay_id
        incoming = [s.name for s in self.topology.streams_towards(caller)]
        if self.is_local_sae(message.slave_sae):
            lease_ms = int(self.settings.fetch_window_seconds * 1000)
            owner = pair_owner(message.master_sae, message.slave_sae)
            for stream in incoming:
                try:
                    await self.store.deliver_relayed(
                        stream=stream, hold_id=relay_id, lease_ms=lease_ms
                    )
                except UnknownStreamError:
                    continue
            if message.hand_over:
                for stream in incoming:
                    try:
                        held = await self.store.holds_for(
                            stream=stream, owner=owner, key_ids=message.key_ids
                        )
                    except UnknownStreamError:
                        continue
                    handover = HandOver(
                        request_id=message.request_id,
                        stream=stream,
                        master_sae=message.master_sae,
                        slave_sae=message.slave_sae,
                        size_bits=message.size_bits,
                        key_ids=message.key_ids,
                    )
                    if await self.hand_over(handover, held, caller) or held:
                        break
                else:
                    log.warning(
                        "relay %s committed by node %s, but its keys are not held here (past"
                        " their hold); the slave SAE cannot fetch them",
                        relay_id,
                        caller,
                    )
            return
        holding = await self.store.streams_holding(hold_id=relay_id)
        if not set(holding) & set(incoming):
            return  # committed before, or not a relay that came from the caller
        # The onward hold (with the commit for the next node) before the incoming one, in one
        # batch (one fsync): Redis runs them in this order, so even a batch cut short leaves
        # the incoming hold, and the sender's retry finds this relay here and finishes it.
        batch = self.store.batch()
        commits = [
            batch.commit_hold(
                stream=stream,
                hold_id=relay_id,
                notice=None if stream in incoming else self._commit_notice(message),
            )
            for stream in sorted(holding, key=lambda s: s in incoming)
        ]
        await batch.run()
        for commit in commits:
            commit.result()
        if not set(holding) <= set(incoming):
            self.kick()

    async def on_abort(self, message: RelayAbort, caller: str) -> int:
        """Drop what this node holds for the relay, passing the abort on where it held pads
        for the next node, and remember the relay as aborted. Only the node before this one on
        the path can abort it here. Returns the keys dropped."""
        relay_id = message.relay_id
        incoming = {s.name for s in self.topology.streams_towards(caller)}
        holding = set(await self.store.streams_holding(hold_id=relay_id))
        if holding and not holding & incoming:
            return 0  # not a relay that came from the caller
        dropped = 0
        for stream in sorted(holding - incoming):
            dropped += await self.store.drop_hold(
                stream=stream, hold_id=relay_id, notice=self._abort_notice(relay_id)
            )
            self.kick()
        for stream in sorted(incoming):
            try:
                dropped += await self.store.drop_hold(stream=stream, hold_id=relay_id)
            except UnknownStreamError:
                continue
        if dropped:
            metrics.relay_aborted(
                role="repeater" if holding - incoming else "destination", reason="Aborted"
            )
            log.info(
                "relay %s aborted by node %s: dropped %d keys held for it",
                relay_id,
                caller,
                dropped,
            )
        return dropped


def _reason(exc: DeliveryError) -> Reason:
    if isinstance(exc, KeyConflict):
        return "Conflict"
    if isinstance(exc, InsufficientKeys):
        return "InsufficientKeys"
    if isinstance(exc, NoRoute):
        return "NoRoute"
    return "PeerUnreachable"


def _error(reason: str, message: str) -> DeliveryError:
    return _ERRORS.get(reason, RelayFailed)(message)
