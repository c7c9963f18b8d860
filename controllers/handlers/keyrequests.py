"""The KeyRequest reconciler: master requests (getKey) and slave requests (getKeyWithId).

Each step is idempotent under the request's UID, and the Secret is the proof of delivery: if it
exists, the keys it names are delivered, so a restarted controller only finishes the step it was
in (consume, status) and never reserves or delivers a second set. Waiting for keys is bounded by
the request's timeoutSeconds; then it fails with a condition that says why, holding nothing.
Served and failed requests are counted in ``controllers.metrics``; a request that failed for
want of keys is also a Warning Event (InsufficientKeys) on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from controllers import metrics
from controllers.delivery.api import DeliveredKey, DeliveryError
from controllers.delivery.service import NodeKeyDelivery, Ticket
from controllers.events import EventRecorder, Regarding
from controllers.keyrequests import (
    Role,
    deadline_of,
    failed_status,
    key_ids_in_secret,
    key_secret,
    now_precise,
    ready_status,
    role_of,
    secret_name,
    started_status,
)
from controllers.kube import AlreadyExistsError, Kube, NotFoundError
from qss_api import KEYREQUESTS, SAES


class RequestFailed(Exception):
    """The request cannot succeed; ``reason`` goes into its Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


async def _sae_id(kube: Kube, namespace: str, name: str) -> str:
    try:
        sae = await kube.get(SAES, name, namespace)
    except NotFoundError:
        raise RequestFailed(
            "UnknownSae", f"Sae {name!r} does not exist in namespace {namespace!r}"
        ) from None
    return str(sae["spec"]["saeID"])


def _remaining(meta: kopf.Meta, spec: kopf.Spec) -> float:
    return (deadline_of(meta, spec) - dt.datetime.now(dt.UTC)).total_seconds()


@kopf.on.create(KEYREQUESTS)
async def serve_keyrequest(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    if status.get("phase") in ("Ready", "Failed") or namespace is None:
        return
    kube: Kube = memo["kube"]
    delivery: NodeKeyDelivery = memo["delivery"]
    role = role_of(spec)
    peer_sae = str(spec.get("masterSaeID", ""))
    generation = int(meta.get("generation", 0))
    started = status.get("startTime") or now_precise()
    reserving = started_status(role=role, generation=generation, at=started)

    async def show_reserving() -> None:
        """Only a request that has to wait says so: the fast path skips this write."""
        if status.get("phase") != "Reserving":
            await kube.apply_status(KEYREQUESTS, name, reserving, namespace=namespace)

    target = secret_name(name, spec)
    ticket: Ticket | None = None
    try:
        sae_id = await _sae_id(kube, namespace, str(spec["sae"]))
        if role == "Master":
            key_ids, peer, ticket = await _serve_master(
                delivery,
                kube,
                name=name,
                namespace=namespace,
                uid=uid,
                spec=spec,
                meta=meta,
                sae_id=sae_id,
                secret=target,
                on_wait=show_reserving,
            )
        else:
            key_ids, peer = await _serve_slave(
                delivery,
                kube,
                name=name,
                namespace=namespace,
                uid=uid,
                spec=spec,
                sae_id=sae_id,
                secret=target,
            )
    except (DeliveryError, RequestFailed) as exc:
        if isinstance(exc, DeliveryError) and exc.retryable and _remaining(meta, spec) > 0:
            raise kopf.TemporaryError(exc.message, delay=0.5) from None
        _count_failure(memo, body, role, exc.reason, exc.message)
        await _fail(
            kube,
            delivery,
            name,
            namespace,
            uid,
            spec,
            role,
            exc.reason,
            exc.message,
            started,
            generation,
        )
        return
    done = ready_status(
        role=role,
        key_ids=key_ids,
        secret=target,
        peer_node=peer,
        started=started,
        generation=generation,
    )
    await kube.apply_status(KEYREQUESTS, name, done, namespace=namespace)
    logger.info("%d keys delivered in Secret %s", len(key_ids), target)
    master, slave = (sae_id, spec["slaveSaeID"]) if role == "Master" else (peer_sae, sae_id)
    metrics.keys_served(
        interface="keyrequest",
        operation=_OPERATION[role],
        master_sae=str(master),
        slave_sae=str(slave),
        keys=len(key_ids),
        seconds=(dt.datetime.now(dt.UTC) - _parse_time(started)).total_seconds(),
    )
    if ticket is not None:
        # After the status, so the master does not wait on the peer's API server; a failed
        # hand-over leaves the slave to fetch the keys by ID (014 dec_keys or its own request).
        try:
            await delivery.handover(ticket, key_ids=key_ids)
        except DeliveryError as exc:
            logger.warning("hand-over to node %s failed: %s", ticket.peer_node, exc.message)


_OPERATION: dict[Role, metrics.Operation] = {"Master": "get_key", "Slave": "get_key_with_ids"}


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _count_failure(memo: Any, body: kopf.Body, role: Role, reason: str, message: str) -> None:
    """A failed request: counted by reason; a shortage of keys is also an Event on it."""
    metrics.request_failed(interface="keyrequest", operation=_OPERATION[role], reason=reason)
    if reason == "InsufficientKeys":
        events: EventRecorder = memo["events"]
        events.record(Regarding.of(body), type="Warning", reason="InsufficientKeys", note=message)


async def _serve_master(
    delivery: NodeKeyDelivery,
    kube: Kube,
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    sae_id: str,
    secret: str,
    on_wait: Callable[[], Awaitable[None]],
) -> tuple[list[str], str, Ticket]:
    slave = str(spec["slaveSaeID"])
    existing = await kube.secret_data(secret, namespace)
    if existing is not None:
        if uid not in existing["owner_uids"]:
            raise RequestFailed(
                "SecretExists", f"Secret {secret!r} exists and belongs to something else"
            )
        key_ids = key_ids_in_secret(existing["data"])  # delivered before a restart
        ticket = await _ticket_for(delivery, uid, sae_id, slave, key_ids, int(spec["size"]))
        await delivery.commit(ticket)
        return key_ids, ticket.peer_node, ticket
    ticket = await delivery.reserve_pair(
        request_id=uid,
        master_sae_id=sae_id,
        slave_sae_id=slave,
        number=int(spec["number"]),
        size_bits=int(spec["size"]),
        timeout=max(0.0, _remaining(meta, spec)),
        on_wait=on_wait,
    )
    try:
        keys = await delivery.read(ticket)
        await _write_secret(kube, secret, namespace, name, uid, keys)
    except BaseException:
        await delivery.abort(ticket)
        raise
    await delivery.commit(ticket)
    return ticket.key_ids, ticket.peer_node, ticket


async def _ticket_for(
    delivery: NodeKeyDelivery, uid: str, master: str, slave: str, key_ids: list[str], size: int
) -> Ticket:
    """The ticket of keys delivered before a restart, to finish committing them."""
    node = delivery.directory.node_of(slave) or ""
    for info in delivery.topology.streams_towards(node):
        reservation = await delivery.store.reservation(stream=info.name, reservation_id=uid)
        if reservation is not None:
            return Ticket(
                request_id=uid,
                stream=info.name,
                peer_node=node,
                master_sae_id=master,
                slave_sae_id=slave,
                size_bits=size,
                keys=reservation.keys,
            )
    return Ticket(
        request_id=uid,
        stream="",
        peer_node=node,
        master_sae_id=master,
        slave_sae_id=slave,
        size_bits=size,
        keys=(),
    )


async def _serve_slave(
    delivery: NodeKeyDelivery,
    kube: Kube,
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    sae_id: str,
    secret: str,
) -> tuple[list[str], str]:
    master = str(spec["masterSaeID"])
    key_ids = [str(k) for k in spec["keyIDs"]]
    peer = delivery.directory.node_of(master) or ""
    existing = await kube.secret_data(secret, namespace)
    if existing is not None and uid in existing["owner_uids"]:
        stream = await _stream_holding(delivery, sae_id, master, key_ids)
        if stream:
            await delivery.commit_ids(
                stream=stream, slave_sae_id=sae_id, master_sae_id=master, key_ids=key_ids
            )
        return key_ids, peer
    if existing is not None:
        raise RequestFailed(
            "SecretExists", f"Secret {secret!r} exists and belongs to something else"
        )
    stream, keys = await delivery.read_with_ids(
        slave_sae_id=sae_id, master_sae_id=master, key_ids=key_ids
    )
    await _write_secret(kube, secret, namespace, name, uid, keys)
    await delivery.commit_ids(
        stream=stream, slave_sae_id=sae_id, master_sae_id=master, key_ids=key_ids
    )
    return key_ids, peer


async def _stream_holding(
    delivery: NodeKeyDelivery, slave: str, master: str, key_ids: list[str]
) -> str | None:
    try:
        stream, _ = await delivery.read_with_ids(
            slave_sae_id=slave, master_sae_id=master, key_ids=key_ids
        )
    except DeliveryError:
        return None  # consumed already
    return stream


async def _write_secret(
    kube: Kube, secret: str, namespace: str, name: str, uid: str, keys: list[DeliveredKey]
) -> None:
    body = key_secret(name=secret, namespace=namespace, keys=keys, owner={"name": name, "uid": uid})
    try:
        await kube.create_secret(body)
    except AlreadyExistsError:
        raise RequestFailed(
            "SecretExists", f"Secret {secret!r} exists already; name another in spec.secretName"
        ) from None


async def _fail(
    kube: Kube,
    delivery: NodeKeyDelivery,
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    role: Role,
    reason: str,
    message: str,
    started: str | None,
    generation: int,
) -> None:
    if role == "Master":
        try:
            sae_id = await _sae_id(kube, namespace, str(spec["sae"]))
            await delivery.release_request(
                request_id=uid, master_sae_id=sae_id, slave_sae_id=str(spec["slaveSaeID"])
            )
        except RequestFailed:
            pass
    status = failed_status(
        role=role, reason=reason, message=message, started=started, generation=generation
    )
    await kube.apply_status(KEYREQUESTS, name, status, namespace=namespace)


@kopf.on.delete(KEYREQUESTS)
async def release_keyrequest(
    namespace: str | None, uid: str, spec: kopf.Spec, status: kopf.Status, memo: Any, **_: Any
) -> None:
    """A request deleted before it was served gives back whatever it held, on both nodes."""
    if status.get("phase") in ("Ready", "Failed") or role_of(spec) != "Master" or not namespace:
        return
    kube: Kube = memo["kube"]
    delivery: NodeKeyDelivery = memo["delivery"]
    try:
        sae_id = await _sae_id(kube, namespace, str(spec["sae"]))
    except RequestFailed:
        return
    await delivery.release_request(
        request_id=uid, master_sae_id=sae_id, slave_sae_id=str(spec["slaveSaeID"])
    )
