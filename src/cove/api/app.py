"""The API application: Trove's v1.0 dialect on FastAPI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from cove import __version__
from cove.api import errors
from cove.api.context import ApiContext
from cove.api.routers import catalog, dbusers, instances

LOG = logging.getLogger(__name__)


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
        response = await call_next(request)
        response.headers["x-openstack-request-id"] = request.state.request_id
        if response.status_code in (202, 204) and "content-type" not in response.headers:
            response.headers["content-type"] = "application/json"
        return response

    app.include_router(catalog.router)
    app.include_router(instances.router)
    app.include_router(dbusers.router)
    return app
