"""LocalSaes: which client certificate authenticates which local SAE, and revocation by
unregistering or superseding."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from controllers import pki
from controllers.saes.registry import DuplicateSaeID, LocalSaes
from tests.unit.saes.helpers import der

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-02T00:00:00Z"


def _register(
    local: LocalSaes,
    ca: pki.Credentials,
    sae_id: str,
    *,
    namespace: str = "team-a",
    name: str | None = None,
    created: str = T0,
) -> pki.Credentials:
    issued = pki.issue_sae_certificate(ca, sae_id)
    local.register(
        sae_id=sae_id,
        namespace=namespace,
        name=name or sae_id,
        created=created,
        certificate=issued.cert_pem,
        ca_pem=ca.cert_pem,
    )
    return issued


def test_registered_certificate_authenticates_as_its_sae(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    issued = _register(local, node_ca, "sae-a")
    assert local.authenticate(der(issued)) == "sae-a"
    assert local.lookup("sae-a") == ("team-a", "sae-a")
    assert "sae-a" in local
    assert local.sae_ids() == ["sae-a"]


def test_unknown_certificate_and_garbage_do_not_authenticate(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    _register(local, node_ca, "sae-a")
    stranger = pki.issue_sae_certificate(node_ca, "sae-a")  # same ID, never registered
    assert local.authenticate(der(stranger)) is None
    assert local.authenticate(b"not a certificate") is None
    assert local.authenticate(b"") is None


def test_unregistered_sae_certificate_is_refused_at_once(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    issued = _register(local, node_ca, "sae-a")
    assert local.unregister(sae_id="sae-a", namespace="team-a", name="sae-a")
    assert local.authenticate(der(issued)) is None
    assert local.lookup("sae-a") is None
    assert not local.unregister(sae_id="sae-a", namespace="team-a", name="sae-a")


def test_reissued_certificate_supersedes_the_old_one(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    old = _register(local, node_ca, "sae-a")
    new = _register(local, node_ca, "sae-a")
    assert local.authenticate(der(new)) == "sae-a"
    assert local.authenticate(der(old)) is None
    assert len(local) == 1


def test_expired_certificate_does_not_authenticate(node_ca: pki.Credentials) -> None:
    later = dt.datetime.now(dt.UTC) + pki.SAE_VALIDITY + dt.timedelta(days=1)
    local = LocalSaes(clock=lambda: later)
    issued = _register(local, node_ca, "sae-a")
    assert local.authenticate(der(issued)) is None


def test_younger_sae_with_the_same_id_is_a_duplicate(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    first = _register(local, node_ca, "shared", namespace="team-a", name="a", created=T0)
    with pytest.raises(DuplicateSaeID) as caught:
        _register(local, node_ca, "shared", namespace="team-b", name="b", created=T1)
    assert caught.value.holder == ("team-a", "a")
    assert "team-a/a" in str(caught.value)
    assert local.authenticate(der(first)) == "shared"
    assert local.lookup("shared") == ("team-a", "a")


def test_check_claim_refuses_a_duplicate_without_registering(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    _register(local, node_ca, "shared", namespace="team-a", name="a", created=T0)
    with pytest.raises(DuplicateSaeID):
        local.check_claim(sae_id="shared", namespace="team-b", name="b", created=T1)
    local.check_claim(sae_id="shared", namespace="team-a", name="a", created=T0)  # the holder
    local.check_claim(sae_id="other", namespace="team-b", name="b", created=T1)


def test_older_sae_takes_its_id_back_whatever_the_order_after_a_restart(
    node_ca: pki.Credentials,
) -> None:
    local = LocalSaes()
    younger = _register(local, node_ca, "shared", namespace="team-b", name="b", created=T1)
    older = _register(local, node_ca, "shared", namespace="team-a", name="a", created=T0)
    assert local.lookup("shared") == ("team-a", "a")
    assert local.authenticate(der(older)) == "shared"
    assert local.authenticate(der(younger)) is None
    # The displaced Sae cannot unregister the new holder.
    assert not local.unregister(sae_id="shared", namespace="team-b", name="b")
    assert local.lookup("shared") == ("team-a", "a")


def test_same_creation_time_is_decided_by_namespace_then_name(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    _register(local, node_ca, "shared", namespace="team-b", name="x", created=T0)
    _register(local, node_ca, "shared", namespace="team-a", name="y", created=T0)
    assert local.lookup("shared") == ("team-a", "y")


def test_duplicate_gets_the_id_once_the_holder_is_unregistered(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    _register(local, node_ca, "shared", namespace="team-a", name="a", created=T0)
    with pytest.raises(DuplicateSaeID):
        _register(local, node_ca, "shared", namespace="team-b", name="b", created=T1)
    local.unregister(sae_id="shared", namespace="team-a", name="a")
    second = _register(local, node_ca, "shared", namespace="team-b", name="b", created=T1)
    assert local.authenticate(der(second)) == "shared"


def test_certificate_of_another_sae_cannot_be_registered(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    other = pki.issue_sae_certificate(node_ca, "sae-b")
    with pytest.raises(pki.NotAnSaeCertificate):
        local.register(
            sae_id="sae-a",
            namespace="team-a",
            name="sae-a",
            created=T0,
            certificate=other.cert_pem,
            ca_pem=node_ca.cert_pem,
        )
    node = pki.issue_node_certificate(node_ca, "node-a")
    with pytest.raises(pki.NotAnSaeCertificate):
        local.register(
            sae_id="node-a",
            namespace="team-a",
            name="n",
            created=T0,
            certificate=node.cert_pem,
            ca_pem=node_ca.cert_pem,
        )
    assert len(local) == 0


def test_listeners_hear_changes_but_not_repeats(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    calls: list[list[str]] = []
    unsubscribe = local.subscribe(lambda: calls.append(local.sae_ids()))
    issued = pki.issue_sae_certificate(node_ca, "sae-a")
    for _ in range(2):
        local.register(
            sae_id="sae-a",
            namespace="team-a",
            name="sae-a",
            created=T0,
            certificate=issued.cert_pem,
            ca_pem=node_ca.cert_pem,
        )
    assert calls == [["sae-a"]]
    local.unregister(sae_id="sae-a", namespace="team-a", name="sae-a")
    assert calls == [["sae-a"], []]
    unsubscribe()
    _register(local, node_ca, "sae-b")
    assert len(calls) == 2


def test_a_failing_listener_does_not_stop_a_revocation(
    node_ca: pki.Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalSaes()
    issued = _register(local, node_ca, "sae-a")

    def broken() -> None:
        raise RuntimeError("listener bug")

    heard: list[bool] = []
    local.subscribe(broken)
    local.subscribe(lambda: heard.append(True))
    with caplog.at_level(logging.ERROR):
        local.unregister(sae_id="sae-a", namespace="team-a", name="sae-a")
    assert local.authenticate(der(issued)) is None
    assert heard == [True]
    assert "listener of the local SAE registry failed" in caplog.text


def test_client_ca_pems_lists_each_issuing_ca_once(node_ca: pki.Credentials) -> None:
    local = LocalSaes()
    other_ca = pki.create_ca("team CA")
    _register(local, node_ca, "sae-a")
    _register(local, node_ca, "sae-b")
    _register(local, other_ca, "sae-c")
    assert local.client_ca_pems() == [node_ca.cert_pem, other_ca.cert_pem]


def test_registration_log_names_the_certificate_never_the_key(
    node_ca: pki.Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalSaes()
    with caplog.at_level(logging.DEBUG, logger="controllers.saes"):
        issued = _register(local, node_ca, "sae-a")
    assert pki.fingerprint(issued.cert_pem) in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    assert issued.key_pem.decode() not in caplog.text
