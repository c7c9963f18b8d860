"""Certificates reach the listening server without a restart (real TLS handshakes), stored
material is read strictly, cert-manager's files are reloaded when they change, and the webhook's
settings refuse what cannot work."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from webhooks.certificates import (
    CertificateSourceError,
    FileCertificates,
    _data,
    _material,
    load_pair,
    server_context,
)
from webhooks.settings import SettingsError, WebhookSettings
from webhooks.tls import KeyPair, ServingNames, TlsError, TlsMaterial, create_ca, issue_serving

NOW = dt.datetime.now(dt.UTC)
NAMES = ServingNames(ips=("127.0.0.1",))


def pair() -> tuple[KeyPair, KeyPair]:
    ca = create_ca(now=NOW, validity=dt.timedelta(days=1))
    return ca, issue_serving(ca, NAMES, now=NOW, validity=dt.timedelta(hours=1))


def served_serial(port: int) -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
async def server() -> AsyncIterator[tuple[ssl.SSLContext, int]]:
    context = server_context()
    load_pair(context, pair()[1])
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield context, port
    finally:
        await runner.cleanup()


async def test_a_certificate_loaded_into_the_live_context_is_served_from_the_next_handshake(
    server: tuple[ssl.SSLContext, int],
) -> None:
    context, port = server
    first = await asyncio.to_thread(served_serial, port)
    _, renewed = pair()
    load_pair(context, renewed)
    assert (
        await asyncio.to_thread(served_serial, port) == renewed.certificate.serial_number != first
    )


async def test_cert_managers_files_are_loaded_and_reloaded_when_they_change(
    server: tuple[ssl.SSLContext, int], tmp_path: Path
) -> None:
    context, port = server
    source = FileCertificates(tmp_path, context=context, check_interval=1)
    with pytest.raises(CertificateSourceError, match=r"cannot read tls\.crt"):
        await source.reconcile()
    for _ in range(2):
        _, serving = pair()
        (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
        (tmp_path / "tls.key").write_bytes(serving.key_pem)
        await source.reconcile()
        assert await asyncio.to_thread(served_serial, port) == serving.certificate.serial_number
    # Caught mid-update: a certificate with another's key is refused, the old one stays.
    (tmp_path / "tls.key").write_bytes(pair()[1].key_pem)
    (tmp_path / "tls.crt").write_bytes(pair()[1].cert_pem)
    with pytest.raises(CertificateSourceError, match="not a matching"):
        await source.reconcile()
    assert await asyncio.to_thread(served_serial, port) == serving.certificate.serial_number


def test_stored_material_round_trips_and_broken_secrets_are_refused() -> None:
    ca, serving = pair()
    material = TlsMaterial(ca=ca, serving=serving, previous_ca_pem=pair()[0].cert_pem)
    assert _material(_data(material)) == material
    data = _data(material)
    with pytest.raises(TlsError, match=r"lacks ca\.key"):
        _material({k: v for k, v in data.items() if k != "ca.key"})
    with pytest.raises(TlsError, match="not base64"):
        _material({**data, "tls.crt": "***"})
    with pytest.raises(TlsError, match="not PEM"):
        _material({**data, "tls.key": base64.b64encode(b"junk").decode()})


def test_settings_from_the_environment() -> None:
    settings = WebhookSettings.from_env(
        {
            "QSS_WEBHOOK_NAMESPACE": "qss",
            "QSS_WEBHOOK_ADDRESS": "127.0.0.1:8443",
            "QSS_WEBHOOK_IPS": "127.0.0.1",
            "QSS_WEBHOOK_SKIP_NAMESPACES": "infra, ops",
            "QSS_SIDECAR_IMAGE": "registry.example/kube-qss:1",
            "QSS_WEBHOOK_OVERLAP": "30",
            "QSS_WEBHOOK_CHECK_INTERVAL": "5",
        }
    )
    assert (settings.host, settings.port) == ("127.0.0.1", 8443)
    assert settings.serving.dns_names == ("kube-qss-webhook.qss.svc",)
    assert settings.serving.ips == ("127.0.0.1",)
    assert {"kube-system", "qss", "infra", "ops"} <= settings.injector.skip_namespaces
    assert settings.injector.sidecar_image == "registry.example/kube-qss:1"
    assert settings.lifetimes.overlap == dt.timedelta(seconds=30)
    assert WebhookSettings.from_env({}) == WebhookSettings()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"QSS_WEBHOOK_ADDRESS": "9443"}, "host:port"),
        ({"QSS_WEBHOOK_NAMESPACE": "Not_A_Namespace"}, "namespace"),
        ({"QSS_WEBHOOK_CHECK_INTERVAL": "600"}, "shorter than QSS_WEBHOOK_OVERLAP"),
        ({"QSS_WEBHOOK_CHECK_INTERVAL": "soon"}, "not a number"),
        ({"QSS_WEBHOOK_SERVING_RENEW_BEFORE": "99999999"}, "renewed before it expires"),
        ({"QSS_WEBHOOK_IPS": "localhost"}, "not an IP address"),
        ({"QSS_SIDECAR_KEY_API_PORT": "0"}, "TCP port"),
        ({"QSS_SIDECAR_METRICS_PORT": "many"}, "QSS_SIDECAR_METRICS_PORT 'many' is not a port"),
        ({"QSS_SIDECAR_METRICS_PORT": "70000"}, "QSS_SIDECAR_METRICS_PORT must be a TCP port"),
        ({"QSS_SIDECAR_METRICS_PORT": "8014"}, "must differ from QSS_SIDECAR_KEY_API_PORT"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        WebhookSettings.from_env(env)
