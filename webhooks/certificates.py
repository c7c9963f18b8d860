"""Keeping the webhook's serving certificate valid, trusted and loaded.

Two sources, chosen by ``WebhookSettings.cert_dir``; ``webhooks.main`` builds one and calls
``reconcile()`` until it succeeds before serving, then runs ``run()`` beside the server:

- ``SelfSignedCertificates`` (the default): the webhook is its own CA. The material lives in a
  Secret in the webhook's namespace so every replica and every restart serves the same
  certificates; ``webhooks.tls.next_material`` decides each step of a rotation; the CA bundle is
  written into the ``caBundle`` of every webhook of the MutatingWebhookConfiguration. Writes
  name the resourceVersion they read, so two replicas that rotate at once cannot both win: the
  loser adopts the winner's material on its next round. SIGHUP (``force_rotation``) starts a
  CA change at once, e.g. after a suspected key leak.
- ``FileCertificates``: cert-manager (or anyone) writes ``tls.crt``/``tls.key`` into a mounted
  directory and injects the CA into the configuration; the webhook reloads the files when they
  change.

Either way the certificate is loaded into the one ``ssl.SSLContext`` the server listens with;
``load_cert_chain`` on a live context applies to every handshake after it, so a rotation needs no
restart and drops no connection. Keys never appear in logs or errors; kubernetes_asyncio's
response-body logging is pinned off (the Secret holds the CA key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives import serialization
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from qss_api import LABEL_NAME, LABEL_PART_OF, PART_OF
from webhooks.tls import KeyPair, Lifetimes, ServingNames, TlsError, TlsMaterial, next_material

# kubernetes_asyncio logs response bodies at DEBUG; the TLS Secret holds the CA's private key.
logging.getLogger("kubernetes_asyncio.client.rest").setLevel(logging.INFO)

log = logging.getLogger(__name__)

TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
CA_CRT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
PREVIOUS_CA_CRT: Final = "ca-previous.crt"
# After a failed round (API server down, a conflict), try again this soon.
RETRY_SECONDS: Final = 2.0
# Rounds in a row that may lose the Secret to another replica before one gives up for now.
_WRITE_ATTEMPTS: Final = 3


class CertificateSourceError(Exception):
    """The certificates cannot be had now; the message says why (never key material)."""


def server_context() -> ssl.SSLContext:
    """The context the webhook listens with; certificates are loaded into it later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_pair(context: ssl.SSLContext, pair: KeyPair) -> None:
    """Load a certificate and key into ``context`` (``ssl.SSLError`` if they do not match).

    They are tried on a scratch context first: a load that fails half way (the certificate
    taken, the key refused) would leave the live context serving a certificate without its
    key, and every handshake after it failing."""
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pair)
    _load(context, pair)


def _load(context: ssl.SSLContext, pair: KeyPair) -> None:
    # ssl only reads files: they pass through anonymous memory files (memfd) that never touch a
    # disk.
    fds: list[int] = []
    try:
        for name, data in (("cert", pair.cert_pem), ("key", pair.key_pem)):
            fd = os.memfd_create(f"qss-webhook-{name}", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)


class CertificateSource(Protocol):
    async def reconcile(self, *, force: bool = False) -> None: ...

    async def run(self) -> None: ...

    def force_rotation(self) -> None: ...


@dataclass(frozen=True)
class _Stored:
    material: TlsMaterial
    resource_version: str


def _material(data: dict[str, str]) -> TlsMaterial:
    """The material stored in the Secret's ``data``, parsed; ``TlsError`` if it is unusable."""
    try:
        raw = {k: base64.b64decode(v, validate=True) for k, v in data.items()}
    except ValueError:
        raise TlsError("its data is not base64") from None
    missing = [k for k in (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY) if not raw.get(k)]
    if missing:
        raise TlsError(f"it lacks {', '.join(missing)}")
    material = TlsMaterial(
        ca=KeyPair(cert_pem=raw[CA_CRT], key_pem=raw[CA_KEY]),
        serving=KeyPair(cert_pem=raw[TLS_CRT], key_pem=raw[TLS_KEY]),
        previous_ca_pem=raw.get(PREVIOUS_CA_CRT) or None,
    )
    try:
        for pair in (material.ca, material.serving):
            pair.certificate  # noqa: B018 (parsing is the check)
            serialization.load_pem_private_key(pair.key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError("its certificates or keys are not PEM") from None
    return material


def _data(material: TlsMaterial) -> dict[str, str]:
    data = {
        TLS_CRT: material.serving.cert_pem,
        TLS_KEY: material.serving.key_pem,
        CA_CRT: material.ca.cert_pem,
        CA_KEY: material.ca.key_pem,
    }
    if material.previous_ca_pem:
        data[PREVIOUS_CA_CRT] = material.previous_ca_pem
    return {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}


class SelfSignedCertificates:
    """The webhook as its own CA (see the module docstring)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        context: ssl.SSLContext,
        namespace: str,
        secret: str,
        configuration: str,
        names: ServingNames,
        lifetimes: Lifetimes,
        check_interval: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._admission = client.AdmissionregistrationV1Api(api)
        self._context = context
        self._namespace, self._secret, self._configuration = namespace, secret, configuration
        self._names, self._lifetimes = names, lifetimes
        self._interval = check_interval
        self._clock = clock
        self._loaded: bytes | None = None
        self._wake = asyncio.Event()
        self._forced = False

    @property
    def serving_cert_pem(self) -> bytes | None:
        """The certificate the server presents now (None before the first success)."""
        return self._loaded

    def force_rotation(self) -> None:
        """Start a CA change at the next round, which starts now (SIGHUP)."""
        self._forced = True
        self._wake.set()

    async def _read(self) -> _Stored | None:
        try:
            secret = await self._core.read_namespaced_secret(self._secret, self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise CertificateSourceError(
                f"reading Secret {self._namespace}/{self._secret} failed: {exc.status} {exc.reason}"
            ) from None
        try:
            material = _material(dict(secret.data or {}))
        except TlsError as exc:
            # Replaced by fresh material at once (the write names this resourceVersion).
            log.warning(
                "Secret %s/%s is unusable (%s); replacing it", self._namespace, self._secret, exc
            )
            return _Stored(material=_BROKEN, resource_version=str(secret.metadata.resource_version))
        return _Stored(material=material, resource_version=str(secret.metadata.resource_version))

    async def _write(self, material: TlsMaterial, resource_version: str | None) -> bool:
        """Store ``material``; False if someone else changed the Secret first."""
        meta: dict[str, Any] = {
            "name": self._secret,
            "namespace": self._namespace,
            "labels": {LABEL_NAME: "kube-qss-webhook", LABEL_PART_OF: PART_OF},
        }
        try:
            if resource_version is None:
                body: dict[str, Any] = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "kubernetes.io/tls",
                    "metadata": meta,
                    "data": _data(material),
                }
                await self._core.create_namespaced_secret(self._namespace, body)  # type: ignore[arg-type]
            else:
                data: dict[str, str | None] = dict(_data(material))
                # A strategic merge patch deletes what it sets to null.
                data.setdefault(PREVIOUS_CA_CRT, None)
                patch = {"metadata": {"resourceVersion": resource_version}, "data": data}
                await self._core.patch_namespaced_secret(self._secret, self._namespace, patch)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise CertificateSourceError(
                f"writing Secret {self._namespace}/{self._secret} failed: {exc.status} {exc.reason}"
            ) from None
        return True

    async def _published(self) -> tuple[bytes | None, Any]:
        """The caBundle of the configuration's first webhook, and the configuration."""
        try:
            config = await self._admission.read_mutating_webhook_configuration(self._configuration)
        except ApiException as exc:
            if exc.status == 404:
                log.warning(
                    "MutatingWebhookConfiguration %s does not exist (yet); its caBundle is set "
                    "once it does",
                    self._configuration,
                )
                return None, None
            raise CertificateSourceError(
                f"reading MutatingWebhookConfiguration {self._configuration} failed: "
                f"{exc.status} {exc.reason}"
            ) from None
        bundles = [base64.b64decode(w.client_config.ca_bundle or "") for w in config.webhooks or []]
        published = bundles[0] if bundles and all(b == bundles[0] for b in bundles) else None
        return published, config

    async def _publish(self, bundle: bytes, config: Any) -> None:
        encoded = base64.b64encode(bundle).decode("ascii")
        ops: list[dict[str, Any]] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": config.metadata.resource_version,
            }
        ]
        for i, _ in enumerate(config.webhooks or []):
            ops.append(
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
            )
        try:
            await self._admission.patch_mutating_webhook_configuration(self._configuration, ops)
        except ApiException as exc:
            if exc.status in (409, 422):  # changed meanwhile: the next round sees the new one
                return
            raise CertificateSourceError(
                f"writing the caBundle of MutatingWebhookConfiguration {self._configuration} "
                f"failed: {exc.status} {exc.reason}"
            ) from None
        log.info(
            "published the CA bundle (%d CA) in %s",
            bundle.count(b"BEGIN CERTIFICATE"),
            self._configuration,
        )

    async def _settle(self, *, force: bool) -> tuple[TlsMaterial, bytes | None, Any]:
        """The material to serve now (rotated and stored if due), the published bundle and the
        configuration it was read from."""
        for _ in range(_WRITE_ATTEMPTS):
            stored = await self._read()
            published, config = await self._published()
            current = None if stored is None or stored.material is _BROKEN else stored.material
            step = next_material(
                current,
                names=self._names,
                lifetimes=self._lifetimes,
                now=self._clock(),
                published=published,
                force=force,
            )
            if step is None and current is not None:
                return current, published, config
            assert step is not None
            if await self._write(step, None if stored is None else stored.resource_version):
                log.info(
                    "TLS material changed: CA serial %x, serving serial %x valid until %s%s",
                    step.ca.certificate.serial_number,
                    step.serving.certificate.serial_number,
                    step.serving.certificate.not_valid_after_utc.isoformat(),
                    ", previous CA still trusted" if step.previous_ca_pem else "",
                )
                return step, published, config
            # Another replica wrote first: adopt what it wrote (a forced change is done by it).
            log.info("another replica changed the TLS Secret first; reading it again")
            force = False
        raise CertificateSourceError(
            f"Secret {self._namespace}/{self._secret} kept changing under this replica"
        )

    async def reconcile(self, *, force: bool = False) -> None:
        """One round: read, rotate if due, store, publish, load. ``CertificateSourceError`` if
        the API server could not be used (the last loaded certificate stays in use)."""
        material, published, config = await self._settle(force=force)
        if config is not None and published != material.bundle:
            await self._publish(material.bundle, config)
        if self._loaded != material.serving.cert_pem:
            load_pair(self._context, material.serving)
            self._loaded = material.serving.cert_pem
            log.info(
                "serving certificate serial %x loaded", material.serving.certificate.serial_number
            )

    async def run(self) -> None:
        """Reconcile every check interval (sooner after a failure, at once when forced)."""
        while True:
            delay = self._interval
            try:
                forced, self._forced = self._forced, False
                await self.reconcile(force=forced)
            except (CertificateSourceError, TlsError, OSError) as exc:
                log.warning("certificate round failed, retrying in %ss: %s", RETRY_SECONDS, exc)
                delay = RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()


# A marker for a Secret whose contents cannot be used: replaced like a missing one, but the write
# names its resourceVersion.
_BROKEN: Final = TlsMaterial(ca=KeyPair(b"", b""), serving=KeyPair(b"", b""))


class FileCertificates:
    """Certificates written by someone else (cert-manager) into ``directory``."""

    def __init__(self, directory: Path, *, context: ssl.SSLContext, check_interval: float) -> None:
        self._dir, self._context, self._interval = directory, context, check_interval
        self._loaded: bytes | None = None

    @property
    def serving_cert_pem(self) -> bytes | None:
        return self._loaded

    def force_rotation(self) -> None:
        log.info("SIGHUP: certificates come from %s; nothing to rotate here", self._dir)

    async def reconcile(self, *, force: bool = False) -> None:
        try:
            cert = (self._dir / TLS_CRT).read_bytes()
            key = (self._dir / TLS_KEY).read_bytes()
        except OSError as exc:
            raise CertificateSourceError(
                f"cannot read {TLS_CRT} and {TLS_KEY} in {self._dir}: {exc.strerror}"
            ) from None
        if cert != self._loaded:
            try:
                load_pair(self._context, KeyPair(cert_pem=cert, key_pem=key))
            except ssl.SSLError:
                raise CertificateSourceError(
                    f"{self._dir}/{TLS_CRT} and {TLS_KEY} are not a matching certificate and key "
                    "(perhaps caught mid-update; retrying)"
                ) from None
            self._loaded = cert
            log.info("serving certificate loaded from %s", self._dir)

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
                await asyncio.sleep(self._interval)
            except CertificateSourceError as exc:
                log.warning("%s", exc)
                await asyncio.sleep(RETRY_SECONDS)
