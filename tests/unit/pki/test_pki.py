"""controllers.pki: issuing CAs, node and SAE certificates, and reading identities back."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controllers import pki


@pytest.fixture(scope="module")
def ca() -> pki.Credentials:
    return pki.create_ca("node-a CA")


@pytest.fixture(scope="module")
def other_ca() -> pki.Credentials:
    return pki.create_ca("node-b CA")


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_ca_is_a_p256_self_signed_ca(ca: pki.Credentials) -> None:
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert pki.key_matches(cert, ca.key_pem)


def test_node_certificate_names_the_node_and_its_addresses(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(
        ca, "node-a", dns_names=["qss.node-a.example"], ip_addresses=["127.0.0.1", "::1"]
    )
    cert = node.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    sans = _sans(cert)
    assert sans.get_values_for_type(x509.DNSName) == ["node-a", "qss.node-a.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://qss.dev/node/node-a"
    ]
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.issuer == ca.certificate.subject
    pki.verify_chain(cert, [ca.certificate])


def test_node_id_is_read_back_from_pem_der_and_parsed_certificates(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(ca, "node-a")
    der = node.certificate.public_bytes(serialization.Encoding.DER)
    assert pki.node_id_of(node.cert_pem) == "node-a"
    assert pki.node_id_of(der) == "node-a"
    assert pki.node_id_of(node.certificate) == "node-a"


def test_sae_certificate_carries_the_sae_id_in_a_uri_san(ca: pki.Credentials) -> None:
    sae = pki.issue_sae_certificate(ca, "sae-a")
    cert = sae.certificate
    assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://qss.dev/sae/sae-a"
    ]
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.sae_id_of(cert) == "sae-a"
    assert pki.sae_id_of(cert.public_bytes(serialization.Encoding.DER)) == "sae-a"
    pki.verify_chain(cert, [ca.certificate])


def test_sae_id_with_uri_special_characters_round_trips(ca: pki.Credentials) -> None:
    sae_id = "Alice's app/1 #2?"
    assert pki.sae_id_of(pki.issue_sae_certificate(ca, sae_id).cert_pem) == sae_id


def test_sae_certificate_cannot_act_as_a_node_even_with_a_node_like_id(
    ca: pki.Credentials,
) -> None:
    sae = pki.issue_sae_certificate(ca, "node-b")
    with pytest.raises(pki.NotANodeCertificate, match="needs exactly one URI SAN"):
        pki.node_id_of(sae.cert_pem)


def test_node_certificate_cannot_act_as_an_sae(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(ca, "node-a")
    with pytest.raises(pki.NotAnSaeCertificate, match="not an SAE certificate"):
        pki.sae_id_of(node.cert_pem)


def _hand_made(
    ca: pki.Credentials,
    *,
    cn: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(pki.load_private_key(ca.key_pem), hashes.SHA256())
    )


BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("cn", "usages", "refusal"),
    [
        pytest.param("node-c", BOTH, "CN and a DNS SAN must both be", id="cn-disagrees-with-uri"),
        pytest.param(
            "node-b",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            "serverAuth and clientAuth",
            id="without-server-auth",
        ),
    ],
)
def test_node_certificate_for_node_b_that_is_not_consistent_is_refused(
    ca: pki.Credentials, cn: str, usages: list[x509.ObjectIdentifier], refusal: str
) -> None:
    sans: list[x509.GeneralName] = [
        x509.DNSName("node-b"),
        x509.UniformResourceIdentifier(pki.NODE_URI_PREFIX + "node-b"),
    ]
    cert = _hand_made(ca, cn=cn, sans=sans, usages=usages)
    with pytest.raises(pki.NotANodeCertificate, match=refusal):
        pki.node_id_of(cert)


def test_certificate_naming_both_a_node_and_an_sae_is_neither(ca: pki.Credentials) -> None:
    cert = _hand_made(
        ca,
        cn="node-b",
        sans=[
            x509.DNSName("node-b"),
            x509.UniformResourceIdentifier(pki.NODE_URI_PREFIX + "node-b"),
            x509.UniformResourceIdentifier(pki.SAE_URI_PREFIX + "sae-b"),
        ],
        usages=BOTH,
    )
    with pytest.raises(pki.NotANodeCertificate, match="names an SAE"):
        pki.node_id_of(cert)
    with pytest.raises(pki.NotAnSaeCertificate, match="names a node"):
        pki.sae_id_of(cert)


def test_certificate_of_another_ca_is_untrusted_and_the_message_names_its_issuer(
    ca: pki.Credentials, other_ca: pki.Credentials
) -> None:
    node = pki.issue_node_certificate(other_ca, "node-b")
    with pytest.raises(pki.UntrustedCertificate, match=r"issued by 'CN=node-b CA'.*not a trusted"):
        pki.verify_chain(node.certificate, [ca.certificate])
    pki.verify_chain(node.certificate, [ca.certificate, other_ca.certificate])


def test_expired_certificate_is_untrusted(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(ca, "node-a", validity=dt.timedelta(days=1))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(pki.UntrustedCertificate, match="not valid at validation time"):
        pki.verify_chain(node.certificate, [ca.certificate], at=later)


def test_nothing_is_trusted_without_a_ca(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(ca, "node-a")
    with pytest.raises(pki.UntrustedCertificate, match="no CA is trusted"):
        pki.verify_chain(node.certificate, [])


def test_ca_without_key_usage_as_openssl_makes_them_still_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "user CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    user_ca = pki.Credentials(cert_pem=pki.cert_pem(ca_cert), key_pem=pki.key_pem(key))
    node = pki.issue_node_certificate(user_ca, "node-x")
    pki.verify_chain(node.certificate, [ca_cert])


@pytest.mark.parametrize("bad", ["", "Node-A", "node_a", "-node", "a" * 64, "node.a"])
def test_node_ids_must_be_dns_labels(ca: pki.Credentials, bad: str) -> None:
    with pytest.raises(pki.CertificateError, match="not a DNS label"):
        pki.issue_node_certificate(ca, bad)


@pytest.mark.parametrize("bad", ["", "x" * 65, "tab\there"])
def test_sae_ids_must_fit_a_certificate(ca: pki.Credentials, bad: str) -> None:
    with pytest.raises(pki.CertificateError, match="printable characters"):
        pki.issue_sae_certificate(ca, bad)


def test_private_keys_stay_out_of_repr_and_errors(ca: pki.Credentials) -> None:
    node = pki.issue_node_certificate(ca, "node-a")
    body = node.key_pem.decode().splitlines()[1]
    assert body not in repr(node)
    assert repr(node) == "Credentials(subject='CN=node-a')"
    assert repr(pki.Credentials(b"junk", node.key_pem)) == "Credentials(<not a certificate>)"
    # A damaged key: the error does not quote what it was given.
    damaged = node.key_pem.replace(body.encode(), body[::-1].encode())
    with pytest.raises(pki.CertificateError) as excinfo:
        pki.load_private_key(damaged)
    assert body[::-1] not in str(excinfo.value)
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__


def test_garbage_is_not_a_certificate() -> None:
    with pytest.raises(pki.CertificateError, match="not a PEM or DER"):
        pki.load_certificate(b"not a certificate")
    with pytest.raises(pki.CertificateError, match="not a PEM bundle"):
        pki.load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_fingerprint_is_the_sha256_of_the_der(ca: pki.Credentials) -> None:
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint(ca.cert_pem) == pki.fingerprint(der)
    assert len(pki.fingerprint(der)) == 64
