"""The ETSI GS QKD 014 key delivery API of a QSS node, as an aiohttp app.

``controllers.main`` builds it with ``init(delivery=..., authenticator=..., settings=...)`` and
serves it over mutual TLS with ``controllers.etsi014.server.Etsi014Server``. Routes:

- ``GET /api/v1/keys/{slave_SAE_ID}/status``: the caller is the master SAE;
- ``POST|GET /api/v1/keys/{slave_SAE_ID}/enc_keys`` (Get key): the caller is the master SAE;
- ``POST|GET /api/v1/keys/{master_SAE_ID}/dec_keys`` (Get key with key IDs): the caller is the
  slave SAE and the path names the master.

The caller is the SAE whose client certificate the TLS connection carries, asked of the
``SaeAuthenticator`` on every request (a revoked SAE is refused even on a kept-alive
connection). Answers are JSON: 200 with the standard's documents, 400 for a malformed request or
unknown SAE/keys, 401 for a missing, unknown or revoked certificate, 503 when keys cannot be had
now or the SAE is not known *yet* (``{message, details}``, ``details[0].retryable`` says whether
trying again may help), 500 with a generic message for anything unexpected.

The handlers only decode, call ``KeyDelivery`` and encode; request parsing lives in
``requests`` and the documents in ``responses``. Metrics (``controllers.metrics``): each handler
counts what it served, the middleware every refusal by reason; a refusal for want of keys is
also told to ``on_scarcity``. No log line carries key material or a
response body; logs name the request ID, the SAEs, counts and sizes.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from controllers import metrics
from controllers.delivery.api import (
    SCARCITY_REASONS,
    DeliveredKey,
    DeliveryError,
    InsufficientKeys,
    InvalidRequest,
    KeyConflict,
    KeyDelivery,
    NoRoute,
    PeerUnreachable,
    RelayFailed,
    SaeAuthenticator,
    UnknownKeys,
    UnknownSae,
)
from controllers.etsi014.requests import (
    RequestError,
    parse_dec_keys_body,
    parse_dec_keys_query,
    parse_enc_keys_body,
    parse_enc_keys_query,
    parse_sae_id,
)
from controllers.etsi014.responses import key_container, status_document
from controllers.etsi014.settings import Etsi014Settings
from qss_api.http_errors import error_response, http_error_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_PATH: Final = "/api/v1/keys/{slave_SAE_ID}/status"
ENC_KEYS_PATH: Final = "/api/v1/keys/{slave_SAE_ID}/enc_keys"
DEC_KEYS_PATH: Final = "/api/v1/keys/{master_SAE_ID}/dec_keys"

DELIVERY: Final[web.AppKey[KeyDelivery]] = web.AppKey("qss_etsi014_delivery")
AUTHENTICATOR: Final[web.AppKey[SaeAuthenticator]] = web.AppKey("qss_etsi014_authenticator")
SETTINGS: Final = web.AppKey("qss_etsi014_settings", Etsi014Settings)
# Told of a request refused for want of keys: (the calling SAE's ID, reason, message).
ScarcityHook = Callable[[str, str, str], None]
ON_SCARCITY: Final[web.AppKey[ScarcityHook]] = web.AppKey("qss_etsi014_on_scarcity")
CALLER: Final = web.RequestKey("qss_etsi014_caller", str)
REQUEST_ID: Final = web.RequestKey("qss_etsi014_request_id", str)
STARTED: Final = web.RequestKey("qss_etsi014_started", float)

# What the client did wrong (400) versus what may heal by waiting (503). A client error that
# says it is retryable (an SAE not known *yet*, while some neighbour has not told us its SAEs)
# is a 503 too: 014 clients treat a 400 as final.
_CLIENT_ERRORS: Final = (InvalidRequest, UnknownKeys, UnknownSae)
_UNAVAILABLE: Final = (InsufficientKeys, KeyConflict, NoRoute, PeerUnreachable, RelayFailed)
# The largest request body read: a dec_keys body naming MAX_KEYS_PER_REQUEST keys takes about
# 70 kB, so this leaves room for extensions while keeping junk from filling memory.
MAX_BODY_BYTES: Final = 256 * 1024
# What a caller who found no route is told this server answers.
_SERVES: Final = "the ETSI 014 API serves /api/v1/keys/{SAE_ID}/status, /enc_keys and /dec_keys"
# Key material must not linger in HTTP caches between the KME and the SAE.
_HEADERS: Final = {"Cache-Control": "no-store"}


class DeliveryContractError(RuntimeError):
    """The delivery layer returned something other than what was asked for (a bug there)."""


def _json(document: Any) -> web.Response:
    return web.json_response(document, headers=_HEADERS)


def _error(status: int, message: str, details: Sequence[Mapping[str, Any]] = ()) -> web.Response:
    return error_response(status, message, details, headers=_HEADERS)


def _unauthorized(message: str) -> web.Response:
    return _error(401, message)


def _authenticate(request: web.Request) -> str | web.Response:
    """The calling SAE's ID, or the 401 answer saying why there is none."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return _unauthorized("the ETSI 014 API only answers HTTPS with an SAE client certificate")
    certificate = ssl_object.getpeercert(binary_form=True)
    if not certificate:
        return _unauthorized(
            "no client certificate: connect with your SAE's certificate and key (from its Sae "
            "credentials Secret)"
        )
    sae_id = request.app[AUTHENTICATOR].authenticate(certificate)
    if sae_id is None:
        log.info(
            "014 request %s refused: certificate sha256 %s is not a current SAE credential",
            request[REQUEST_ID],
            hashlib.sha256(certificate).hexdigest(),
        )
        return _unauthorized(
            "the client certificate is not the current credential of an SAE registered on "
            "this node (unknown, revoked or replaced); use the certificate from the SAE's "
            "credentials Secret"
        )
    return sae_id


def _delivery_error(request: web.Request, exc: DeliveryError) -> web.Response:
    status = 400 if isinstance(exc, _CLIENT_ERRORS) and not exc.retryable else 503
    if not isinstance(exc, _CLIENT_ERRORS + _UNAVAILABLE):
        log.warning("014 request %s: unmapped delivery error %s", request[REQUEST_ID], exc.reason)
    log.info(
        "014 request %s %s %s: %d %s: %s",
        request[REQUEST_ID],
        request.method,
        request.path,
        status,
        exc.reason,
        exc.message,
    )
    detail = {"reason": exc.reason, "retryable": exc.retryable, "request_id": request[REQUEST_ID]}
    return _error(status, exc.message, [detail])


_OPERATIONS: Final[dict[str, metrics.Operation]] = {
    STATUS_PATH: "status",
    ENC_KEYS_PATH: "enc_keys",
    DEC_KEYS_PATH: "dec_keys",
}
_HTTP_REASONS: Final = {404: "NotFound", 405: "MethodNotAllowed", 413: "BodyTooLarge"}


def _operation(request: web.Request) -> metrics.Operation:
    resource = request.match_info.route.resource
    return _OPERATIONS.get(resource.canonical if resource is not None else "", "other")


def _refused(request: web.Request, reason: str) -> None:
    metrics.request_failed(interface="etsi014", operation=_operation(request), reason=reason)


def _served(request: web.Request, *, master: str, slave: str, keys: int) -> None:
    metrics.keys_served(
        interface="etsi014",
        operation=_operation(request),
        master_sae=master,
        slave_sae=slave,
        keys=keys,
        seconds=time.monotonic() - request[STARTED],
    )


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = str(uuid.uuid4())
    request[STARTED] = time.monotonic()
    try:
        caller = _authenticate(request)
        if isinstance(caller, web.Response):
            _refused(request, "Unauthorized")
            return caller
        request[CALLER] = caller
        return await handler(request)
    except RequestError as exc:
        _refused(request, "BadRequest")
        return _error(400, exc.message, list(exc.details))
    except DeliveryError as exc:
        _refused(request, exc.reason)
        if exc.reason in SCARCITY_REASONS and CALLER in request:
            request.app[ON_SCARCITY](request[CALLER], exc.reason, exc.message)
        return _delivery_error(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        _refused(request, _HTTP_REASONS.get(exc.status, f"Http{exc.status}"))
        return http_error_response(request, exc, serves=_SERVES, headers=_HEADERS)
    except Exception:
        _refused(request, "InternalError")
        # The cause goes to our log only. Delivery errors and our own messages never carry key
        # material (the delivery contract says so), and tracebacks hold no local variables.
        log.exception(
            "014 request %s %s %s failed", request[REQUEST_ID], request.method, request.path
        )
        return _error(
            500,
            "internal error in this KME; the cause is logged under request ID "
            f"{request[REQUEST_ID]}",
        )


# --- handlers ------------------------------------------------------------------------------


async def _status(request: web.Request) -> web.Response:
    master = request[CALLER]
    slave = parse_sae_id(request.match_info["slave_SAE_ID"], parameter="slave_SAE_ID")
    status = await request.app[DELIVERY].pair_status(master_sae_id=master, slave_sae_id=slave)
    _served(request, master=master, slave=slave, keys=0)
    return _json(status_document(status, master_sae_id=master, slave_sae_id=slave))


def _check_enc_keys(keys: Sequence[DeliveredKey], *, number: int, size: int) -> None:
    if len(keys) != number or len({k.key_id for k in keys}) != number:
        raise DeliveryContractError(
            f"delivery returned {len(keys)} keys ({len({k.key_id for k in keys})} distinct IDs) "
            f"for a request of {number}"
        )
    wrong = [k.key_id for k in keys if len(k.material) * 8 != size]
    if wrong:
        raise DeliveryContractError(f"delivery returned keys of the wrong size: {wrong}")


async def _enc_keys(request: web.Request) -> web.Response:
    master = request[CALLER]
    slave = parse_sae_id(request.match_info["slave_SAE_ID"], parameter="slave_SAE_ID")
    if request.method == "POST":
        wanted = parse_enc_keys_body(await request.read())
    else:
        wanted = parse_enc_keys_query(request.query.items())
    delivery, request_id = request.app[DELIVERY], request[REQUEST_ID]
    size = wanted.size
    if size is None:
        size = (await delivery.pair_status(master_sae_id=master, slave_sae_id=slave)).key_size
    keys = await delivery.get_keys(
        request_id=request_id,
        master_sae_id=master,
        slave_sae_id=slave,
        number=wanted.number,
        size_bits=size,
        timeout=request.app[SETTINGS].get_keys_timeout,
    )
    _check_enc_keys(keys, number=wanted.number, size=size)
    _served(request, master=master, slave=slave, keys=len(keys))
    log.info(
        "014 request %s: enc_keys delivered %d keys of %d bits to %s (shared with %s)",
        request_id,
        len(keys),
        size,
        master,
        slave,
    )
    return _json(key_container(keys))


async def _dec_keys(request: web.Request) -> web.Response:
    slave = request[CALLER]
    master = parse_sae_id(request.match_info["master_SAE_ID"], parameter="master_SAE_ID")
    if request.method == "POST":
        wanted = parse_dec_keys_body(await request.read())
    else:
        wanted = parse_dec_keys_query(request.query.items())
    keys = await request.app[DELIVERY].get_keys_with_ids(
        slave_sae_id=slave, master_sae_id=master, key_ids=wanted.key_ids
    )
    by_id = {k.key_id: k for k in keys}
    if len(keys) != len(wanted.key_ids) or by_id.keys() != set(wanted.key_ids):
        raise DeliveryContractError(
            f"delivery returned {len(keys)} keys, not the {len(wanted.key_ids)} asked for by ID"
        )
    _served(request, master=master, slave=slave, keys=len(keys))
    log.info(
        "014 request %s: dec_keys delivered %d keys to %s (from %s)",
        request[REQUEST_ID],
        len(keys),
        slave,
        master,
    )
    # The caller's order, whatever order the store answered in.
    return _json(key_container([by_id[key_id] for key_id in wanted.key_ids]))


def _ignore(sae_id: str, reason: str, message: str) -> None:
    pass


def init(
    *,
    delivery: KeyDelivery,
    authenticator: SaeAuthenticator,
    settings: Etsi014Settings | None = None,
    on_scarcity: ScarcityHook | None = None,
) -> web.Application:
    """The 014 app: authentication and error middleware and the five routes. Serve it with
    ``Etsi014Server`` (mutual TLS); over plain HTTP every request is answered 401.
    ``on_scarcity`` hears of every request refused for want of keys (the node posts an Event
    on the caller's Sae)."""
    app = web.Application(middlewares=[_middleware], client_max_size=MAX_BODY_BYTES)
    app[ON_SCARCITY] = on_scarcity if on_scarcity is not None else _ignore
    app[DELIVERY] = delivery
    app[AUTHENTICATOR] = authenticator
    app[SETTINGS] = settings if settings is not None else Etsi014Settings()
    # allow_head=False: a HEAD on enc_keys or dec_keys would take keys and throw them away.
    app.router.add_get(STATUS_PATH, _status, allow_head=False)
    app.router.add_post(ENC_KEYS_PATH, _enc_keys)
    app.router.add_get(ENC_KEYS_PATH, _enc_keys, allow_head=False)
    app.router.add_post(DEC_KEYS_PATH, _dec_keys)
    app.router.add_get(DEC_KEYS_PATH, _dec_keys, allow_head=False)
    return app
