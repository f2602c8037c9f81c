"""One place that turns every error into Trove's envelope:
``{"<faultName>": {"code": N, "message": "..."}}``."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from cove.common.errors import CoveError, RateLimited, RemoteError
from cove.common.text import shown

LOG = logging.getLogger(__name__)

_HTTP_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflict",
    413: "overLimit",
    415: "badMediaType",
    422: "unprocessableEntity",
    501: "notImplemented",
    503: "serviceUnavailable",
}


IDENTITY_PREFIX = "/identity"
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


def _printable(message: str) -> str:
    """``message`` made encodable: it may quote a client's string with lone surrogates."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def fault(status: int, message: str, fault_name: str | None = None) -> JSONResponse:
    name = fault_name or _HTTP_FAULTS.get(status, "instanceFault")
    message = _printable(message)
    return JSONResponse({name: {"code": status, "message": message}}, status_code=status)


def keystone_error(status: int, message: str) -> JSONResponse:
    """Keystone's own error shape, used under ``/identity``."""
    title = _TITLES.get(status, "Error")
    return JSONResponse(
        {"error": {"code": status, "title": title, "message": _printable(message)}},
        status_code=status,
    )


def _respond(request: Request, status: int, message: str, name: str | None = None) -> JSONResponse:
    if request.url.path.startswith(IDENTITY_PREFIX):
        response = keystone_error(status, message)
    else:
        response = fault(status, message, name)
    if status == 401:
        identity = request.app.state.cove.identity_url(request)
        response.headers["WWW-Authenticate"] = f'Keystone uri="{identity}"'
    return response


def _rate_limited(exc: RateLimited) -> JSONResponse:
    body = {
        "overLimit": {
            "code": 413,
            "message": exc.message,
            "details": exc.details,
            "retryAfter": str(exc.retry_after),
        }
    }
    return JSONResponse(body, status_code=413, headers={"Retry-After": str(exc.retry_after)})


def _location(loc: tuple[Any, ...]) -> str:
    parts = [shown(p) for p in loc if p not in ("body",)]  # a key may be the client's
    return ".".join(parts) if parts else "body"


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            return "Malformed request body: the body is not valid JSON."
        if tuple(err.get("loc", ())) == ("body",):
            if err.get("type") == "missing":
                return "Malformed request body: a JSON body is required."
            return (
                "Malformed request body: expected a JSON object "
                "(and the header Content-Type: application/json)."
            )
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(f"{_location(tuple(err.get('loc', ())))}: {msg}")
    return "Validation error: " + "; ".join(problems)


def render(request: Request, exc: CoveError) -> JSONResponse:
    """The response for a Cove error, raised in a route or in a middleware. The client reads
    its public message; a server-side failure is logged in full, with the request id."""
    if isinstance(exc, RemoteError):
        # Something failed that no one anticipated: its text is for operators only.
        return _internal(exc)
    if isinstance(exc, RateLimited):
        return _rate_limited(exc)
    if exc.status >= 500:
        request_id = getattr(request.state, "request_id", "-")
        LOG.warning("request %s: %s: %s", request_id, type(exc).__name__, exc.message)
    return _respond(request, exc.status, exc.public_message, exc.fault)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the application answers at the request's path (static files
    aside)."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(CoveError)
    async def _cove(request: Request, exc: CoveError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _respond(request, 400, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _respond(request, 404, "The resource could not be found.")
        if exc.status_code == 405:
            response = _respond(request, 405, "The method is not allowed for this resource.")
            # Routing names the methods of the first route at the path; the path has them all.
            allowed = set(allowed_methods(request))
            allowed.update(m.strip() for m in (exc.headers or {}).get("Allow", "").split(","))
            allowed.discard("")
            if allowed:
                response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        return _respond(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return _internal(exc)


def _internal(exc: Exception) -> JSONResponse:
    trace_id = str(uuid.uuid4())
    LOG.error("unexpected error (trace id %s): %s", trace_id, exc, exc_info=exc)
    return fault(
        500,
        "Internal Server Error. Please keep this ID to help us figure out what went "
        f"wrong: ({trace_id}).",
        "instanceFault",
    )
