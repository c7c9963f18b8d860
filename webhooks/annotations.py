"""Every pod label and annotation the webhook reads: a documented constant and one typed parser
each, and ``read_injection``, which applies the defaults in one place.

``webhooks.mutate`` calls ``inject_label_value`` and ``read_injection`` on a pod that opted in.
A parser raises ``ValueError`` whose message says what is wrong with the value and what to write
instead; ``read_injection`` collects every problem of a pod at once (``AnnotationProblems``), so
one denial tells the user all there is to fix. Values are quoted shortened: annotations are user
text, never key material.

The annotations (all under ``qss.dev/``):

============================  ======================================================  =========
annotation                    meaning                                                 default
============================  ======================================================  =========
``qss.dev/sae``               the Sae (object name, pod's namespace) the pod acts as  required
``qss.dev/peer-sae``          SAE ID of the peer the keys are shared with             required
``qss.dev/role``              ``master`` asks for keys, ``slave`` receives them       required
``qss.dev/key-size``          key size in bits, a multiple of 8 (master only)         256
``qss.dev/key-number``        keys fetched at each refresh (master only)              1
``qss.dev/refresh-interval``  how often new keys are fetched, ``90s``, ``5m``, ``1h``  60s
                              (master only)
``qss.dev/max-keys``          keys kept in the volume; the oldest go first            see below
``qss.dev/mount-path``        where app containers find the keys                      see below
``qss.dev/inject-status``     written by the webhook: ``injected``                    -
============================  ======================================================  =========

``max-keys`` defaults to twice ``key-number``, at least 10, so a peer that is one refresh
behind still finds the key it is told to use. ``mount-path`` defaults to ``/var/run/qss/keys``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from qss_api import (
    ANNOTATION_INJECT_STATUS,
    ANNOTATION_KEY_NUMBER,
    ANNOTATION_KEY_SIZE,
    ANNOTATION_MAX_KEYS,
    ANNOTATION_MOUNT_PATH,
    ANNOTATION_PEER_SAE,
    ANNOTATION_PREFIX,
    ANNOTATION_REFRESH,
    ANNOTATION_ROLE,
    ANNOTATION_SAE,
    INJECT_STATUS_INJECTED,
    LABEL_INJECT,
)
from qss_api.sidecar import CREDENTIALS_DIR, DEFAULT_KEYS_DIR, TOKEN_DIR
from qss_api.wire import SAE_ID_PATTERN

Role = Literal["master", "slave"]
ROLES: Final[tuple[Role, ...]] = ("master", "slave")

# --- defaults and bounds, in one place -------------------------------------------------------

DEFAULT_KEY_SIZE: Final = 256
DEFAULT_KEY_NUMBER: Final = 1
DEFAULT_REFRESH_SECONDS: Final = 60
# The bound of kept keys defaults to two refreshes' worth, and never below this.
DEFAULT_MIN_MAX_KEYS: Final = 10
DEFAULT_MOUNT_PATH: Final = DEFAULT_KEYS_DIR

# What one KeyRequest may ask for (the KeyRequest CRD's bounds and its number x size rule).
MIN_KEY_SIZE: Final = 8
MAX_KEY_SIZE: Final = 32768
MAX_KEY_NUMBER: Final = 1000
MAX_BITS_PER_REQUEST: Final = 4194304
# Each refresh is one KeyRequest on the API server: once a second at most; once a day at least,
# so a pod's keys never grow staler than that.
MIN_REFRESH_SECONDS: Final = 1
MAX_REFRESH_SECONDS: Final = 86400
# The volume is memory; 2,000 keys of the largest size take 8 MiB.
MAX_MAX_KEYS: Final = 2000
# Linux's PATH_MAX is larger; a mount path longer than this is a mistake.
MAX_MOUNT_PATH: Final = 255
# Paths the kubelet, the runtime or the sidecar use: key files there would hide or be hidden.
RESERVED_PATHS: Final = ("/proc", "/sys", "/dev", "/var/run/secrets", TOKEN_DIR, CREDENTIALS_DIR)

# The label's values: "true" injects, "false" opts out explicitly.
INJECT_TRUE: Final = "true"
INJECT_FALSE: Final = "false"

KNOWN_ANNOTATIONS: Final = (
    ANNOTATION_SAE,
    ANNOTATION_PEER_SAE,
    ANNOTATION_ROLE,
    ANNOTATION_KEY_SIZE,
    ANNOTATION_KEY_NUMBER,
    ANNOTATION_REFRESH,
    ANNOTATION_MAX_KEYS,
    ANNOTATION_MOUNT_PATH,
    ANNOTATION_INJECT_STATUS,
)
# Only the master decides what is fetched and when; a slave receives what its master got.
MASTER_ONLY: Final = (ANNOTATION_KEY_SIZE, ANNOTATION_KEY_NUMBER, ANNOTATION_REFRESH)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SAE_ID = re.compile(SAE_ID_PATTERN)
_INTEGER = re.compile(r"^[0-9]{1,9}$")
_DURATION = re.compile(r"^(?:(?P<h>[0-9]{1,5})h)?(?:(?P<m>[0-9]{1,5})m)?(?:(?P<s>[0-9]{1,6})s)?$")
_QUOTE: Final = 40


@dataclass(frozen=True, kw_only=True)
class Injection:
    """What a pod asked for, checked, with the defaults applied."""

    sae: str  # the Sae object, in the pod's namespace
    peer_sae_id: str
    role: Role
    key_size: int | None  # None for a slave: it takes what its master got
    key_number: int | None
    refresh_seconds: int | None
    max_keys: int
    mount_path: str


class AnnotationProblems(ValueError):
    """Everything wrong with a pod's kube-qss annotations, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def show(value: str) -> str:
    """A user's value, quoted and shortened, for a message."""
    text = value if len(value) <= _QUOTE else value[: _QUOTE - 3] + "..."
    return repr(text)


# --- the label ---------------------------------------------------------------------------------


def inject_label_value(labels: Mapping[str, str]) -> bool | None:
    """Whether the pod asks for injection: True for "true", False for "false" or no label;
    ``ValueError`` for any other value (a typo must not silently leave a pod without keys)."""
    value = labels.get(LABEL_INJECT)
    if value is None or value == INJECT_FALSE:
        return False
    if value == INJECT_TRUE:
        return True
    raise ValueError(
        f'label {LABEL_INJECT} is {show(value)}; write "true" to get keys, or "false" (or no '
        "label) to opt out"
    )


# --- one parser per annotation -----------------------------------------------------------------


def parse_sae(value: str) -> str:
    """``qss.dev/sae``: the name of a Sae in the pod's own namespace."""
    if "/" in value:
        raise ValueError(
            f"{ANNOTATION_SAE} is {show(value)}, a Sae in another namespace; a pod can only act "
            "as a Sae of its own namespace: create the Sae there and name it without a '/'"
        )
    if not value or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{ANNOTATION_SAE} is {show(value)}, not a Sae name (lower-case letters, digits, "
            "'-' and '.', at most 253 characters)"
        )
    return value


def parse_peer_sae(value: str) -> str:
    """``qss.dev/peer-sae``: the SAE ID (not the object name) of the peer SAE."""
    if not _SAE_ID.match(value):
        raise ValueError(
            f"{ANNOTATION_PEER_SAE} is {show(value)}, not an SAE ID (letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, at most 64 characters)"
        )
    return value


def parse_role(value: str) -> Role:
    """``qss.dev/role``: master or slave."""
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(
        f"{ANNOTATION_ROLE} is {show(value)}; write master or slave (a master asks for keys, "
        "a slave receives the keys its master asked for)"
    )


def _integer(annotation: str, value: str, low: int, high: int, unit: str = "") -> int:
    if not _INTEGER.match(value) or not low <= int(value) <= high:
        raise ValueError(
            f"{annotation} is {show(value)}; write a whole number from {low} to {high}{unit}"
        )
    return int(value)


def parse_key_size(value: str) -> int:
    """``qss.dev/key-size``: bits, a multiple of 8 from 8 to 32768."""
    bits = _integer(ANNOTATION_KEY_SIZE, value, MIN_KEY_SIZE, MAX_KEY_SIZE, " (bits)")
    if bits % 8:
        raise ValueError(
            f"{ANNOTATION_KEY_SIZE} is {bits} bits, not a multiple of 8; keys are whole bytes "
            f"(e.g. {bits // 8 * 8 or 8} or {bits // 8 * 8 + 8})"
        )
    return bits


def parse_key_number(value: str) -> int:
    """``qss.dev/key-number``: keys fetched at each refresh, 1 to 1000."""
    return _integer(ANNOTATION_KEY_NUMBER, value, 1, MAX_KEY_NUMBER)


def parse_refresh_interval(value: str) -> int:
    """``qss.dev/refresh-interval``: whole seconds as ``90s``, ``5m``, ``1h30m`` or ``90``."""
    seconds: int | None = None
    if _INTEGER.match(value):
        seconds = int(value)
    else:
        match = _DURATION.match(value)
        if value and match:
            h, m, s = (int(match[g] or 0) for g in ("h", "m", "s"))
            seconds = h * 3600 + m * 60 + s
    if seconds is None or not MIN_REFRESH_SECONDS <= seconds <= MAX_REFRESH_SECONDS:
        raise ValueError(
            f"{ANNOTATION_REFRESH} is {show(value)}; write whole seconds, minutes or hours such "
            f"as 30s, 5m or 1h, from {MIN_REFRESH_SECONDS}s to {MAX_REFRESH_SECONDS // 3600}h"
        )
    return seconds


def parse_max_keys(value: str) -> int:
    """``qss.dev/max-keys``: how many keys the volume holds at most."""
    return _integer(ANNOTATION_MAX_KEYS, value, 1, MAX_MAX_KEYS)


def parse_mount_path(value: str) -> str:
    """``qss.dev/mount-path``: an absolute, normalised path, not one the system uses."""
    if (
        not value.startswith("/")
        or value == "/"
        or posixpath.normpath(value) != value
        or "//" in value  # normpath keeps a leading "//" (POSIX allows it a meaning)
        or len(value) > MAX_MOUNT_PATH
        or ":" in value
        or not value.isprintable()
    ):
        raise ValueError(
            f"{ANNOTATION_MOUNT_PATH} is {show(value)}; write an absolute path such as "
            f"{DEFAULT_MOUNT_PATH} (no '..', '//', trailing '/' or ':')"
        )
    for reserved in RESERVED_PATHS:
        if (
            value == reserved
            or value.startswith(reserved + "/")
            or reserved.startswith(value + "/")
        ):
            raise ValueError(
                f"{ANNOTATION_MOUNT_PATH} {show(value)} overlaps {reserved}, which the system "
                f"or the sidecar uses; choose another path such as {DEFAULT_MOUNT_PATH}"
            )
    return value


def parse_inject_status(value: str) -> str:
    """``qss.dev/inject-status``: the webhook's own record; only ``injected`` is valid."""
    if value != INJECT_STATUS_INJECTED:
        raise ValueError(
            f"{ANNOTATION_INJECT_STATUS} is {show(value)}; the webhook writes it, remove it"
        )
    return value


# --- all of them, with the defaults ------------------------------------------------------------

T = TypeVar("T")


def read_injection(annotations: Mapping[str, str]) -> Injection:
    """The pod's request, or ``AnnotationProblems`` listing everything wrong with it."""
    problems: list[str] = []

    def read(key: str, parse: Callable[[str], T], *, required: str = "") -> T | None:
        if key not in annotations:
            if required:
                problems.append(f"annotation {key} is missing: {required}")
            return None
        try:
            return parse(annotations[key])
        except ValueError as exc:
            problems.append(str(exc))
            return None

    unknown = sorted(
        k for k in annotations if k.startswith(ANNOTATION_PREFIX) and k not in KNOWN_ANNOTATIONS
    )
    for key in unknown:
        problems.append(
            f"unknown annotation {show(key)}; kube-qss reads {', '.join(KNOWN_ANNOTATIONS)}"
        )
    sae = read(ANNOTATION_SAE, parse_sae, required="name the Sae this pod acts as")
    peer = read(ANNOTATION_PEER_SAE, parse_peer_sae, required="give the SAE ID of the peer SAE")
    role = read(ANNOTATION_ROLE, parse_role, required="write master or slave")
    read(ANNOTATION_INJECT_STATUS, parse_inject_status)
    mount_path = read(ANNOTATION_MOUNT_PATH, parse_mount_path) or DEFAULT_MOUNT_PATH
    max_keys = read(ANNOTATION_MAX_KEYS, parse_max_keys)

    key_size = key_number = refresh = None
    if role == "slave":
        for key in MASTER_ONLY:
            if key in annotations:
                problems.append(
                    f"annotation {key} is for role master only: a slave receives the keys its "
                    "master asked for, when it asked; remove it"
                )
    elif role == "master":
        key_size = read(ANNOTATION_KEY_SIZE, parse_key_size) or DEFAULT_KEY_SIZE
        key_number = read(ANNOTATION_KEY_NUMBER, parse_key_number) or DEFAULT_KEY_NUMBER
        refresh = read(ANNOTATION_REFRESH, parse_refresh_interval) or DEFAULT_REFRESH_SECONDS
        if key_size * key_number > MAX_BITS_PER_REQUEST:
            problems.append(
                f"{ANNOTATION_KEY_NUMBER} x {ANNOTATION_KEY_SIZE} is {key_number} x {key_size} "
                f"bits; at most {MAX_BITS_PER_REQUEST} bits can be fetched at once"
            )
    batch = key_number or 1
    if max_keys is None:
        max_keys = max(DEFAULT_MIN_MAX_KEYS, 2 * batch)
    elif max_keys < batch:
        problems.append(
            f"{ANNOTATION_MAX_KEYS} is {max_keys}, fewer than the {batch} keys fetched at each "
            f"refresh ({ANNOTATION_KEY_NUMBER}); raise it to at least {batch}"
        )
    if problems or sae is None or peer is None or role is None:
        raise AnnotationProblems(problems)
    return Injection(
        sae=sae,
        peer_sae_id=peer,
        role=role,
        key_size=key_size,
        key_number=key_number,
        refresh_seconds=refresh,
        max_keys=max_keys,
        mount_path=mount_path,
    )
