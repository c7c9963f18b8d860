"""The SAEs registered with this node, in memory: SAE ID -> its Sae object and its current
client certificate.

The Sae handlers (``controllers.handlers.saes``) keep it current: ``register`` after a Sae's
credentials are in place, ``unregister`` when it is deleted or its credentials are gone. The
ETSI 014 server authenticates callers with it (``authenticate``, the ``SaeAuthenticator`` of
``controllers.delivery.api``); key delivery finds a local SAE's namespace with ``lookup``; the
routing service (``controllers.routing.channel``) subscribes to learn when the set of SAE IDs
changes, and puts them in this node's S packet.

Only the current certificate of a registered SAE authenticates, so unregistering a Sae or
registering a new certificate for it revokes the old one at once: that is revocation here, no
CRL involved. When two Saes claim one SAE ID, the older Sae (by creationTimestamp, then
namespace and name) holds it, whatever order the controller sees them in after a restart; the
other is refused with ``DuplicateSaeID`` until the holder goes.

Everything here runs on the controller's event loop; nothing blocks and nothing is awaited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cryptography import x509

from controllers import pki

log = logging.getLogger(__name__)

Listener = Callable[[], None]


class DuplicateSaeID(Exception):
    """Another (older) Sae already holds the SAE ID; ``holder`` is (namespace, name)."""

    def __init__(self, sae_id: str, holder: tuple[str, str]) -> None:
        namespace, name = holder
        super().__init__(
            f"SAE ID {sae_id!r} is already registered with this node by Sae {namespace}/{name}; "
            "choose another saeID, or delete that Sae"
        )
        self.sae_id = sae_id
        self.holder = holder


@dataclass(frozen=True)
class Registration:
    """One registered SAE: which Sae object it is and which certificate is its credential."""

    sae_id: str
    namespace: str
    name: str
    # RFC 3339 creationTimestamp of the Sae; the older of two claimants keeps the SAE ID.
    created: str
    fingerprint: str  # SHA-256 of the certificate's DER, hex
    serial: int
    not_after: dt.datetime
    # The CA that issued the certificate (PEM), so the 014 server can trust it for TLS.
    ca_pem: bytes = field(repr=False)

    @property
    def ref(self) -> tuple[str, str]:
        return self.namespace, self.name

    def _seniority(self) -> tuple[str, str, str]:
        return self.created, self.namespace, self.name


def der_fingerprint(certificate_der: bytes) -> str:
    """SHA-256 of a DER certificate, hex: the same as ``pki.fingerprint`` without parsing."""
    return hashlib.sha256(certificate_der).hexdigest()


class LocalSaes:
    """This node's SAEs, and which client certificate currently authenticates each."""

    def __init__(self, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._by_id: dict[str, Registration] = {}
        self._by_fingerprint: dict[str, str] = {}
        self._listeners: list[Listener] = []
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    # --- reading ---------------------------------------------------------------------------

    def authenticate(self, certificate_der: bytes) -> str | None:
        """The SAE ID if ``certificate_der`` is the current, unexpired credential of a
        registered SAE; None for an unknown, revoked, superseded or expired certificate."""
        sae_id = self._by_fingerprint.get(der_fingerprint(certificate_der))
        if sae_id is None:
            return None
        if self._by_id[sae_id].not_after <= self._clock():
            return None
        return sae_id

    def lookup(self, sae_id: str) -> tuple[str, str] | None:
        """(namespace, Sae name) of a local SAE, or None if no Sae here holds the ID."""
        registration = self._by_id.get(sae_id)
        return None if registration is None else registration.ref

    def get(self, sae_id: str) -> Registration | None:
        return self._by_id.get(sae_id)

    def sae_ids(self) -> list[str]:
        """Every registered SAE ID, sorted (what this node's S packet lists)."""
        return sorted(self._by_id)

    def client_ca_pems(self) -> list[bytes]:
        """The distinct CAs (PEM) that issued the registered certificates: what the 014
        server's TLS context must trust for these SAEs to get through the handshake."""
        return list(dict.fromkeys(r.ca_pem for r in self._by_id.values()))

    def __contains__(self, sae_id: object) -> bool:
        return sae_id in self._by_id

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    # --- changing --------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener()`` after every change of the set of SAE IDs or of a credential;
        returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def check_claim(self, *, sae_id: str, namespace: str, name: str, created: str) -> None:
        """Raise ``DuplicateSaeID`` if a Sae older than namespace/name (created at ``created``)
        holds ``sae_id``; registering would then fail."""
        old = self._by_id.get(sae_id)
        mine = (created, namespace, name)
        if old is not None and old.ref != (namespace, name) and old._seniority() <= mine:
            raise DuplicateSaeID(sae_id, old.ref)

    def register(
        self,
        *,
        sae_id: str,
        namespace: str,
        name: str,
        created: str,
        certificate: bytes | x509.Certificate,
        ca_pem: bytes,
    ) -> Registration:
        """Make ``certificate`` the one credential of ``sae_id``, held by Sae namespace/name.

        Raises ``DuplicateSaeID`` if an older Sae holds the ID, and ``pki.NotAnSaeCertificate``
        unless the certificate names ``sae_id``. A younger holder is displaced
        (its certificate stops authenticating); its own reconciliation then finds it a
        duplicate. Re-registering the same Sae with a new certificate supersedes the old one.
        """
        self.check_claim(sae_id=sae_id, namespace=namespace, name=name, created=created)
        cert = pki.load_certificate(certificate)
        named = pki.sae_id_of(cert)  # raises NotAnSaeCertificate for anything else
        if named != sae_id:
            raise pki.NotAnSaeCertificate(
                f"the certificate names SAE {named!r}; it cannot be registered as {sae_id!r}"
            )
        new = Registration(
            sae_id=sae_id,
            namespace=namespace,
            name=name,
            created=created,
            fingerprint=pki.fingerprint(cert),
            serial=cert.serial_number,
            not_after=cert.not_valid_after_utc,
            ca_pem=ca_pem,
        )
        old = self._by_id.get(sae_id)
        if old is not None and old.ref != new.ref:
            log.warning(
                "SAE ID %s moves from Sae %s/%s to the older Sae %s/%s",
                sae_id,
                old.namespace,
                old.name,
                namespace,
                name,
            )
        if old == new:
            return new
        if old is not None:
            self._by_fingerprint.pop(old.fingerprint, None)
        self._by_id[sae_id] = new
        self._by_fingerprint[new.fingerprint] = sae_id
        log.info(
            "SAE %s registered for Sae %s/%s (certificate serial %x, sha256 %s)",
            sae_id,
            namespace,
            name,
            new.serial,
            new.fingerprint,
        )
        self._changed()
        return new

    def unregister(self, *, sae_id: str, namespace: str, name: str) -> bool:
        """Forget ``sae_id`` if Sae namespace/name holds it (its certificate stops
        authenticating at once); True if it did."""
        old = self._by_id.get(sae_id)
        if old is None or old.ref != (namespace, name):
            return False
        del self._by_id[sae_id]
        self._by_fingerprint.pop(old.fingerprint, None)
        log.info("SAE %s unregistered (Sae %s/%s)", sae_id, namespace, name)
        self._changed()
        return True

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                # A broken listener must not undo a revocation half-way.
                log.exception("listener of the local SAE registry failed")
