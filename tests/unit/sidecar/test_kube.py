"""How the sidecar finds and authenticates to the API server: in a pod from the kubelet's
environment and its own token volume, outside one from a token kubeconfig; anything else stops it
at start with what to fix. (Its calls are exercised against a real API server by
``tests/integration/test_sidecar_process.py``.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sidecar.kube import Access, KubeApi, KubeConfigError, connect, from_kubeconfig
from sidecar.settings import SidecarSettings
from tests.unit.sidecar.test_settings_and_main import webhook_env


@pytest.mark.parametrize(
    ("host", "port", "server"),
    [
        ("198.18.0.1", "443", "https://198.18.0.1:443"),
        ("fd00::1", "6443", "https://[fd00::1]:6443"),
        ("", "443", None),
        ("198.18.0.1", "", None),
    ],
)
def test_in_a_pod_the_api_server_is_the_kubelets_kubernetes_service_address(
    host: str, port: str, server: str | None
) -> None:
    env = {**webhook_env(), "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    assert SidecarSettings.from_env(env).api_server == server


def _kubeconfig(path: Path, user: dict[str, str], cluster: dict[str, str]) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://198.18.0.1:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(document))
    return path


def test_a_token_kubeconfig_gives_its_server_ca_and_token(tmp_path: Path) -> None:
    config = _kubeconfig(
        tmp_path / "kubeconfig", {"token": "t0ken"}, {"certificate-authority": "ca.crt"}
    )
    access = from_kubeconfig(config)
    assert access.server == "https://198.18.0.1:6443"
    assert access.ca_file == tmp_path / "ca.crt"  # relative to the kubeconfig, as kubectl reads it
    assert access.read_token() == "t0ken"
    pem = "-----BEGIN CERTIFICATE-----\n...\n"
    inline = _kubeconfig(
        tmp_path / "inline",
        {"tokenFile": "token"},
        {"certificate-authority-data": base64.b64encode(pem.encode()).decode()},
    )
    (tmp_path / "token").write_text("rotated\n")
    access = from_kubeconfig(inline)
    assert (access.ca_data, access.read_token()) == (pem, "rotated")


def test_a_kubeconfig_without_a_token_is_refused_saying_so(tmp_path: Path) -> None:
    config = _kubeconfig(
        tmp_path / "kubeconfig", {"client-certificate": "a.crt", "client-key": "a.key"}, {}
    )
    with pytest.raises(KubeConfigError, match="bearer token only"):
        from_kubeconfig(config)
    (tmp_path / "junk").write_text("[")
    with pytest.raises(KubeConfigError, match="unreadable"):
        from_kubeconfig(tmp_path / "junk")


async def test_outside_a_pod_without_a_kubeconfig_it_says_what_to_set() -> None:
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        await connect(None, None)


async def test_without_the_token_volume_it_says_so(tmp_path: Path) -> None:
    missing = Access(
        server="https://198.18.0.1:443",
        ca_file=tmp_path / "ca.crt",
        token_file=tmp_path / "token",
    )
    with pytest.raises(KubeConfigError, match="token volume"):
        KubeApi(missing)
