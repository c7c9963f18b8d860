"""Reconciling one Sae: its credentials in place, its certificate registered, its status.

The kopf handlers of ``controllers.handlers.saes`` decode the object with ``SaeObject.from_body``,
call ``reconcile`` and ``unregister``, and write ``sae_status``. An Automatic Sae gets a client
certificate from the node CA in Secret ``<name>-credentials`` (re-used while it is valid, so a
controller restart issues nothing); a Manual Sae's certificate is read from the Secret it
names. Either way the certificate becomes the SAE's only credential in ``LocalSaes``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from kubernetes_asyncio import client

from controllers import pki
from controllers.conditions import condition, merge_conditions
from controllers.saes import credentials, secrets
from controllers.saes.credentials import Checked, CredentialsProblem
from controllers.saes.registry import DuplicateSaeID, LocalSaes
from qss_api import API_VERSION, KIND_SAE, LABEL_NAME, LABEL_PART_OF, PART_OF

AUTOMATIC: Final = "Automatic"
MANUAL: Final = "Manual"
SECRET_SUFFIX: Final = "-credentials"
_MAX_NAME: Final = 253  # a Secret's name is a DNS subdomain

_LABELS: Final = {LABEL_NAME: "kube-qss", LABEL_PART_OF: PART_OF}


class InvalidSpec(ValueError):
    """The Sae cannot be reconciled as written; the message says what to change."""


@dataclass(frozen=True)
class SaeObject:
    """What reconciling needs of a Sae object."""

    namespace: str
    name: str
    uid: str
    created: str
    generation: int
    sae_id: str
    registration: str
    manual_secret: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SaeObject:
        meta: Mapping[str, Any] = body.get("metadata") or {}
        spec: Mapping[str, Any] = body.get("spec") or {}
        sae_id = str(spec.get("saeID", ""))
        try:
            pki.check_sae_id(sae_id)
        except pki.CertificateError as exc:
            raise InvalidSpec(f"spec.saeID: {exc}") from None
        registration = str(spec.get("registration", AUTOMATIC))
        manual_secret = spec.get("credentialsSecretName")
        if registration == MANUAL and not manual_secret:
            raise InvalidSpec("registration Manual needs spec.credentialsSecretName")
        if registration not in (AUTOMATIC, MANUAL):
            raise InvalidSpec(f"spec.registration must be {AUTOMATIC} or {MANUAL}")
        sae = cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            created=str(meta.get("creationTimestamp", "")),
            generation=int(meta.get("generation", 0)),
            sae_id=sae_id,
            registration=registration,
            manual_secret=str(manual_secret) if registration == MANUAL else None,
        )
        if len(sae.secret_name) > _MAX_NAME:
            raise InvalidSpec(
                f"the Sae's name is too long for its Secret {sae.secret_name[:40]}...; "
                f"use a name of at most {_MAX_NAME - len(SECRET_SUFFIX)} characters"
            )
        return sae

    @property
    def secret_name(self) -> str:
        """The Secret holding the SAE's credentials."""
        return self.manual_secret or f"{self.name}{SECRET_SUFFIX}"

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.secret_name}"


@dataclass(frozen=True)
class Outcome:
    """What reconciling found: Ready with a registered certificate, or why not."""

    ready: bool
    reason: str
    message: str
    certificate: x509.Certificate | None = None
    issued_because: str | None = None  # set when a new certificate was issued, and why


async def _issued(
    core: client.CoreV1Api,
    sae: SaeObject,
    *,
    ca_cert_pem: bytes,
    ca: pki.Credentials | None,
    now: dt.datetime,
) -> tuple[Checked, str | None]:
    """The Automatic Sae's certificate, issued now if its Secret has none usable."""
    existing = await secrets.read_secret(core, sae.namespace, sae.secret_name)
    if existing is None:
        why = "its credentials Secret did not exist"
    else:
        if existing.controller_uid != sae.uid:
            raise CredentialsProblem(
                "CredentialsSecretConflict",
                f"Secret {sae.where} exists but is not controlled by this Sae, so it is left "
                "alone; delete or rename it, or use registration Manual to name it",
            )
        renewal = credentials.renewal_reason(
            existing.data, sae_id=sae.sae_id, ca_pem=ca_cert_pem, now=now
        )
        if renewal is None:
            return credentials.issued_certificate(existing.data, ca_cert_pem), None
        why = renewal
    if ca is None:
        raise CredentialsProblem(
            "CannotIssueCredentials",
            "this node has no CA key to issue SAE certificates (Secret qss-node-ca has no "
            "ca.key); use registration Manual, or give the node its CA key",
        )
    issued = pki.issue_sae_certificate(ca, sae.sae_id)
    data = credentials.issued_data(issued, ca_cert_pem)
    if existing is not None:
        await secrets.update_secret_data(core, existing, data)
        return Checked(issued.certificate, ca_cert_pem), why
    stored = await secrets.create_secret(
        core,
        namespace=sae.namespace,
        name=sae.secret_name,
        type_="kubernetes.io/tls",
        data=data,
        labels=_LABELS,
        owner=secrets.Owner(api_version=API_VERSION, kind=KIND_SAE, name=sae.name, uid=sae.uid),
    )
    if stored.data.get(credentials.TLS_CRT) == issued.cert_pem:
        return Checked(issued.certificate, ca_cert_pem), why
    # Another writer created the Secret first: use theirs if it is ours and sound.
    if stored.controller_uid != sae.uid or credentials.renewal_reason(
        stored.data, sae_id=sae.sae_id, ca_pem=ca_cert_pem, now=now
    ):
        raise secrets.SecretConflict(f"Secret {sae.where} was created by another writer")
    return credentials.issued_certificate(stored.data, ca_cert_pem), None


async def _manual(core: client.CoreV1Api, sae: SaeObject, *, now: dt.datetime) -> Checked:
    existing = await secrets.read_secret(core, sae.namespace, sae.secret_name)
    if existing is None:
        raise CredentialsProblem(
            "CredentialsSecretNotFound",
            f"Secret {sae.where} (spec.credentialsSecretName) does not exist; create it with "
            "the SAE's tls.crt, tls.key and ca.crt",
        )
    return credentials.manual_certificate(
        existing.data, sae_id=sae.sae_id, where=sae.where, now=now
    )


async def reconcile(
    sae: SaeObject,
    *,
    core: client.CoreV1Api,
    local: LocalSaes,
    ca_cert_pem: bytes,
    ca: pki.Credentials | None,
    now: dt.datetime | None = None,
) -> Outcome:
    """Put the Sae's credentials in place and register its certificate in ``local``.

    Returns a not-Ready ``Outcome`` for what the user must fix or wait for (a duplicate SAE ID,
    a missing or invalid Secret); an SAE whose credentials are gone is unregistered. Raises
    ``secrets.SecretAccessError`` when the API server fails us (nothing is changed then).
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        local.check_claim(
            sae_id=sae.sae_id, namespace=sae.namespace, name=sae.name, created=sae.created
        )
        if sae.registration == AUTOMATIC:
            checked, issued_because = await _issued(
                core, sae, ca_cert_pem=ca_cert_pem, ca=ca, now=now
            )
        else:
            checked, issued_because = await _manual(core, sae, now=now), None
        local.register(
            sae_id=sae.sae_id,
            namespace=sae.namespace,
            name=sae.name,
            created=sae.created,
            certificate=checked.certificate,
            ca_pem=checked.ca_pem,
        )
    except DuplicateSaeID as exc:
        return Outcome(ready=False, reason="DuplicateSaeID", message=str(exc))
    except CredentialsProblem as exc:
        unregister(sae, local=local)
        return Outcome(ready=False, reason=exc.reason, message=exc.message)
    cert = checked.certificate
    return Outcome(
        ready=True,
        reason="Registered",
        message=f"SAE {sae.sae_id} is registered with this node; its client certificate "
        f"(serial {serial_hex(cert)}) is in Secret {sae.secret_name}",
        certificate=cert,
        issued_because=issued_because,
    )


def unregister(sae: SaeObject, *, local: LocalSaes) -> bool:
    """Revoke the Sae's certificate: it stops authenticating at once."""
    return local.unregister(sae_id=sae.sae_id, namespace=sae.namespace, name=sae.name)


def serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sae_status(
    sae: SaeObject,
    outcome: Outcome,
    *,
    node_id: str,
    conditions: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The Sae's status for ``outcome``: every field the controller owns (fields left out are
    dropped by server-side apply, so a not-Ready Sae shows no certificate)."""
    status: dict[str, Any] = {
        "observedGeneration": sae.generation,
        "nodeID": node_id,
        "credentialsSecretName": sae.secret_name,
    }
    if outcome.certificate is not None:
        status["certificateSerial"] = serial_hex(outcome.certificate)
        status["certificateNotAfter"] = _rfc3339(outcome.certificate.not_valid_after_utc)
    ready = condition(
        "Ready",
        ok=outcome.ready,
        reason=outcome.reason,
        message=outcome.message,
        generation=sae.generation,
    )
    status["conditions"] = merge_conditions(conditions, [ready])
    return status


def invalid_spec_status(body: Mapping[str, Any], message: str, *, node_id: str) -> dict[str, Any]:
    """The status of a Sae whose spec cannot work (``InvalidSpec``): Ready=False and why."""
    generation = int((body.get("metadata") or {}).get("generation", 0))
    ready = condition(
        "Ready", ok=False, reason="InvalidSpec", message=message, generation=generation
    )
    return {
        "observedGeneration": generation,
        "nodeID": node_id,
        "conditions": merge_conditions((body.get("status") or {}).get("conditions"), [ready]),
    }
