"""The documents of ETSI GS QKD 014 (V1.1.1, clause 6) as wire messages.

Member names are the standard's, mixed case included (``key_ID``, ``master_SAE_ID``). Each
document is a ``qss_api.wire.WireModel``: strict types, unknown members refused, read with
``qss_api.wire.decode``. The key sidecar (``sidecar.keyapi``) reads its app's requests and the
node's answers with them; the node's own 014 API (``controllers.etsi014``) parses by hand today
and can move onto these, so that the protocol has one definition.

Ranges are the standard's types (positive integers, UUID key IDs); what a particular KME allows
(``max_key_per_request``, key sizes) is that KME's to say, in its own 400 answer.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, JsonValue, StringConstraints

from qss_api.wire import SaeId, WireModel

# Every method lives under this path, then the SAE ID, then the method (clause 5.1).
API_PREFIX: Final = "/api/v1/keys"
STATUS: Final = "status"
ENC_KEYS: Final = "enc_keys"
DEC_KEYS: Final = "dec_keys"

# A key ID as KMEs hand it out: a UUID, in any case (this node writes lower case).
KeyIdText = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
]
# A positive integer that fits the int32 the standard's JSON schema implies.
PositiveInt = Annotated[int, Field(ge=1, le=2**31 - 1)]
NonNegativeInt = Annotated[int, Field(ge=0, le=2**63 - 1)]
Extension = dict[str, JsonValue]
# Standard base64 with padding, as clause 6.3 asks of "key".
Base64 = Annotated[
    str,
    StringConstraints(pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"),
]


class KeyRequest(WireModel):
    """Key request (6.2): the body of POST enc_keys."""

    number: PositiveInt | None = None
    size: PositiveInt | None = None
    additional_slave_SAE_IDs: list[SaeId] | None = None
    extension_mandatory: list[Extension] | None = None
    extension_optional: list[Extension] | None = None


class KeyIdEntry(WireModel):
    key_ID: KeyIdText
    key_ID_extension: Extension | None = None


class KeyIds(WireModel):
    """Key IDs (6.4): the body of POST dec_keys."""

    key_IDs: Annotated[list[KeyIdEntry], Field(min_length=1)]
    key_IDs_extension: Extension | None = None


class Key(WireModel):
    key_ID: KeyIdText
    key: Base64
    key_ID_extension: Extension | None = None
    key_extension: Extension | None = None


class KeyContainer(WireModel):
    """Key container (6.3): what enc_keys and dec_keys answer, and what a KeyRequest's Secret
    holds under ``keys.json``."""

    keys: list[Key]
    key_container_extension: Extension | None = None


class Status(WireModel):
    """Status (6.1): what status answers."""

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: PositiveInt
    stored_key_count: NonNegativeInt
    max_key_count: NonNegativeInt
    max_key_per_request: PositiveInt
    max_key_size: PositiveInt
    min_key_size: PositiveInt
    max_SAE_ID_count: NonNegativeInt
    status_extension: Extension | None = None


class Error(WireModel):
    """Error (6.5): the body of every 400, 401 and 503 answer."""

    message: str
    details: list[Extension] | None = None
