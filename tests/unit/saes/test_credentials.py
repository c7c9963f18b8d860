"""Deciding about SAE credentials: when an issued Secret is re-used or replaced, and what a
user's Manual Secret must hold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from controllers import pki
from controllers.saes.credentials import (
    CA_CRT,
    RENEW_BEFORE,
    TLS_CRT,
    TLS_KEY,
    CredentialsProblem,
    issued_data,
    manual_certificate,
    renewal_reason,
)


def _now() -> dt.datetime:
    """Now, at the time of the check (not at import: a long test session would make fresh
    certificates look not yet valid)."""
    return dt.datetime.now(dt.UTC)


Spoil = Callable[[dict[str, bytes], pki.Credentials], dict[str, bytes]]


def _issued(ca: pki.Credentials, sae_id: str = "sae-a", **kwargs: dt.timedelta) -> dict[str, bytes]:
    return issued_data(pki.issue_sae_certificate(ca, sae_id, **kwargs), ca.cert_pem)


def test_issued_secret_data_has_the_tls_entries(node_ca: pki.Credentials) -> None:
    data = _issued(node_ca)
    assert set(data) == {TLS_CRT, TLS_KEY, CA_CRT}
    assert pki.sae_id_of(data[TLS_CRT]) == "sae-a"
    assert pki.key_matches(data[TLS_CRT], data[TLS_KEY])
    assert data[CA_CRT] == node_ca.cert_pem


def test_valid_issued_credentials_are_reused(node_ca: pki.Credentials) -> None:
    data = _issued(node_ca)
    assert renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=_now()) is None


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda d, ca: {k: v for k, v in d.items() if k != TLS_KEY}, "lacks tls.crt or tls.key"),
        (lambda d, ca: {**d, CA_CRT: b""}, "ca.crt is not this node's CA"),
        (lambda d, ca: {**d, TLS_CRT: b"garbage"}, "not a valid SAE certificate"),
        (
            lambda d, ca: {**d, TLS_KEY: pki.issue_sae_certificate(ca, "sae-a").key_pem},
            "tls.key does not belong",
        ),
    ],
)
def test_spoilt_issued_credentials_are_replaced(
    node_ca: pki.Credentials, spoil: Spoil, why: str
) -> None:
    data = spoil(_issued(node_ca), node_ca)
    reason = renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=_now())
    assert reason is not None
    assert why in reason


def test_credentials_of_another_sae_id_are_replaced(node_ca: pki.Credentials) -> None:
    data = _issued(node_ca, "sae-b")
    reason = renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=_now())
    assert reason == "its certificate is for another SAE ID"


def test_credentials_from_another_ca_are_replaced(node_ca: pki.Credentials) -> None:
    other = pki.create_ca("old node CA")
    data = {**_issued(other), CA_CRT: node_ca.cert_pem}
    reason = renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=_now())
    assert reason is not None
    assert "not a valid SAE certificate from this node's CA" in reason


def test_credentials_are_renewed_a_month_before_expiry(node_ca: pki.Credentials) -> None:
    data = _issued(node_ca, validity=RENEW_BEFORE + dt.timedelta(days=5))
    assert renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=_now()) is None
    later = _now() + dt.timedelta(days=6)
    reason = renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=later)
    assert reason == "its certificate expires within 30 days"


def test_expired_credentials_are_replaced(node_ca: pki.Credentials) -> None:
    data = _issued(node_ca)
    later = _now() + pki.SAE_VALIDITY + dt.timedelta(days=1)
    assert renewal_reason(data, sae_id="sae-a", ca_pem=node_ca.cert_pem, now=later) is not None


def test_manual_certificate_is_checked_against_its_own_ca() -> None:
    team_ca = pki.create_ca("team CA")
    issued = pki.issue_sae_certificate(team_ca, "sae-m")
    data = {TLS_CRT: issued.cert_pem, CA_CRT: team_ca.cert_pem}  # tls.key is not needed
    checked = manual_certificate(data, sae_id="sae-m", where="apps/creds", now=_now())
    assert checked.certificate.serial_number == issued.certificate.serial_number
    assert checked.ca_pem == team_ca.cert_pem


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({CA_CRT: "ca"}, "no tls.crt"),
        ({TLS_CRT: "cert"}, "no ca.crt"),
        ({TLS_CRT: b"junk", CA_CRT: "ca"}, "tls.crt is not an SAE client certificate"),
        ({TLS_CRT: "other", CA_CRT: "ca"}, "is the certificate of SAE 'sae-x', not of 'sae-m'"),
        ({TLS_CRT: "cert", CA_CRT: b"junk"}, "ca.crt: not a PEM bundle"),
        ({TLS_CRT: "cert", CA_CRT: "stranger"}, "tls.crt does not verify with ca.crt"),
        ({TLS_CRT: "node", CA_CRT: "ca"}, "tls.crt is not an SAE client certificate"),
    ],
)
def test_manual_secret_problems_say_what_is_wrong(
    entries: dict[str, bytes | str], message: str
) -> None:
    team_ca, stranger = pki.create_ca("team CA"), pki.create_ca("stranger CA")
    named = {
        "ca": team_ca.cert_pem,
        "stranger": stranger.cert_pem,
        "cert": pki.issue_sae_certificate(team_ca, "sae-m").cert_pem,
        "other": pki.issue_sae_certificate(team_ca, "sae-x").cert_pem,
        "node": pki.issue_node_certificate(team_ca, "node-a").cert_pem,
    }
    data = {k: named[v] if isinstance(v, str) else v for k, v in entries.items()}
    with pytest.raises(CredentialsProblem) as problem:
        manual_certificate(data, sae_id="sae-m", where="apps/creds", now=_now())
    assert problem.value.reason == "InvalidCredentials"
    assert problem.value.message.startswith("Secret apps/creds: ")
    assert message in problem.value.message


def test_expired_manual_certificate_is_invalid() -> None:
    team_ca = pki.create_ca("team CA")
    issued = pki.issue_sae_certificate(team_ca, "sae-m")
    data = {TLS_CRT: issued.cert_pem, CA_CRT: team_ca.cert_pem}
    later = _now() + pki.SAE_VALIDITY + dt.timedelta(days=1)
    with pytest.raises(CredentialsProblem, match="does not verify"):
        manual_certificate(data, sae_id="sae-m", where="apps/creds", now=later)


def test_manual_chain_with_an_intermediate_verifies() -> None:
    # tls.crt may carry the SAE certificate followed by its chain.
    team_ca = pki.create_ca("team CA")
    issued = pki.issue_sae_certificate(team_ca, "sae-m")
    data = {TLS_CRT: issued.cert_pem + team_ca.cert_pem, CA_CRT: team_ca.cert_pem}
    checked = manual_certificate(data, sae_id="sae-m", where="apps/creds", now=_now())
    assert pki.sae_id_of(checked.certificate) == "sae-m"
