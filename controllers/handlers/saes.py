"""Sae reconciler of the controller: credentials, registration with this node, revocation.

On create, on resume (controller start) and on spec changes the Sae's credentials are put in
place and its certificate registered in ``memo["local_saes"]`` (``controllers.saes.reconcile``);
a timer re-checks every Sae (certificate renewal, a Manual Secret changed or deleted, an SAE ID
freed by another Sae). Deleting a Sae unregisters it before kopf removes its finalizer, so its
certificate is refused from then on; its issued Secret goes with it (ownerReference).

What may heal (a Secret not there yet, a duplicate SAE ID, an API error) is retried by kopf with
a growing delay; a spec that cannot work is a ``kopf.PermanentError``. Status is written with
server-side apply. Handlers read ``memo["kube"]``, ``memo["settings"]``, ``memo["identity"]``,
``memo["local_saes"]`` and ``memo["events"]``, which ``controllers.main`` sets at start-up.
Issuing and revoking credentials are Events.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, Final

import kopf
from cryptography.x509 import Certificate

from controllers.events import EventRecorder, Regarding
from controllers.identity import NodeIdentity
from controllers.kube import API_FAILURES, Kube, NotFoundError, api_failure
from controllers.saes.reconcile import (
    InvalidSpec,
    Outcome,
    SaeObject,
    invalid_spec_status,
    reconcile,
    sae_status,
    serial_hex,
)
from controllers.saes.registry import LocalSaes
from controllers.saes.secrets import SecretAccessError
from controllers.settings import ControllerSettings
from qss_api import SAES

# How often every Sae is checked again without a change to it: bounds how late a renewal, a
# replaced Manual Secret or a freed SAE ID is noticed.
RESYNC_SECONDS: Final = 60.0
# Retries of what may heal start this soon and double up to the cap, so a Sae waiting for its
# Secret is served quickly but does not flood the API server and the events for hours.
RETRY_FIRST_SECONDS: Final = 5.0
RETRY_MAX_SECONDS: Final = 300.0

# kopf gives every object its own memo (a shallow copy of the operator's), shared by that
# object's handlers and timer: the place for the lock that serialises them.
_LOCK: Final = "sae_lock"


def retry_delay(retry: int) -> float:
    """kopf's delay before retry number ``retry + 1``."""
    return min(RETRY_FIRST_SECONDS * (1 << min(retry, 16)), RETRY_MAX_SECONDS)


def _one_at_a_time(memo: kopf.Memo) -> asyncio.Lock:
    """The lock serialising the handlers and the timer of one Sae, so a slow reconcile never
    registers a certificate after a newer one (or after the Sae's deletion)."""
    lock: asyncio.Lock = memo.setdefault(_LOCK, asyncio.Lock())
    return lock


async def _sae(body: kopf.Body, kube: Kube, node_id: str) -> SaeObject:
    """The decoded Sae; for a spec that cannot work, Ready=False InvalidSpec and
    ``kopf.PermanentError``."""
    try:
        return SaeObject.from_body(body)
    except InvalidSpec as exc:
        meta = body.get("metadata", {})
        status = invalid_spec_status(body, str(exc), node_id=node_id)
        with suppress(NotFoundError):
            await kube.apply_status(
                SAES, str(meta.get("name")), status, namespace=str(meta.get("namespace"))
            )
        raise kopf.PermanentError(str(exc)) from None


def _record_issued(
    events: EventRecorder, body: kopf.Body, sae: SaeObject, certificate: Certificate, why: str
) -> None:
    not_after = certificate.not_valid_after_utc.date().isoformat()
    events.record(
        Regarding.of(body),
        type="Normal",
        reason="CertificateIssued",
        note=f"issued a client certificate for SAE {sae.sae_id} into Secret "
        f"{sae.secret_name} (serial {serial_hex(certificate)}, valid until "
        f"{not_after}) because {why}",
    )


async def _reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger) -> Outcome | None:
    """Reconcile the Sae and write its status (None if it is being deleted);
    ``kopf.TemporaryError`` on an API failure."""
    kube: Kube = memo["kube"]
    identity: NodeIdentity = memo["identity"]
    local: LocalSaes = memo["local_saes"]
    settings: ControllerSettings = memo["settings"]
    sae = await _sae(body, kube, settings.node_id)
    async with _one_at_a_time(memo):
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None
        try:
            outcome = await reconcile(
                sae, core=kube.core, local=local, ca_cert_pem=identity.ca_cert_pem, ca=identity.ca
            )
        except SecretAccessError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_FIRST_SECONDS) from None
        # Before the status write: a write that fails is tried again, and the retry issues
        # nothing new to tell.
        if outcome.issued_because is not None and outcome.certificate is not None:
            _record_issued(memo["events"], body, sae, outcome.certificate, outcome.issued_because)
        conditions = (body.get("status") or {}).get("conditions")
        status = sae_status(sae, outcome, node_id=settings.node_id, conditions=conditions)
        try:
            await kube.apply_status(SAES, sae.name, status, namespace=sae.namespace)
        except NotFoundError:
            return outcome  # deleted meanwhile; the delete handler unregisters it
        except API_FAILURES as exc:
            # 429 or 5xx, a write refused, no connection: soon again (kopf's own retry of an
            # unexpected error comes only after a minute).
            raise kopf.TemporaryError(
                f"cannot write the Sae's status: {api_failure(exc)}", delay=RETRY_FIRST_SECONDS
            ) from None
    if outcome.ready:
        logger.info("SAE %s is registered (%s)", sae.sae_id, outcome.message)
    return outcome


@kopf.on.resume(SAES)
@kopf.on.create(SAES)
@kopf.on.update(SAES, field="spec")
async def register_sae(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, **_: Any
) -> None:
    outcome = await _reconcile(body, memo, logger)
    if outcome is not None and not outcome.ready:
        raise kopf.TemporaryError(f"{outcome.reason}: {outcome.message}", delay=retry_delay(retry))


@kopf.timer(SAES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync_sae(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # The status already says what is wrong; the change handlers own the retries.
    try:
        await _reconcile(body, memo, logger)
    except kopf.TemporaryError as exc:
        logger.warning("re-checking the Sae failed, next try in %ss: %s", RESYNC_SECONDS, exc)
    except kopf.PermanentError:
        pass


@kopf.on.delete(SAES)
async def unregister_sae(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    local: LocalSaes = memo["local_saes"]
    sae_id, namespace = str(spec.get("saeID", "")), str(namespace)
    async with _one_at_a_time(memo):
        if local.unregister(sae_id=sae_id, namespace=namespace, name=name):
            logger.info("SAE %s unregistered; its certificate is no longer accepted", sae_id)
            events: EventRecorder = memo["events"]
            events.record(
                Regarding.of(body),
                type="Normal",
                reason="CredentialRevoked",
                note=f"SAE {sae_id} is unregistered: its client certificate is no longer accepted",
            )
