"""ControllerSettings: loaded once from the environment, validated with clear messages."""

import dataclasses

import pytest

from controllers.settings import ControllerSettings, SettingsError


def test_settings_come_from_qss_variables_and_cli_overrides_win() -> None:
    env = {"QSS_NODE_ID": "node-a", "QSS_REDIS_URL": "redis://r:6379/1", "HOME": "/root"}
    settings = ControllerSettings.from_env(env, namespace="qss")
    assert settings.node_id == "node-a"
    assert settings.redis_url == "redis://r:6379/1"
    assert settings.namespace == "qss"


def test_settings_are_frozen() -> None:
    settings = ControllerSettings(node_id="node-a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.node_id = "node-b"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["Node_A", "", "-a", "a" * 64])
def test_node_id_that_is_not_a_dns_label_is_refused_with_its_value(bad: str) -> None:
    with pytest.raises(SettingsError, match="is not a DNS label"):
        ControllerSettings(node_id=bad)


def test_missing_node_id_says_how_to_set_it() -> None:
    with pytest.raises(SettingsError, match="set QSS_NODE_ID or pass --node-id"):
        ControllerSettings.from_env({})


def test_watch_client_timeout_must_exceed_server_timeout() -> None:
    with pytest.raises(SettingsError, match="client timeout must exceed"):
        ControllerSettings(node_id="a", watch_server_timeout=60, watch_client_timeout=60)


def test_the_qkdm_pod_template_is_off_unless_named() -> None:
    assert ControllerSettings.from_env({"QSS_NODE_ID": "a"}).qkdm_pod_template is None
    env = {"QSS_NODE_ID": "a", "QSS_QKDM_POD_TEMPLATE": "kube-qss-qkdm"}
    assert ControllerSettings.from_env(env).qkdm_pod_template == "kube-qss-qkdm"


def test_a_qkdm_pod_template_that_is_no_object_name_is_refused_with_its_value() -> None:
    with pytest.raises(SettingsError, match="'Bad_Name' is not an object name"):
        ControllerSettings(node_id="a", qkdm_pod_template="Bad_Name")
