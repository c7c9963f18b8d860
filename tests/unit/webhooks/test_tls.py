"""The webhook's certificate rotation as a pure step function: what each step does, and that an
API server holding the bundle of the step before can verify the certificate served at every
step of a whole CA change."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from webhooks.tls import (
    Lifetimes,
    ServingNames,
    TlsError,
    TlsMaterial,
    made_at,
    next_material,
    signed_by,
)

NAMES = ServingNames(dns_names=("kube-qss-webhook.kube-qss-system.svc",), ips=("127.0.0.1",))
LIFE = Lifetimes(
    ca_validity=dt.timedelta(days=100),
    ca_renew_before=dt.timedelta(days=20),
    serving_validity=dt.timedelta(days=10),
    serving_renew_before=dt.timedelta(days=3),
    overlap=dt.timedelta(minutes=5),
)
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def step(
    current: TlsMaterial | None,
    now: dt.datetime,
    *,
    published: bytes | None = None,
    force: bool = False,
) -> TlsMaterial | None:
    return next_material(
        current, names=NAMES, lifetimes=LIFE, now=now, published=published, force=force
    )


def verifies(serving: bytes, bundle: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(serving)
    return any(signed_by(cert, ca) for ca in x509.load_pem_x509_certificates(bundle))


def fresh() -> TlsMaterial:
    material = step(None, T0)
    assert material is not None
    return material


def test_first_material_is_a_ca_and_a_serving_certificate_it_signed_for_our_names() -> None:
    material = fresh()
    serving = material.serving.certificate
    assert signed_by(serving, material.ca.certificate)
    assert material.bundle == material.ca.cert_pem
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["kube-qss-webhook.kube-qss-system.svc"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert serving.not_valid_after_utc == T0 + LIFE.serving_validity
    assert "key_pem" not in repr(material.serving)


def test_nothing_changes_while_nothing_is_due() -> None:
    material = fresh()
    assert step(material, T0 + dt.timedelta(days=6), published=material.bundle) is None


def test_a_due_serving_certificate_is_reissued_by_the_same_ca() -> None:
    material = fresh()
    renewed = step(material, T0 + dt.timedelta(days=7, seconds=1), published=material.bundle)
    assert renewed is not None
    assert renewed.ca == material.ca
    assert renewed.previous_ca_pem is None
    assert renewed.serving != material.serving
    assert signed_by(renewed.serving.certificate, material.ca.certificate)


def test_changed_names_get_a_new_serving_certificate() -> None:
    material = fresh()
    other = ServingNames(dns_names=("webhook.other.svc",))
    renewed = next_material(
        material, names=other, lifetimes=LIFE, now=T0, published=material.bundle
    )
    assert renewed is not None
    assert renewed.ca == material.ca


def test_a_forced_rotation_walks_through_a_ca_change_that_never_breaks_a_handshake() -> None:
    material = fresh()
    published = material.bundle  # what the API server holds
    now = T0 + dt.timedelta(days=1)
    seen_cas = {material.ca.cert_pem}
    steps = 0
    force = True
    while True:
        nxt = step(material, now, published=published, force=force)
        force = False
        if nxt is not None:
            steps += 1
            # The API server may still hold the bundle published before this step.
            assert verifies(nxt.serving.cert_pem, published), f"step {steps} breaks the old bundle"
            assert verifies(nxt.serving.cert_pem, nxt.bundle), f"step {steps} breaks its bundle"
            material = nxt
            seen_cas.add(material.ca.cert_pem)
            published = material.bundle
        if len(seen_cas) == 2 and material.previous_ca_pem is None:
            break
        now += dt.timedelta(minutes=1)
        assert now < T0 + dt.timedelta(days=2), "the CA change never finished"
    assert steps == 3  # new CA beside the old, serving from the new, old CA gone
    assert signed_by(material.serving.certificate, material.ca.certificate)
    assert material.bundle == material.ca.cert_pem


def test_serving_moves_to_a_new_ca_only_once_its_bundle_is_published_and_the_overlap_passed() -> (
    None
):
    material = fresh()
    changing = step(material, T0, published=material.bundle, force=True)
    assert changing is not None
    assert changing.previous_ca_pem == material.ca.cert_pem
    assert changing.serving == material.serving
    late = made_at(changing.ca.certificate) + LIFE.overlap
    assert step(changing, late - dt.timedelta(seconds=1), published=changing.bundle) is None
    assert step(changing, late, published=material.bundle) is None  # not published yet
    assert step(changing, late, published=None) is None
    switched = step(changing, late, published=changing.bundle)
    assert switched is not None
    assert signed_by(switched.serving.certificate, changing.ca.certificate)
    assert switched.previous_ca_pem == material.ca.cert_pem


def test_a_ca_due_for_renewal_starts_a_change_by_itself() -> None:
    material = fresh()
    due = T0 + LIFE.ca_validity - LIFE.ca_renew_before
    # The serving certificate is renewed meanwhile, as it would be.
    now = T0
    while now < due:
        material = step(material, now, published=material.bundle) or material
        now += dt.timedelta(days=1)
    changing = step(material, due, published=material.bundle)
    assert changing is not None
    assert changing.previous_ca_pem == material.ca.cert_pem


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ca_renew_before": dt.timedelta(days=400)},
        {"serving_renew_before": dt.timedelta(0)},
        {"overlap": dt.timedelta(days=40)},
    ],
)
def test_lifetimes_that_cannot_work_are_refused(kwargs: dict[str, dt.timedelta]) -> None:
    with pytest.raises(TlsError):
        Lifetimes(**kwargs)


def test_serving_names_must_name_something_real() -> None:
    with pytest.raises(TlsError):
        ServingNames()
    with pytest.raises(TlsError, match="not an IP address"):
        ServingNames(ips=("localhost",))
