"""The sidecar's ETSI GS QKD 014 endpoint on the pod's loopback, for apps that speak 014.

``sidecar.main`` serves ``init(node=...)`` on ``127.0.0.1:<port>`` (plain HTTP: only the pod's
own containers share that loopback, and the webhook refuses hostNetwork pods). An unmodified
014 client in the app container points at ``http://127.0.0.1:<port>`` and needs no
certificate: the sidecar makes the call to the node as the pod's SAE, over mutual TLS with the
SAE's credentials (``sidecar.node014``), which the app never holds.

The standard's routes, for the pod's SAE as caller:

- ``GET /api/v1/keys/{slave_SAE_ID}/status``
- ``POST|GET /api/v1/keys/{slave_SAE_ID}/enc_keys`` (Get key, as master)
- ``POST|GET /api/v1/keys/{master_SAE_ID}/dec_keys`` (Get key with key IDs, as slave)

Every request is read against ``qss_api.etsi014`` before it is forwarded (a 400 with the
standard's ``{message, details}`` otherwise), and every answer of the node is read against it
before it is passed on (a node answering something else is a 503: the standard's "try later").
Keys given out here come from the node's store, each exactly once, independent of the key
files; nothing here is logged but request IDs, paths and status codes.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel

from qss_api.etsi014 import (
    API_PREFIX,
    DEC_KEYS,
    ENC_KEYS,
    STATUS,
    Error,
    KeyContainer,
    KeyIds,
    KeyRequest,
    Status,
)
from qss_api.http_errors import BadRequest, error_response, json_errors
from qss_api.wire import SAE_ID_PATTERN, BadMessage, check, decode
from sidecar.node014 import NodeKeyApi, NodeUnreachable

log = logging.getLogger(__name__)


NODE: Final[web.AppKey[NodeKeyApi]] = web.AppKey("qss_sidecar_node")
# A dec_keys body naming 1,000 key IDs is about 70 kB.
MAX_BODY_BYTES: Final = 256 * 1024
_SAE_ID = re.compile(SAE_ID_PATTERN)
_DIGITS = re.compile(r"^[0-9]{1,10}$")
_HEADERS: Final = {"Cache-Control": "no-store"}


def _json(document: Any, status: int = 200) -> web.Response:
    return web.json_response(document, status=status, headers=_HEADERS)


def _error(status: int, message: str, details: Sequence[Mapping[str, Any]] = ()) -> web.Response:
    return error_response(status, message, details, headers=_HEADERS)


def _sae(request: web.Request, parameter: str) -> str:
    value = request.match_info[parameter]
    if not _SAE_ID.match(value):
        raise BadRequest(
            f"{parameter} must be an SAE ID (letters, digits, '.', '_' and '-', at most 64)",
            [{"parameter": parameter, "error": "not an SAE ID"}],
        )
    return value


def _read(model: type[BaseModel], body: bytes) -> Any:
    try:
        return decode(model, body, what=f"014 {model.__name__}")
    except BadMessage as exc:
        raise BadRequest(exc.message, exc.problems) from None


def _query_integers(request: web.Request, names: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        values = request.query.getall(name, [])
        if len(values) > 1 or (values and not _DIGITS.match(values[0])):
            raise BadRequest(
                f"{name} must be given once, as a whole number",
                [{"parameter": name, "error": "not a whole number"}],
            )
        if values:
            out[name] = int(values[0])
    return out


async def _forward(
    request: web.Request,
    method: str,
    sae: str,
    api_method: str,
    answer_model: type[BaseModel],
    *,
    json_body: Any = None,
    params: Sequence[tuple[str, str]] = (),
) -> web.Response:
    request_id = str(uuid.uuid4())
    try:
        answer = await request.app[NODE].request(
            method, sae, api_method, json_body=json_body, params=params
        )
    except NodeUnreachable as exc:
        log.warning("014 %s %s %s: node unreachable: %s", request_id, method, request.path, exc)
        return _error(503, str(exc), [{"reason": "NodeUnreachable", "retryable": True}])
    model: type[BaseModel] = answer_model if answer.status == 200 else Error
    try:
        document = decode(model, answer.body, what=f"node's {model.__name__}")
        if answer.status >= 500 and answer.status != 503:
            # The standard gives clients 400, 401 and 503; a node's own failure is "try later".
            log.warning(
                "014 %s %s %s: node failed with %d", request_id, method, request.path, answer.status
            )
            said = document.model_dump().get("message")
            return _error(
                503,
                f"the node's key API failed ({answer.status}): {said}",
                [{"reason": "NodeFailed", "retryable": True}],
            )
    except BadMessage as exc:
        log.warning(
            "014 %s %s %s: node answered %d, not a 014 %s",
            request_id,
            method,
            request.path,
            answer.status,
            model.__name__,
        )
        return _error(
            503,
            f"the node answered {answer.status} with something that is not a 014 "
            f"{model.__name__}: {exc.message}",
            [{"reason": "NodeAnswerMalformed", "retryable": True}],
        )
    log.info("014 %s %s %s: %d", request_id, method, request.path, answer.status)
    return _json(document.model_dump(mode="json", exclude_none=True), answer.status)


async def _status(request: web.Request) -> web.Response:
    slave = _sae(request, "slave_SAE_ID")
    return await _forward(request, "GET", slave, STATUS, Status)


async def _enc_keys(request: web.Request) -> web.Response:
    slave = _sae(request, "slave_SAE_ID")
    if request.method == "POST":
        raw = await request.read()
        # An empty body asks for the defaults (one key of the pair's default size).
        wanted = _read(KeyRequest, raw) if raw.strip() else KeyRequest()
        body = wanted.model_dump(mode="json", exclude_none=True)
        return await _forward(request, "POST", slave, ENC_KEYS, KeyContainer, json_body=body)
    values = _query_integers(request, ("number", "size"))
    try:
        check(KeyRequest, values, what="014 KeyRequest")
    except BadMessage as exc:
        raise BadRequest(exc.message, exc.problems) from None
    params = [(k, str(v)) for k, v in values.items()]
    return await _forward(request, "GET", slave, ENC_KEYS, KeyContainer, params=params)


async def _dec_keys(request: web.Request) -> web.Response:
    master = _sae(request, "master_SAE_ID")
    if request.method == "POST":
        wanted = _read(KeyIds, await request.read())
        body = wanted.model_dump(mode="json", exclude_none=True)
        return await _forward(request, "POST", master, DEC_KEYS, KeyContainer, json_body=body)
    ids = request.query.getall("key_ID", [])
    try:
        check(KeyIds, {"key_IDs": [{"key_ID": i} for i in ids]}, what="014 key_ID query")
    except BadMessage as exc:
        raise BadRequest(exc.message, exc.problems) from None
    params = [("key_ID", i) for i in ids]
    return await _forward(request, "GET", master, DEC_KEYS, KeyContainer, params=params)


def init(*, node: NodeKeyApi) -> web.Application:
    errors = json_errors(serves=f"this sidecar serves {API_PREFIX}/...", headers=_HEADERS)
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    app[NODE] = node
    prefix = API_PREFIX
    # allow_head=False: a HEAD on enc_keys would take keys and throw them away.
    app.router.add_get(f"{prefix}/{{slave_SAE_ID}}/{STATUS}", _status, allow_head=False)
    app.router.add_post(f"{prefix}/{{slave_SAE_ID}}/{ENC_KEYS}", _enc_keys)
    app.router.add_get(f"{prefix}/{{slave_SAE_ID}}/{ENC_KEYS}", _enc_keys, allow_head=False)
    app.router.add_post(f"{prefix}/{{master_SAE_ID}}/{DEC_KEYS}", _dec_keys)
    app.router.add_get(f"{prefix}/{{master_SAE_ID}}/{DEC_KEYS}", _dec_keys, allow_head=False)
    return app
