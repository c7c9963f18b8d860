"""Reading ETSI GS QKD 014 requests: path SAE IDs, enc_keys and dec_keys in POST and GET form.

Pure functions, called by the 014 handlers (``controllers.etsi014.app``) with the raw body bytes
or the query pairs; they return typed requests or raise ``RequestError`` with a one-line
``message`` and one ``details`` entry per wrong parameter (the 400 body the standard asks
for). Nothing here talks to the key store.

What this KME supports of the standard's request (V1.1.1, clause 6.2 / 6.4):

- ``number`` (default 1) and ``size`` (default: the pair's ``key_size``, decided by the caller),
  within ``MAX_KEYS_PER_REQUEST`` and ``[MIN_KEY_SIZE, MAX_KEY_SIZE]``, size a multiple of 8;
- ``additional_slave_SAE_IDs``: none (``max_SAE_ID_count`` is 0), so a non-empty list is refused;
- ``extension_mandatory``: no extension is supported, so any entry is refused by name;
- ``extension_optional``: ignored, as the standard allows;
- ``key_IDs`` of dec_keys: UUIDs (any case in, lower case out), each at most once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import pydantic_core

from controllers.delivery.api import MAX_KEY_SIZE, MAX_KEYS_PER_REQUEST, MIN_KEY_SIZE

# The SAE ID rule of the Sae CRD (crds/qss.dev_saes.yaml, spec.saeID): an ID that breaks it
# can name no registered SAE, so the caller learns of the typo instead of a vaguer UnknownSae.
SAE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UUID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_INTEGER: Final = re.compile(r"^[+-]?[0-9]{1,12}$")
# How much of a rejected value an error quotes: enough to recognise it, never a whole body.
_QUOTE_CHARS: Final = 40


class Problem(TypedDict):
    """One entry of an error's ``details``: which parameter, and what is wrong with it."""

    parameter: str
    error: str


class RequestError(Exception):
    """A malformed 014 request: answered 400 with ``{message, details}``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.details = problems
        self.message = "; ".join(p["error"] for p in problems)
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """enc_keys: ``number`` keys of ``size`` bits (None: the pair's default key size)."""

    number: int = 1
    size: int | None = None


@dataclass(frozen=True, slots=True)
class KeyIdsRequest:
    """dec_keys: the key IDs to fetch, in the caller's order, lower-case UUIDs."""

    key_ids: tuple[str, ...]


def _show(value: Any) -> str:
    """A short, JSON-ish rendering of a rejected value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_QUOTE_CHARS:
        # Python refuses to turn an int of more than 4,300 digits into text; say what it is.
        return "an integer of more than 40 digits"
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


def _problem(parameter: str, error: str) -> Problem:
    return {"parameter": parameter, "error": error}


def parse_sae_id(value: str, *, parameter: str) -> str:
    """The SAE ID from the URL path (``slave_SAE_ID`` or ``master_SAE_ID``), checked."""
    if not SAE_ID_PATTERN.match(value):
        raise RequestError(
            [
                _problem(
                    parameter,
                    f"{parameter} {_show(value)} is not an SAE ID: 1 to 64 letters, digits, "
                    "'.', '_' or '-', starting with a letter or digit",
                )
            ]
        )
    return value


# --- enc_keys ------------------------------------------------------------------------------


def _check_number(number: int, problems: list[Problem]) -> None:
    if not 1 <= number <= MAX_KEYS_PER_REQUEST:
        problems.append(
            _problem(
                "number",
                f"number must be from 1 to {MAX_KEYS_PER_REQUEST} (max_key_per_request), "
                f"got {_show(number)}",
            )
        )


def _check_size(size: int, problems: list[Problem]) -> None:
    if not MIN_KEY_SIZE <= size <= MAX_KEY_SIZE:
        problems.append(
            _problem(
                "size",
                f"size must be from {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bits (min_key_size, "
                f"max_key_size), got {_show(size)}",
            )
        )
    elif size % 8:
        problems.append(_problem("size", f"size must be a multiple of 8 bits, got {size}"))


def _json_integer(body: dict[str, Any], name: str, problems: list[Problem]) -> int | None:
    """``body[name]`` if it is a JSON integer (not a bool, not a float); else a problem."""
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    problems.append(_problem(name, f"{name} must be a JSON integer, got {_show(value)}"))
    return None


def _check_additional_saes(body: dict[str, Any], problems: list[Problem]) -> None:
    value = body.get("additional_slave_SAE_IDs")
    if value is None or value == []:
        return
    if not isinstance(value, list):
        problems.append(
            _problem(
                "additional_slave_SAE_IDs",
                f"additional_slave_SAE_IDs must be an array of SAE IDs, got {_show(value)}",
            )
        )
        return
    problems.append(
        _problem(
            "additional_slave_SAE_IDs",
            "additional_slave_SAE_IDs is not supported: this KME delivers keys to one slave SAE "
            "per request (max_SAE_ID_count is 0); ask for each slave SAE separately",
        )
    )


def _check_mandatory_extensions(body: dict[str, Any], problems: list[Problem]) -> None:
    value = body.get("extension_mandatory")
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        problems.append(
            _problem(
                "extension_mandatory",
                f"extension_mandatory must be an array of objects, got {_show(value)}",
            )
        )
        return
    # Each entry is an object naming one extension (e.g. {"abc_route_type": "direct"}); this
    # KME implements none, and a mandatory one it cannot honour must fail the request.
    for entry in value:
        for name in entry:
            problems.append(
                _problem(
                    "extension_mandatory",
                    f"unsupported mandatory extension {_show(name)}: this KME supports no "
                    "extensions; drop it or send it in extension_optional",
                )
            )


def _parse_json_object(body: bytes, *, empty_is: dict[str, Any] | None) -> dict[str, Any]:
    if not body.strip() and empty_is is not None:
        return empty_is
    try:
        # RFC 8259: JSON between systems is UTF-8 (json.loads would also guess UTF-16/32).
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError([_problem("body", "the body is not UTF-8 text")]) from None
    try:
        # pydantic's parser (Rust): it refuses nesting deeper than 200 levels and numbers of
        # more than 4,300 digits with an error, where json.loads would crash (RecursionError)
        # or hand over numbers Python cannot even print.
        parsed = pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError as exc:
        raise RequestError([_problem("body", f"the body is not valid JSON ({exc})")]) from None
    if not isinstance(parsed, dict):
        raise RequestError(
            [_problem("body", f"the body must be a JSON object, got {type(parsed).__name__}")]
        )
    return parsed


def parse_enc_keys_body(body: bytes) -> KeyRequest:
    """A POST enc_keys body (an empty body means all defaults, as ``{}`` does)."""
    request = _parse_json_object(body, empty_is={})
    problems: list[Problem] = []
    number = _json_integer(request, "number", problems)
    size = _json_integer(request, "size", problems)
    if number is not None:
        _check_number(number, problems)
    if size is not None:
        _check_size(size, problems)
    _check_additional_saes(request, problems)
    _check_mandatory_extensions(request, problems)
    # extension_optional: extensions the caller can do without; none is implemented, so all
    # are ignored, as the standard allows.
    if problems:
        raise RequestError(problems)
    return KeyRequest(number=1 if number is None else number, size=size)


def _single(query: Iterable[tuple[str, str]], name: str, problems: list[Problem]) -> str | None:
    values = [v for k, v in query if k == name]
    if len(values) > 1:
        problems.append(_problem(name, f"{name} may be given once, got {len(values)} values"))
        return None
    return values[0] if values else None


def _query_integer(
    query: Iterable[tuple[str, str]], name: str, problems: list[Problem]
) -> int | None:
    text = _single(query, name, problems)
    if text is None:
        return None
    if not _INTEGER.match(text):
        problems.append(_problem(name, f"{name} must be an integer, got {_show(text)}"))
        return None
    return int(text)


def parse_enc_keys_query(query: Iterable[tuple[str, str]]) -> KeyRequest:
    """A GET enc_keys query (``?number=&size=``); other parameters are ignored."""
    pairs = list(query)
    problems: list[Problem] = []
    number = _query_integer(pairs, "number", problems)
    size = _query_integer(pairs, "size", problems)
    if number is not None:
        _check_number(number, problems)
    if size is not None:
        _check_size(size, problems)
    if problems:
        raise RequestError(problems)
    return KeyRequest(number=1 if number is None else number, size=size)


# --- dec_keys ------------------------------------------------------------------------------


def _key_id(value: Any, parameter: str, problems: list[Problem]) -> str | None:
    if not isinstance(value, str) or not _UUID.match(value):
        problems.append(
            _problem(
                parameter,
                f"{parameter} must be a UUID such as 550e8400-e29b-41d4-a716-446655440000, "
                f"got {_show(value)}",
            )
        )
        return None
    return value.lower()


def _finish_key_ids(
    ids: list[str | None], parameter: str, problems: list[Problem]
) -> KeyIdsRequest:
    if not ids:
        problems.append(_problem(parameter, f"{parameter} must name at least one key ID"))
    elif len(ids) > MAX_KEYS_PER_REQUEST:
        problems.append(
            _problem(
                parameter,
                f"{parameter} may name at most {MAX_KEYS_PER_REQUEST} keys "
                f"(max_key_per_request), got {len(ids)}",
            )
        )
    seen: set[str] = set()
    for key_id in ids:
        if key_id is not None and key_id in seen:
            problems.append(_problem(parameter, f"{parameter} names key ID {key_id} twice"))
        elif key_id is not None:
            seen.add(key_id)
    if problems:
        raise RequestError(problems)
    return KeyIdsRequest(key_ids=tuple(i for i in ids if i is not None))


def parse_dec_keys_body(body: bytes) -> KeyIdsRequest:
    """A POST dec_keys body: ``{"key_IDs": [{"key_ID": "<uuid>"}, ...]}``.

    ``key_ID_extension`` and ``key_IDs_extension`` are accepted and ignored (no extension is
    implemented); they must be objects if present, as the standard types them.
    """
    request = _parse_json_object(body, empty_is=None)
    problems: list[Problem] = []
    entries = request.get("key_IDs")
    if not isinstance(entries, list):
        shown = "nothing" if entries is None else _show(entries)
        raise RequestError(
            [
                _problem(
                    "key_IDs",
                    f'key_IDs must be an array of objects like {{"key_ID": "<UUID>"}}, got {shown}',
                )
            ]
        )
    if request.get("key_IDs_extension") is not None and not isinstance(
        request["key_IDs_extension"], dict
    ):
        problems.append(_problem("key_IDs_extension", "key_IDs_extension must be an object"))
    ids: list[str | None] = []
    for i, entry in enumerate(entries):
        where = f"key_IDs[{i}]"
        if not isinstance(entry, dict):
            problems.append(
                _problem(where, f'{where} must be an object like {{"key_ID": "<UUID>"}}')
            )
            ids.append(None)
            continue
        if "key_ID" not in entry:
            problems.append(_problem(f"{where}.key_ID", f"{where} has no key_ID"))
            ids.append(None)
            continue
        ids.append(_key_id(entry["key_ID"], f"{where}.key_ID", problems))
        if entry.get("key_ID_extension") is not None and not isinstance(
            entry["key_ID_extension"], dict
        ):
            problems.append(
                _problem(f"{where}.key_ID_extension", f"{where}.key_ID_extension must be an object")
            )
    return _finish_key_ids(ids, "key_IDs", problems)


def parse_dec_keys_query(query: Iterable[tuple[str, str]]) -> KeyIdsRequest:
    """A GET dec_keys query: ``?key_ID=<uuid>``, repeated for several keys."""
    problems: list[Problem] = []
    ids = [_key_id(v, "key_ID", problems) for k, v in query if k == "key_ID"]
    return _finish_key_ids(ids, "key_ID", problems)
