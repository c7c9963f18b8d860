"""ensure_node_identity against a real kube-apiserver: the node's CA and TLS Secrets are
created once, reused on later starts and by racing replicas, and Secrets a user supplies are
used as they are or refused with a message that says what is wrong."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from kubernetes_asyncio import client

from controllers import pki
from controllers.identity import (
    CA_SECRET,
    TLS_SECRET,
    IdentityError,
    NodeIdentity,
    ensure_node_identity,
    peer_ca_reader,
)
from controllers.kube import connect
from tests.cluster.localcluster import Cluster


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    api_client = await connect(str(cluster.kubeconfig))
    async with api_client:
        yield api_client


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    name = f"identity-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    await core.delete_namespace(name)


async def _secret(api: client.ApiClient, namespace: str, name: str) -> client.V1Secret:
    secret: client.V1Secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return secret


def _data(secret: client.V1Secret) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


async def _put(
    api: client.ApiClient, namespace: str, name: str, data: dict[str, bytes], type_: str
) -> None:
    await client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type=type_,
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        ),
    )


async def _supply(
    api: client.ApiClient,
    namespace: str,
    *,
    ca: pki.Credentials | None,
    node: pki.Credentials,
    tls_ca: pki.Credentials | None = None,
) -> None:
    if ca is not None:
        await _put(
            api, namespace, CA_SECRET, {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}, "Opaque"
        )
    tls = {"tls.crt": node.cert_pem, "tls.key": node.key_pem}
    if tls_ca is not None:
        tls["ca.crt"] = tls_ca.cert_pem
    await _put(api, namespace, TLS_SECRET, tls, "kubernetes.io/tls")


def _assert_no_key_in(message: str, *keys: bytes) -> None:
    for key in keys:
        body = key.decode().splitlines()[1]
        assert body not in message


async def test_first_start_creates_the_ca_and_tls_secrets(
    api: client.ApiClient, namespace: str
) -> None:
    identity = await ensure_node_identity(
        api,
        namespace=namespace,
        node_id="node-a",
        dns_names=["qss.node-a.example"],
        ip_addresses=["127.0.0.1"],
    )
    ca_secret = await _secret(api, namespace, CA_SECRET)
    tls_secret = await _secret(api, namespace, TLS_SECRET)
    assert ca_secret.type == "Opaque"
    assert tls_secret.type == "kubernetes.io/tls"
    assert ca_secret.metadata.labels["app.kubernetes.io/part-of"] == "kube-qss"
    ca_data, tls_data = _data(ca_secret), _data(tls_secret)
    assert set(ca_data) == {"ca.crt", "ca.key"}
    assert set(tls_data) == {"ca.crt", "tls.crt", "tls.key"}
    assert identity.node_id == "node-a"
    assert identity.ca_cert_pem == ca_data["ca.crt"] == tls_data["ca.crt"]
    assert identity.ca_key_pem == ca_data["ca.key"]
    assert identity.cert_pem == tls_data["tls.crt"]
    assert identity.key_pem == tls_data["tls.key"]
    assert pki.node_id_of(identity.cert_pem) == "node-a"
    sans = identity.credentials.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert sans.get_values_for_type(x509.DNSName) == ["node-a", "qss.node-a.example"]
    pki.verify_chain(identity.cert_pem, [pki.load_certificate(identity.ca_cert_pem)])
    assert identity.ca is not None  # the node can issue SAE credentials


async def test_second_start_reuses_the_secrets_unchanged(
    api: client.ApiClient, namespace: str
) -> None:
    first = await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    versions = [
        (await _secret(api, namespace, n)).metadata.resource_version
        for n in (CA_SECRET, TLS_SECRET)
    ]
    second = await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    assert second == first
    assert versions == [
        (await _secret(api, namespace, n)).metadata.resource_version
        for n in (CA_SECRET, TLS_SECRET)
    ]


async def test_replicas_starting_together_agree_on_one_identity(
    cluster: Cluster, api: client.ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each replica has its own API client; all read "absent" and race to create.
    caplog.set_level(logging.INFO, logger="controllers.identity")
    clients = [await connect(str(cluster.kubeconfig)) for _ in range(4)]
    try:
        identities = await asyncio.gather(
            *(ensure_node_identity(c, namespace=namespace, node_id="node-a") for c in clients)
        )
    finally:
        for c in clients:
            await c.close()
    assert all(i == identities[0] for i in identities)
    # The losers of the race got 409 Conflict and read the winner's Secrets back.
    assert any("created by another writer first" in r.getMessage() for r in caplog.records)
    stored = _data(await _secret(api, namespace, TLS_SECRET))
    assert stored["tls.crt"] == identities[0].cert_pem


async def test_user_supplied_ca_and_certificate_are_used_as_they_are(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    node = pki.issue_node_certificate(ca, "node-a", dns_names=["qss.example.org"])
    await _supply(api, namespace, ca=ca, node=node)
    identity = await ensure_node_identity(
        api, namespace=namespace, node_id="node-a", dns_names=["ignored.example"]
    )
    assert identity == NodeIdentity(
        node_id="node-a",
        ca_cert_pem=ca.cert_pem,
        cert_pem=node.cert_pem,
        key_pem=node.key_pem,
        ca_key_pem=ca.key_pem,
    )


async def test_user_supplied_certificate_without_ca_key_is_used_and_no_ca_is_created(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    node = pki.issue_node_certificate(ca, "node-a")
    await _supply(api, namespace, ca=None, node=node, tls_ca=ca)
    identity = await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    assert identity.cert_pem == node.cert_pem
    assert identity.ca_cert_pem == ca.cert_pem
    assert identity.ca is None  # no CA key here, so this node cannot issue SAE credentials
    names = [
        s.metadata.name
        for s in (await client.CoreV1Api(api).list_namespaced_secret(namespace)).items
    ]
    assert CA_SECRET not in names


async def test_user_supplied_ca_alone_is_used_to_issue_the_node_certificate(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    await _put(api, namespace, CA_SECRET, {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}, "Opaque")
    identity = await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    pki.verify_chain(identity.cert_pem, [ca.certificate])
    assert _data(await _secret(api, namespace, TLS_SECRET))["ca.crt"] == ca.cert_pem


async def test_supplied_certificate_for_another_node_is_refused_clearly(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    node = pki.issue_node_certificate(ca, "node-x")
    await _supply(api, namespace, ca=ca, node=node)
    with pytest.raises(IdentityError) as excinfo:
        await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    message = str(excinfo.value)
    assert f"Secret {namespace}/qss-node-tls holds a certificate for node 'node-x'" in message
    assert "this node is 'node-a'" in message
    _assert_no_key_in(message, node.key_pem, ca.key_pem)


async def test_supplied_certificate_of_another_ca_is_refused_clearly(
    api: client.ApiClient, namespace: str
) -> None:
    ca, stranger = pki.create_ca("operator CA"), pki.create_ca("someone else")
    node = pki.issue_node_certificate(stranger, "node-a")
    await _supply(api, namespace, ca=ca, node=node)
    with pytest.raises(IdentityError, match=r"does not chain to the node CA.*'CN=someone else'"):
        await ensure_node_identity(api, namespace=namespace, node_id="node-a")


async def test_supplied_certificate_that_is_not_a_node_certificate_is_refused(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    sae = pki.issue_sae_certificate(ca, "node-a")
    await _supply(api, namespace, ca=ca, node=sae)
    with pytest.raises(IdentityError, match="is not a node certificate"):
        await ensure_node_identity(api, namespace=namespace, node_id="node-a")


async def test_supplied_key_that_does_not_match_the_certificate_is_refused(
    api: client.ApiClient, namespace: str
) -> None:
    ca = pki.create_ca("operator CA")
    node = pki.issue_node_certificate(ca, "node-a")
    other = pki.issue_node_certificate(ca, "node-a")
    mixed = pki.Credentials(cert_pem=node.cert_pem, key_pem=other.key_pem)
    await _supply(api, namespace, ca=ca, node=mixed)
    with pytest.raises(IdentityError, match=r"tls\.key is not the key of its tls\.crt") as excinfo:
        await ensure_node_identity(api, namespace=namespace, node_id="node-a")
    _assert_no_key_in(str(excinfo.value), node.key_pem, other.key_pem)


async def test_tls_secret_without_any_ca_is_refused(api: client.ApiClient, namespace: str) -> None:
    ca = pki.create_ca("operator CA")
    await _supply(api, namespace, ca=None, node=pki.issue_node_certificate(ca, "node-a"))
    with pytest.raises(IdentityError, match=r"qss-node-tls has no ca\.crt"):
        await ensure_node_identity(api, namespace=namespace, node_id="node-a")


async def test_missing_namespace_is_reported_with_what_to_do(api: client.ApiClient) -> None:
    with pytest.raises(IdentityError, match="create namespace no-such-ns-"):
        await ensure_node_identity(
            api, namespace=f"no-such-ns-{uuid.uuid4().hex[:6]}", node_id="node-a"
        )


async def test_peer_ca_reader_reads_ca_crt_or_none(api: client.ApiClient, namespace: str) -> None:
    ca = pki.create_ca("node-b CA")
    await _put(api, namespace, "node-b-ca", {"ca.crt": ca.cert_pem}, "Opaque")
    await _put(api, namespace, "empty", {"other": b"x"}, "Opaque")
    read_ca = peer_ca_reader(api, namespace=namespace)
    assert await read_ca("node-b-ca") == ca.cert_pem
    assert await read_ca("empty") is None
    assert await read_ca("absent") is None
