"""The pure parts of reconciling a Sae: decoding the object and building its status."""

from __future__ import annotations

from typing import Any

import pytest

from controllers import pki
from controllers.saes.reconcile import (
    InvalidSpec,
    Outcome,
    SaeObject,
    invalid_spec_status,
    sae_status,
)


def _body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "apps",
            "name": "alice",
            "uid": "uid-1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "generation": 3,
        },
        "spec": {"saeID": "sae-alice", **spec},
    }


def test_automatic_sae_keeps_credentials_in_name_credentials() -> None:
    sae = SaeObject.from_body(_body())
    assert sae.registration == "Automatic"
    assert sae.secret_name == "alice-credentials"
    assert sae.where == "apps/alice-credentials"
    assert (sae.uid, sae.created, sae.generation) == ("uid-1", "2026-01-01T00:00:00Z", 3)


def test_manual_sae_uses_the_named_secret() -> None:
    sae = SaeObject.from_body(_body(registration="Manual", credentialsSecretName="mine"))
    assert sae.secret_name == "mine"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**_body(), "spec": {}}, "spec.saeID"),
        (_body(saeID="x" * 65), "spec.saeID"),
        (_body(registration="Manual"), "needs spec.credentialsSecretName"),
        (_body(registration="Sometimes"), "Automatic or Manual"),
        ({**_body(), "metadata": {"name": "n" * 250}}, "name is too long"),
    ],
)
def test_unworkable_specs_are_invalid(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        SaeObject.from_body(body)


def test_ready_status_shows_the_certificate_but_never_the_key(node_ca: pki.Credentials) -> None:
    issued = pki.issue_sae_certificate(node_ca, "sae-alice")
    sae = SaeObject.from_body(_body())
    outcome = Outcome(ready=True, reason="Registered", message="ok", certificate=issued.certificate)
    status = sae_status(sae, outcome, node_id="node-a", conditions=None)
    cert = issued.certificate
    assert status["nodeID"] == "node-a"
    assert status["observedGeneration"] == 3
    assert status["credentialsSecretName"] == "alice-credentials"
    assert status["certificateSerial"] == f"{cert.serial_number:x}"
    assert status["certificateNotAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Registered")
    assert ready["observedGeneration"] == 3
    assert "PRIVATE KEY" not in repr(status)


def test_not_ready_status_has_no_certificate_fields() -> None:
    sae = SaeObject.from_body(_body())
    outcome = Outcome(ready=False, reason="DuplicateSaeID", message="taken")
    status = sae_status(sae, outcome, node_id="node-a", conditions=None)
    assert "certificateSerial" not in status
    assert "certificateNotAfter" not in status
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "DuplicateSaeID",
        "taken",
    )


def test_unchanged_readiness_keeps_its_transition_time() -> None:
    sae = SaeObject.from_body(_body())
    before = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "CredentialsSecretNotFound",
            "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    outcome = Outcome(ready=False, reason="InvalidCredentials", message="m2")
    [ready] = sae_status(sae, outcome, node_id="node-a", conditions=before)["conditions"]
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["reason"] == "InvalidCredentials"


def test_invalid_spec_status_says_why() -> None:
    status = invalid_spec_status(_body(), "bad spec", node_id="node-a")
    assert status["observedGeneration"] == 3
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "bad spec",
    )
