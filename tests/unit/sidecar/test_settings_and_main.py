"""The sidecar's settings come from the environment the webhook writes, and nothing it cannot
work with gets past start-up; the startup probe passes once keys are written."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from qss_api import sidecar as names
from sidecar.files import INDEX_FILE
from sidecar.settings import SettingsError, SidecarSettings
from sidecar.volume import KeyVolume
from tests.unit.webhooks.helpers import CONFIG
from webhooks.annotations import read_injection
from webhooks.injection import AppUser, SaeRecord, sidecar_container


def webhook_env(role: str = "master") -> dict[str, str]:
    """What the webhook puts in the sidecar's environment, fieldRefs resolved as the kubelet
    would."""
    annotations = {"qss.dev/sae": "alice", "qss.dev/peer-sae": "bob", "qss.dev/role": role}
    container = sidecar_container(
        read_injection(annotations),
        SaeRecord(namespace="team-a", name="alice", sae_id="alice-id", credentials_secret="c"),
        AppUser(uid=1000, gid=None),
        CONFIG,
    )
    fields = {
        "metadata.name": "app",
        "metadata.namespace": "team-a",
        "metadata.uid": str(uuid.uuid4()),
    }
    return {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }


def test_the_webhooks_environment_reads_back_into_the_settings_it_meant() -> None:
    settings = SidecarSettings.from_env(webhook_env())
    assert settings.role == "master"
    assert (settings.sae, settings.sae_id, settings.peer_sae_id) == ("alice", "alice-id", "bob")
    assert (settings.key_size, settings.key_number, settings.refresh_seconds) == (256, 1, 60.0)
    assert settings.max_keys == 10
    assert settings.keys_dir == Path(names.DEFAULT_KEYS_DIR)
    assert settings.credentials_dir == Path(names.CREDENTIALS_DIR)
    assert settings.key_api_url == CONFIG.key_api_url
    assert settings.listen_port == CONFIG.key_api_port
    assert settings.pod_namespace == "team-a"
    assert settings.kubeconfig is None
    slave = SidecarSettings.from_env(webhook_env("slave"))
    assert (slave.key_size, slave.key_number, slave.refresh_seconds) == (None, None, None)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({names.ENV_ROLE: "leader"}, "master or slave"),
        ({names.ENV_SAE_ID: "bad id!"}, "not an SAE ID"),
        ({names.ENV_POD_UID: "x"}, "not a pod UID"),
        ({names.ENV_POD_NAME: ""}, f"{names.ENV_POD_NAME} is not set"),
        ({names.ENV_KEY_SIZE: "12"}, "multiple of 8"),
        ({names.ENV_KEY_SIZE: "abc"}, "not a number"),
        ({names.ENV_KEY_NUMBER: "50"}, names.ENV_MAX_KEYS),
        ({names.ENV_REFRESH_SECONDS: "nan"}, "positive number"),
        ({names.ENV_KEYS_DIR: "keys"}, "absolute path"),
        ({names.ENV_KEY_API_URL: "http://node:9443"}, "https://"),
    ],
)
def test_a_setting_it_cannot_work_with_stops_it_naming_the_variable(
    change: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says):
        SidecarSettings.from_env({**webhook_env(), **change})


def test_the_startup_probe_passes_once_the_first_keys_are_written(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    injection = read_injection(
        {
            "qss.dev/sae": "alice",
            "qss.dev/peer-sae": "bob",
            "qss.dev/role": "slave",
            "qss.dev/mount-path": str(keys_dir),
        }
    )
    sae = SaeRecord(namespace="team-a", name="alice", sae_id="alice-id", credentials_secret="c")
    container = sidecar_container(injection, sae, AppUser(uid=1000, gid=None), CONFIG)
    probe = container["startupProbe"]["exec"]["command"]

    def passes() -> bool:
        return subprocess.run(probe, check=False, timeout=30).returncode == 0

    assert not passes()
    KeyVolume(keys_dir).publish({INDEX_FILE: b"{}"}, {})
    assert passes()


def test_run_with_a_bad_environment_exits_2_with_the_reason() -> None:
    env = {**webhook_env(), names.ENV_ROLE: "leader"}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar.main", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "master or slave" in result.stderr
