"""This QSS node's identity: its CA and node certificate, kept in two Secrets of its namespace.

``controllers.main`` calls ``ensure_node_identity`` once at start-up. On a node's first start it
creates Secret ``qss-node-ca`` (``ca.crt``, ``ca.key``) and Secret ``qss-node-tls`` (type
kubernetes.io/tls: ``tls.crt``, ``tls.key``, ``ca.crt``); a user who supplies either Secret gets
it used as it is, after checking that it fits (the certificate chains to the node CA, names this
node, and matches its key). Two replicas starting together agree: each create that loses with
409 Conflict reads the winner's Secret back instead.

The returned ``NodeIdentity`` builds the TLS contexts of the inter-node channel
(``controllers.channel``) and of the ETSI 014 server, and hands the CA to the Sae reconciler to
issue SAE credentials. ``peer_ca_reader`` reads the ``ca.crt`` of the Secrets that QKDLinks name
as their peer's CA.

It talks to CoreV1Api itself (Secrets are created with ``controllers.kube``'s one
``create_secret_or_read``). No message or log line here carries a key; API errors are reduced to
their status and reason.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from controllers import pki
from controllers.kube import SecretVanished, create_secret_or_read
from qss_api import LABEL_NAME, LABEL_PART_OF, PART_OF

CA_SECRET: Final = "qss-node-ca"
TLS_SECRET: Final = "qss-node-tls"
CA_CRT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
TLS_CRT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"

_LABELS: Final = {LABEL_NAME: "kube-qss", LABEL_PART_OF: PART_OF}

log = logging.getLogger(__name__)


class IdentityError(RuntimeError):
    """The node's identity Secrets are unusable or unreachable; the message says how to fix it."""


@dataclass(frozen=True)
class NodeIdentity:
    """Who this node is on the channel: its ID, CA, certificate and key (PEM)."""

    node_id: str
    # The CA that signs this node's certificate: peers put it in their peerCASecret.
    ca_cert_pem: bytes
    # The node certificate, possibly followed by intermediates.
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    # The CA's key, when this node has it (not when the user supplied only qss-node-tls).
    ca_key_pem: bytes | None = field(default=None, repr=False)

    @property
    def credentials(self) -> pki.Credentials:
        return pki.Credentials(cert_pem=self.cert_pem, key_pem=self.key_pem)

    @property
    def ca(self) -> pki.Credentials | None:
        """The node CA with its key, to issue SAE certificates; None if the key is not here."""
        if self.ca_key_pem is None:
            return None
        return pki.Credentials(cert_pem=self.ca_cert_pem, key_pem=self.ca_key_pem)

    def server_ssl_context(self, *, client_ca_pems: Iterable[bytes] = ()) -> ssl.SSLContext:
        """A server context presenting the node certificate and requiring a client certificate
        that chains to one of ``client_ca_pems`` (more can be added later with
        ``context.load_verify_locations(cadata=...)``, which takes effect for new handshakes)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        for pem in client_ca_pems:
            context.load_verify_locations(cadata=pem.decode("ascii"))
        pki.load_cert_chain_pem(context, self.cert_pem, self.key_pem)
        return context

    def client_ssl_context(self, *, server_ca_pem: bytes) -> ssl.SSLContext:
        """A client context presenting the node certificate and trusting only ``server_ca_pem``;
        the hostname check stays on (callers pass the peer's node ID as server_hostname)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=server_ca_pem.decode("ascii"))
        pki.load_cert_chain_pem(context, self.cert_pem, self.key_pem)
        return context


# --- Secrets -------------------------------------------------------------------------------


def _api_error(action: str, namespace: str, name: str, exc: ApiException) -> IdentityError:
    hint = {
        403: "; the controller's ServiceAccount needs get and create on secrets there",
        404: f"; create namespace {namespace} first",
    }.get(exc.status, "")
    return IdentityError(
        f"cannot {action} Secret {namespace}/{name}: {exc.status} {exc.reason}{hint}"
    )


async def _read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes] | None:
    """The decoded data of a Secret, or None if it does not exist."""
    try:
        secret = await core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _api_error("read", namespace, name, exc) from None
    data: Mapping[str, str] = secret.data or {}
    return {k: base64.b64decode(v) for k, v in data.items()}


async def _create(
    core: client.CoreV1Api, namespace: str, name: str, data: Mapping[str, bytes], type_: str
) -> dict[str, bytes]:
    """Create a Secret; if another writer created it first, return theirs instead."""
    body = client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=dict(_LABELS)),
        type=type_,
        data={k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
    )
    try:
        secret, created = await create_secret_or_read(core, namespace, body)
    except ApiException as exc:
        raise _api_error("create", namespace, name, exc) from None
    except SecretVanished:
        raise IdentityError(
            f"Secret {namespace}/{name} was created and deleted again while this node was "
            "starting; restart the controller"
        ) from None
    if created:
        log.info("created Secret %s/%s", namespace, name)
        return dict(data)
    log.info("Secret %s/%s was created by another writer first; using it", namespace, name)
    theirs: Mapping[str, str] = secret.data or {}
    return {k: base64.b64decode(v) for k, v in theirs.items()}


def _require(data: Mapping[str, bytes], key: str, where: str, hint: str) -> bytes:
    value = data.get(key)
    if not value:
        raise IdentityError(f"Secret {where} has no {key}; {hint}")
    return value


def _check_ca(data: Mapping[str, bytes], where: str) -> tuple[bytes, bytes | None]:
    """The CA certificate and key (if present) of a qss-node-ca Secret, checked."""
    cert = _require(data, CA_CRT, where, "add the CA certificate (PEM) or delete the Secret")
    try:
        parsed = pki.load_certificate(cert)
        is_ca = parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (pki.CertificateError, x509.ExtensionNotFound):
        is_ca = False
    if not is_ca:
        raise IdentityError(
            f"Secret {where} {CA_CRT} is not a CA certificate (PEM with basicConstraints CA:TRUE)"
        )
    key = data.get(CA_KEY) or None
    if key is not None:
        try:
            matches = pki.key_matches(parsed, key)
        except pki.CertificateError as exc:
            raise IdentityError(f"Secret {where} {CA_KEY} is unusable: {exc}") from None
        if not matches:
            raise IdentityError(f"Secret {where} {CA_KEY} is not the key of its {CA_CRT}")
    return cert, key


def _check_node_cert(
    *, node_id: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes, where: str
) -> None:
    """Raise unless the node certificate chains to the CA, names ``node_id`` and fits its key."""
    try:
        chain = pki.load_certificates(cert_pem)
        leaf, intermediates = chain[0], chain[1:]
        named = pki.node_id_of(leaf)
    except pki.CertificateError as exc:
        raise IdentityError(
            f"Secret {where} {TLS_CRT} is not a node certificate: {exc}; issue one for node "
            f"{node_id} (CN, DNS SAN and URI SAN {pki.NODE_URI_PREFIX}{node_id}) or delete the "
            "Secret to have one generated"
        ) from None
    if named != node_id:
        raise IdentityError(
            f"Secret {where} holds a certificate for node {named!r}, but this node is "
            f"{node_id!r}; issue one for {node_id} or delete the Secret to have one generated"
        )
    try:
        pki.verify_chain(leaf, pki.load_certificates(ca_pem), intermediates=intermediates)
    except pki.CertificateError as exc:
        raise IdentityError(
            f"Secret {where} {TLS_CRT} does not chain to the node CA: {exc}"
        ) from None
    try:
        matches = pki.key_matches(leaf, key_pem)
    except pki.CertificateError as exc:
        raise IdentityError(f"Secret {where} {TLS_KEY} is unusable: {exc}") from None
    if not matches:
        raise IdentityError(f"Secret {where} {TLS_KEY} is not the key of its {TLS_CRT}")


def _node_ca(
    ca_data: Mapping[str, bytes] | None,
    tls_data: Mapping[str, bytes] | None,
    *,
    ca_where: str,
    tls_where: str,
) -> tuple[bytes, bytes | None]:
    """The node CA (certificate, key if here): qss-node-ca's, else qss-node-tls's ca.crt."""
    if ca_data is not None:
        return _check_ca(ca_data, ca_where)
    if tls_data is None:
        raise IdentityError(f"neither Secret {ca_where} nor {tls_where} exists")
    hint = f"add the CA that signed {TLS_CRT}, or create Secret {ca_where} with it"
    return _require(tls_data, CA_CRT, tls_where, hint), None


def _ca_name(node_id: str) -> str:
    return f"kube-qss node CA {node_id}"[:64]


async def ensure_node_identity(
    api: client.ApiClient,
    *,
    namespace: str,
    node_id: str,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
) -> NodeIdentity:
    """This node's identity from Secrets ``qss-node-ca`` and ``qss-node-tls`` in ``namespace``,
    creating what is missing. Raises ``IdentityError`` with what to fix.

    The node CA is qss-node-ca's ``ca.crt`` if that Secret exists, else qss-node-tls's ``ca.crt``
    (a user may supply a node certificate without handing over a CA key; the node then cannot
    issue SAE credentials itself). ``dns_names``/``ip_addresses`` only go into a certificate
    generated here; a supplied certificate is used as it is.
    """
    try:
        pki.check_node_id(node_id)
    except pki.CertificateError as exc:
        raise IdentityError(str(exc)) from None
    core = client.CoreV1Api(api)
    ca_where, tls_where = f"{namespace}/{CA_SECRET}", f"{namespace}/{TLS_SECRET}"
    ca_data = await _read(core, namespace, CA_SECRET)
    tls_data = await _read(core, namespace, TLS_SECRET)

    if ca_data is None and tls_data is None:
        new_ca = pki.create_ca(_ca_name(node_id))
        ca_data = await _create(
            core, namespace, CA_SECRET, {CA_CRT: new_ca.cert_pem, CA_KEY: new_ca.key_pem}, "Opaque"
        )
    ca_cert, ca_key = _node_ca(ca_data, tls_data, ca_where=ca_where, tls_where=tls_where)

    if tls_data is None:
        if ca_key is None:
            raise IdentityError(
                f"Secret {tls_where} does not exist and Secret {ca_where} has no {CA_KEY} to "
                f"issue it; supply {tls_where} or add the CA key"
            )
        issued = pki.issue_node_certificate(
            pki.Credentials(cert_pem=ca_cert, key_pem=ca_key),
            node_id,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        tls_data = await _create(
            core,
            namespace,
            TLS_SECRET,
            {TLS_CRT: issued.cert_pem, TLS_KEY: issued.key_pem, CA_CRT: ca_cert},
            "kubernetes.io/tls",
        )

    hint = f"add it, or delete the Secret to have one generated for node {node_id}"
    cert = _require(tls_data, TLS_CRT, tls_where, hint)
    key = _require(tls_data, TLS_KEY, tls_where, hint)
    _check_node_cert(node_id=node_id, cert_pem=cert, key_pem=key, ca_pem=ca_cert, where=tls_where)
    return NodeIdentity(
        node_id=node_id, ca_cert_pem=ca_cert, cert_pem=cert, key_pem=key, ca_key_pem=ca_key
    )


def peer_ca_reader(
    api: client.ApiClient, *, namespace: str
) -> Callable[[str], Awaitable[bytes | None]]:
    """A reader of ``ca.crt`` from a Secret in ``namespace`` by name (None if the Secret or the
    entry is missing), for ``PeerRegistry.update_from_links``."""
    core = client.CoreV1Api(api)

    async def read_ca(secret_name: str) -> bytes | None:
        data = await _read(core, namespace, secret_name)
        return None if data is None else (data.get(CA_CRT) or None)

    return read_ca
