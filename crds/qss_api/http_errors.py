"""The one shape of an HTTP error in kube-qss: a JSON ``{message, details}`` body (ETSI GS QKD
014's Error document), for every 4xx, so a client never gets aiohttp's plain-text pages and bad
input is never a 5xx.

Used by every aiohttp server: the ETSI 014 app and the inter-node channel (controllers), the
webhook's HTTP adapter (webhooks) and the sidecar's 014 endpoint (sidecar). A server with no
error handling of its own installs ``json_errors``; one with more to do (authentication, its own
error types) calls ``error_response`` and ``http_error_response`` from its own middleware.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


class BadRequest(Exception):
    """A request that is not what the API takes: answered 400 with ``message`` and ``details``
    (which must not quote key material)."""

    def __init__(self, message: str, details: Iterable[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.message, self.details = message, list(details)


def error_response(
    status: int,
    message: str,
    details: Iterable[Mapping[str, Any]] = (),
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """``{"message": ..., "details": [...]}`` (details only when there are any)."""
    body: dict[str, Any] = {"message": message}
    details = list(details)
    if details:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


def http_error_response(
    request: web.Request,
    exc: web.HTTPException,
    *,
    serves: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """aiohttp's own errors (no such route, wrong method, body too large) as JSON errors;
    ``serves`` tells a caller who found no route what the server does answer."""
    out = dict(headers or {})
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        out["Allow"] = allowed
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    elif isinstance(exc, web.HTTPNotFound):
        message = f"no such resource {request.path}; {serves}"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = f"the request body is too large: {exc.text}"
    else:
        message = f"{exc.status} {exc.reason}"
    return error_response(exc.status, message, headers=out)


def json_errors(*, serves: str, headers: Mapping[str, str] | None = None) -> Middleware:
    """A middleware answering ``BadRequest`` with a 400 and aiohttp's 4xx errors as JSON."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, exc.message, exc.details, headers=headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return http_error_response(request, exc, serves=serves, headers=headers)

    return middleware
