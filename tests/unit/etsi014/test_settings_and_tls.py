"""The 014 API's settings (defaults, environment, refusals) and its TLS context."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest

from controllers import pki
from controllers.etsi014 import (
    Etsi014Settings,
    Etsi014SettingsError,
    init,
    serve,
    server_ssl_context,
)
from tests.etsi014_client import Etsi014Client
from tests.unit.etsi014.conftest import NODE_ID, FingerprintAuthenticator, InMemoryDelivery
from tests.unit.identities import node_identity


def test_defaults_and_environment() -> None:
    assert Etsi014Settings.from_env({}) == Etsi014Settings()
    assert Etsi014Settings().get_keys_timeout == 5.0
    settings = Etsi014Settings.from_env(
        {
            "QSS_ETSI014_HOST": "127.0.0.1",
            "QSS_ETSI014_PORT": "10443",
            "QSS_ETSI014_GET_KEYS_TIMEOUT": "2.5",
            "QSS_ETSI014_SHUTDOWN_TIMEOUT": "1",
            "QSS_NODE_ID": "node-a",
        }
    )
    assert settings == Etsi014Settings(
        host="127.0.0.1", port=10443, get_keys_timeout=2.5, shutdown_timeout=1.0
    )


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"QSS_ETSI014_PORT": "https"}, "QSS_ETSI014_PORT='https' is not a number"),
        ({"QSS_ETSI014_PORT": "70000"}, "not a TCP port"),
        ({"QSS_ETSI014_GET_KEYS_TIMEOUT": "0"}, "get_keys_timeout must be a positive"),
        ({"QSS_ETSI014_GET_KEYS_TIMEOUT": "nan"}, "get_keys_timeout must be a positive"),
        ({"QSS_ETSI014_SHUTDOWN_TIMEOUT": "-1"}, "shutdown_timeout must be a positive"),
    ],
)
def test_settings_that_cannot_work_are_refused(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(Etsi014SettingsError, match=fragment.replace("(", r"\(")):
        Etsi014Settings.from_env(environ)


def test_the_tls_context_asks_for_a_client_certificate_without_requiring_one(
    node_ca: pki.Credentials,
) -> None:
    context = server_ssl_context(
        node_identity(node_ca, NODE_ID), extra_client_ca_pems=[pki.create_ca("extra").cert_pem]
    )
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert {c["subject"][0][0][1] for c in context.get_ca_certs()} == {"node-a CA", "extra"}


async def test_serve_runs_until_cancelled(node_ca: pki.Credentials) -> None:
    identity = node_identity(node_ca, NODE_ID)
    delivery, authenticator = InMemoryDelivery(), FingerprintAuthenticator()
    delivery.link("sae-a", "sae-b")
    sae = pki.issue_sae_certificate(node_ca, "sae-a")
    authenticator.register("sae-a", sae)
    # A fixed free port, since serve() does not report the one it bound.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    settings = Etsi014Settings(host="127.0.0.1", port=port)
    task = asyncio.create_task(
        serve(
            init(delivery=delivery, authenticator=authenticator, settings=settings),
            identity=identity,
            settings=settings,
        )
    )
    try:
        async with Etsi014Client(
            f"https://127.0.0.1:{port}",
            ca_pem=node_ca.cert_pem,
            cert_pem=sae.cert_pem,
            key_pem=sae.key_pem,
        ) as client:
            for _ in range(50):
                try:
                    status = await client.status("sae-b")
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail("serve() did not start listening")
            assert status["master_SAE_ID"] == "sae-a"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
