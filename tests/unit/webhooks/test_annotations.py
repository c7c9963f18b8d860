"""Each annotation's parser accepts what it documents and refuses the rest with a message that
says what to write; ``read_injection`` applies the defaults in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from webhooks import annotations as a


@pytest.mark.parametrize(
    ("parse", "value", "expected"),
    [
        (a.parse_sae, "alice", "alice"),
        (a.parse_sae, "app.team-1", "app.team-1"),
        (a.parse_peer_sae, "Bob_2.x-y", "Bob_2.x-y"),
        (a.parse_role, "master", "master"),
        (a.parse_role, "slave", "slave"),
        (a.parse_key_size, "8", 8),
        (a.parse_key_size, "32768", 32768),
        (a.parse_key_number, "1000", 1000),
        (a.parse_refresh_interval, "90", 90),
        (a.parse_refresh_interval, "90s", 90),
        (a.parse_refresh_interval, "5m", 300),
        (a.parse_refresh_interval, "1h30m5s", 5405),
        (a.parse_refresh_interval, "24h", 86400),
        (a.parse_max_keys, "2000", 2000),
        (a.parse_mount_path, "/keys", "/keys"),
        (a.parse_mount_path, "/var/run/qss/keys", "/var/run/qss/keys"),
        (a.parse_inject_status, "injected", "injected"),
    ],
)
def test_parser_accepts(parse: Callable[[str], Any], value: str, expected: Any) -> None:
    assert parse(value) == expected


@pytest.mark.parametrize(
    ("parse", "value", "says"),
    [
        (a.parse_sae, "", "not a Sae name"),
        (a.parse_sae, "Alice", "not a Sae name"),
        (a.parse_sae, "ns/alice", "another namespace"),
        (a.parse_sae, "a" * 254, "at most 253"),
        (a.parse_peer_sae, "", "not an SAE ID"),
        (a.parse_peer_sae, "-bob", "not an SAE ID"),
        (a.parse_peer_sae, "b" * 65, "at most 64"),
        (a.parse_role, "Master", "master or slave"),
        (a.parse_role, "", "master or slave"),
        (a.parse_key_size, "0", "from 8 to 32768"),
        (a.parse_key_size, "-8", "whole number"),
        (a.parse_key_size, "12", "not a multiple of 8"),
        (a.parse_key_size, "2.5e2", "whole number"),
        (a.parse_key_size, " 256", "whole number"),
        (a.parse_key_size, "9" * 50, "whole number"),
        (a.parse_key_number, "1001", "from 1 to 1000"),
        (a.parse_refresh_interval, "", "whole seconds"),
        (a.parse_refresh_interval, "0", "from 1s"),
        (a.parse_refresh_interval, "25h", "to 24h"),
        (a.parse_refresh_interval, "1d", "whole seconds"),
        (a.parse_refresh_interval, "500ms", "whole seconds"),
        (a.parse_refresh_interval, "5m1h", "whole seconds"),
        (a.parse_max_keys, "0", "from 1 to 2000"),
        (a.parse_mount_path, "/", "absolute path"),
        (a.parse_mount_path, "/keys/", "absolute path"),
        (a.parse_mount_path, "//keys", "absolute path"),
        (a.parse_mount_path, "/a:b", "absolute path"),
        (a.parse_mount_path, "/proc/keys", "overlaps /proc"),
        (a.parse_mount_path, "/var/run", "overlaps /var/run/secrets"),
        (a.parse_mount_path, "/var/run/qss/credentials", "overlaps /var/run/qss/credentials"),
        (a.parse_inject_status, "yes", "the webhook writes it"),
    ],
)
def test_parser_refuses_and_says_what_to_write(
    parse: Callable[[str], Any], value: str, says: str
) -> None:
    with pytest.raises(ValueError, match=r"qss\.dev/") as info:
        parse(value)
    assert says in str(info.value)


def test_long_values_are_quoted_shortened() -> None:
    with pytest.raises(ValueError, match="master or slave") as info:
        a.parse_role("x" * 1000)
    assert len(str(info.value)) < 200


def test_defaults_are_applied_in_one_place() -> None:
    got = a.read_injection(
        {"qss.dev/sae": "alice", "qss.dev/peer-sae": "bob", "qss.dev/role": "master"}
    )
    assert got == a.Injection(
        sae="alice",
        peer_sae_id="bob",
        role="master",
        key_size=a.DEFAULT_KEY_SIZE,
        key_number=a.DEFAULT_KEY_NUMBER,
        refresh_seconds=a.DEFAULT_REFRESH_SECONDS,
        max_keys=a.DEFAULT_MIN_MAX_KEYS,
        mount_path=a.DEFAULT_MOUNT_PATH,
    )
    slave = a.read_injection(
        {"qss.dev/sae": "bob", "qss.dev/peer-sae": "alice", "qss.dev/role": "slave"}
    )
    assert (slave.key_size, slave.key_number, slave.refresh_seconds) == (None, None, None)
    assert slave.max_keys == a.DEFAULT_MIN_MAX_KEYS


def test_annotations_of_other_tools_are_not_ours_to_judge() -> None:
    got = a.read_injection(
        {
            "qss.dev/sae": "alice",
            "qss.dev/peer-sae": "bob",
            "qss.dev/role": "slave",
            "example.com/qss.dev-ish": "anything",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        }
    )
    assert got.role == "slave"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [({}, False), ({"qss.dev/inject": "false"}, False), ({"qss.dev/inject": "true"}, True)],
)
def test_inject_label(labels: dict[str, str], expected: bool) -> None:
    assert a.inject_label_value(labels) is expected


@pytest.mark.parametrize("value", ["True", "yes", "1", ""])
def test_inject_label_typos_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match='write "true"'):
        a.inject_label_value({"qss.dev/inject": value})
