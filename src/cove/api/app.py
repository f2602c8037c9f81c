"""The API application: Trove's v1.0 dialect on FastAPI."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cove import __version__
from cove.api import errors
from cove.api.context import ApiContext, gate
from cove.api.inputs import check_request
from cove.api.routers import (
    catalog,
    configurations,
    dbusers,
    identity,
    instances,
    mgmt,
    networks,
)
from cove.common.errors import CoveError

LOG = logging.getLogger(__name__)

#: Paths under a project: the token is checked before anything else, as Trove's pipeline does,
#: so a caller without a valid token learns nothing from validation or routing errors.
_PROJECT_PATH = re.compile(r"^/v1\.0/([^/]+)/")


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Cove",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        default_response_class=JSONResponse,
    )
    app.state.cove = context
    errors.install(app)

    @app.middleware("http")
    async def _envelope(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = request.headers.get("x-openstack-request-id") or (
            f"req-{uuid.uuid4()}"
        )
        # Trove tolerates a ".json" suffix on any path.
        path = request.scope["path"]
        if path.endswith(".json") and path != "/openapi.json":
            request.scope["path"] = path[: -len(".json")]
        match = _PROJECT_PATH.match(request.scope["path"])
        try:
            if match:
                await run_in_threadpool(gate, request, match.group(1))
            problem = await check_request(request)
            if problem is not None:
                raise problem
        except CoveError as exc:
            refusal = errors.render(request, exc)
            refusal.headers["x-openstack-request-id"] = request.state.request_id
            return refusal
        response = await call_next(request)
        response.headers["x-openstack-request-id"] = request.state.request_id
        if response.status_code in (202, 204) and "content-type" not in response.headers:
            response.headers["content-type"] = "application/json"
        return response

    app.include_router(catalog.router)
    app.include_router(instances.router)
    app.include_router(dbusers.router)
    app.include_router(configurations.router)
    app.include_router(networks.router)
    app.include_router(mgmt.router)
    app.include_router(identity.router)
    return app
