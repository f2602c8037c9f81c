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

from cove.common.errors import CoveError, RemoteError

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


def fault(status: int, message: str, fault_name: str | None = None) -> JSONResponse:
    name = fault_name or _HTTP_FAULTS.get(status, "instanceFault")
    return JSONResponse({name: {"code": status, "message": message}}, status_code=status)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
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


def install(app: FastAPI) -> None:
    @app.exception_handler(CoveError)
    async def _cove(_request: Request, exc: CoveError) -> JSONResponse:
        if isinstance(exc, RemoteError):
            # Something failed that no one anticipated: its text is for operators only.
            return _internal(exc)
        if exc.status >= 500:
            LOG.warning("%s: %s", type(exc).__name__, exc.message)
        return fault(exc.status, exc.message, exc.fault)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return fault(400, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = "The resource could not be found."
        elif exc.status_code == 405:
            message = "The method is not allowed for this resource."
        else:
            message = str(exc.detail)
        return fault(exc.status_code, message)

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
