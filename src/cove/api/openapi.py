"""The OpenAPI document of the API (``/openapi.json``, shown at ``/docs`` and ``/redoc``).

Routes document what they answer with ``responses=answers(...)``: a success body of
:mod:`cove.api.responses` and the faults particular to them. :func:`install` then finishes the
document: Trove's fault envelopes instead of FastAPI's validation shape, the faults every
operation of a kind answers, and the ``X-Auth-Token`` security scheme on every operation that
needs a token.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cove.api.responses import KeystoneErrorBody, View, optional_key

Responses = dict[int | str, dict[str, Any]]

#: The name of the security scheme of Keystone tokens in the document.
TOKEN_SCHEME = "keystoneToken"

_SCHEMAS = "#/components/schemas/{model}"

# -- faults ------------------------------------------------------------------------------------


class Fault(View):
    code: int
    message: str


class OverLimit(Fault):
    details: str = optional_key()
    retryAfter: str = optional_key()


class BadRequestFault(View):
    badRequest: Fault


class UnauthorizedFault(View):
    unauthorized: Fault


class ForbiddenFault(View):
    forbidden: Fault


class ItemNotFoundFault(View):
    itemNotFound: Fault


class ConflictFault(View):
    conflict: Fault


class OverLimitFault(View):
    overLimit: OverLimit


class UnprocessableEntityFault(View):
    unprocessableEntity: Fault


class InstanceFault(View):
    instanceFault: Fault


class NotImplementedFault(View):
    notImplemented: Fault


class ServiceUnavailableFault(View):
    serviceUnavailable: Fault


#: Each status's envelope, and when Cove answers it.
FAULTS: dict[int, tuple[type[View], str]] = {
    400: (BadRequestFault, "The request is malformed or a field is invalid."),
    401: (
        UnauthorizedFault,
        "No valid token in X-Auth-Token (with a WWW-Authenticate header naming the identity "
        "service).",
    ),
    403: (ForbiddenFault, "The token is of another project, or the policy refuses its roles."),
    404: (ItemNotFoundFault, "The resource does not exist (in this project)."),
    409: (ConflictFault, "The request conflicts with the current state."),
    413: (
        OverLimitFault,
        "A quota or size limit would be exceeded, the body is too large, or the request was "
        "rate-limited (with Retry-After).",
    ),
    422: (UnprocessableEntityFault, "The instance is not in a state that allows the request."),
    500: (InstanceFault, "An unexpected error; the message carries an id found in the logs."),
    501: (NotImplementedFault, "A feature Cove does not have (yet), or the datastore lacks."),
    503: (ServiceUnavailableFault, "A service Cove depends on cannot be reached, or timed out."),
}


def answers(body: type[BaseModel] | None = None, *faults: int, status: int = 200) -> Responses:
    """What a route answers, for its ``responses=``: its success ``body`` (None: nothing to
    add, as for an empty body) and the faults it answers beyond those every operation of its
    kind answers (see :func:`document`)."""
    out: Responses = {}
    if body is not None:
        out[status] = {"model": body}
    for code in faults:
        model, description = FAULTS[code]
        out[code] = {"model": model, "description": description}
    return out


def keystone_faults(*codes: int) -> Responses:
    """The errors of an ``/identity`` route, in Keystone's ``{"error": {...}}`` shape."""
    return {code: {"model": KeystoneErrorBody} for code in codes}


# -- the document ------------------------------------------------------------------------------

#: Operations under the prefixes that need a token which take none: the version document of
#: Keystone v3 and getting a token.
_PUBLIC = {("get", "/identity/v3/"), ("post", "/identity/v3/auth/tokens")}

#: Faults every operation of the Trove API may answer: a malformed request (even a query
#: parameter in invalid Unicode), an unexpected error.
_TROVE_FAULTS = (400, 500)
#: ...and those of the operations under a project, which need a token of that project and are
#: rate-limited.
_PROJECT_FAULTS = (401, 403, 413)
#: The headers that come with those faults.
_FAULT_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": 'Where to get a token: `Keystone uri="<identity URL>"`.',
            "schema": {"type": "string"},
        }
    },
    413: {
        "Retry-After": {
            "description": "Seconds until a rate-limited request is allowed again.",
            "schema": {"type": "string"},
        }
    },
}


def _needs_token(method: str, path: str) -> bool:
    """Whether the operation needs ``X-Auth-Token``: those under a project (the API checks
    the token before routing, see cove.api.app) and Keystone's, but for the public ones."""
    if (method, path) in _PUBLIC:
        return False
    return path.startswith("/v1.0/{project_id}/") or path.startswith("/identity/v3/")


def _is_validation_shape(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _finish_operation(method: str, path: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for status in [s for s, r in responses.items() if _is_validation_shape(r)]:
        del responses[status]
    faults: tuple[int, ...] = ()
    if path == "/" or path.startswith("/v1.0"):
        faults = _TROVE_FAULTS
    if _needs_token(method, path):
        op["security"] = [{TOKEN_SCHEME: []}]
        if path.startswith("/v1.0/"):
            faults += _PROJECT_FAULTS
    for code in faults:
        model, description = FAULTS[code]
        ref = {"$ref": _SCHEMAS.format(model=model.__name__)}
        response = responses.setdefault(
            str(code),
            {"description": description, "content": {"application/json": {"schema": ref}}},
        )
        if code in _FAULT_HEADERS:
            response.setdefault("headers", {}).update(_FAULT_HEADERS[code])
    op["responses"] = dict(sorted(responses.items()))


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes, finished as the module docstring says."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            _finish_operation(method, path, op)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, fault_schemas = models_json_schema(
        [(model, "serialization") for model, _ in FAULTS.values()], ref_template=_SCHEMAS
    )
    for name, schema in fault_schemas.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = {
        TOKEN_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "X-Auth-Token",
            "description": "A Keystone token scoped to the project of the path.",
        }
    }
    return doc


def install(app: FastAPI) -> None:
    """Serve :func:`document` at the app's ``openapi_url``, built on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
