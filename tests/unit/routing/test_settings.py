"""Routing settings: read once from QSS_ROUTING_* variables, refused with a clear message when
they cannot work."""

from __future__ import annotations

import pytest

from controllers.routing.settings import RoutingSettings, RoutingSettingsError


def test_defaults_and_overrides_from_the_environment() -> None:
    assert RoutingSettings.from_env({}) == RoutingSettings()
    read = RoutingSettings.from_env(
        {"QSS_ROUTING_HELLO_INTERVAL": "0.5", "QSS_ROUTING_LSA_LIFETIME": "120"}
    )
    assert read.hello_interval == 0.5
    assert read.lsa_lifetime == 120


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        (
            {"QSS_ROUTING_HELLO_INTERVAL": "fast"},
            "QSS_ROUTING_HELLO_INTERVAL='fast' is not a number",
        ),
        ({"QSS_ROUTING_HELLO_INTERVAL": "0"}, "hello interval must be positive"),
        ({"QSS_ROUTING_DEAD_INTERVAL": "1"}, "must exceed the hello interval"),
        ({"QSS_ROUTING_LSA_LIFETIME": "5"}, "LSA lifetime must be"),
        ({"QSS_ROUTING_REFRESH_INTERVAL": "400"}, "shorter than the LSA lifetime"),
        ({"QSS_ROUTING_SPF_DELAY": "-1"}, "spf_delay must be >= 0"),
        ({"QSS_ROUTING_SPF_DELAY": "nan"}, "spf_delay must be >= 0"),
        ({"QSS_ROUTING_LSA_LIFETIME": "1.5"}, "is not a number"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(RoutingSettingsError, match=complaint.replace("(", r"\(")):
        RoutingSettings.from_env(env)
