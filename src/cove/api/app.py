"""The API application: Trove's v1.0 dialect on FastAPI."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from cove import __version__
from cove.api import errors, openapi
from cove.api.context import ApiContext, gate
from cove.api.inputs import check_request
from cove.api.metrics import route_of
from cove.api.routers import (
    backups,
    catalog,
    clusters,
    configurations,
    console,
    dbusers,
    health,
    identity,
    instances,
    logs,
    metrics,
    mgmt,
    networks,
    objects,
    schedules,
    unimplemented,
)
from cove.common.errors import CoveError

LOG = logging.getLogger(__name__)
#: One line per request answered (``access_log``).
ACCESS = logging.getLogger("cove.api.access")

#: Paths under a project: the token is checked before anything else, as Trove's pipeline does,
#: so a caller without a valid token learns nothing from validation or routing errors.
#: A request id as Trove makes them.
_REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PROJECT_PATH = re.compile(r"^/v1\.0/([^/]+)/")

#: The routers, in the order their routes are matched and documented, with their tags.
ROUTERS = (
    (health.router, "health"),
    (metrics.router, "metrics"),
    (catalog.router, "versions, flavors, datastores, limits"),
    (instances.router, "instances"),
    (dbusers.router, "databases, users, root"),
    (logs.router, "guest logs"),
    (objects.router, "published guest logs (object store)"),
    (configurations.router, "configuration groups"),
    (clusters.router, "clusters"),
    (backups.router, "backups"),
    (schedules.router, "backup schedules"),
    (networks.router, "networks"),
    (mgmt.router, "management"),
    (identity.router, "identity"),
    (console.router, "web console"),
    # Last: a path Cove serves is never taken for one it does not.
    (unimplemented.router, "not supported yet"),
)

DESCRIPTION = (
    "OpenStack Trove's v1.0 API (under `/v1.0/{project_id}`, with a token in `X-Auth-Token`), "
    "Keystone v3's token endpoints (under `/identity`) and health checks. Errors have Trove's "
    'envelope, `{"<faultName>": {"code": N, "message": "..."}}`.'
)


def access(request: Request, status: int, took: float) -> None:
    """The access log's line of a request answered: its request id, method, path (the
    query's values left out: a marker or a name is nobody's business in a log), status,
    duration and client address."""
    request_id = getattr(request.state, "request_id", None)
    client = request.client.host if request.client else None
    ACCESS.info(
        "%s %s %d %.1f ms %s %s",
        request.method,
        request.url.path,
        status,
        took * 1000,
        request_id,
        client,
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "duration_ms": round(took * 1000, 2),
            "client": client,
        },
    )


def create_app(context: ApiContext) -> FastAPI:
    # Swagger UI (/docs) and ReDoc (/redoc) load their scripts from Cove itself, not a CDN.
    app: FastAPI = FastAPIOffline(
        title="Cove",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url="/redoc",
        static_url="/docs/static",
        openapi_url="/openapi.json",
        openapi_tags=[{"name": tag} for _router, tag in ROUTERS],
        default_response_class=JSONResponse,
    )
    app.state.cove = context
    errors.install(app)
    openapi.install(app)

    @app.middleware("http")
    async def _envelope(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500  # what an unexpected error becomes, outside this middleware
        try:
            response = await _answer(request, call_next)
            status = response.status_code
            return response
        finally:
            took = time.perf_counter() - start
            c = request.app.state.cove
            if c.metrics is not None:
                route = route_of(request.app, request.scope)
                c.metrics.request(request.method, route, status, took)
            if c.settings.access_log:
                access(request, status, took)

    async def _answer(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-openstack-request-id", "")
        # A caller's own id is kept only in Trove's form: it goes into the logs.
        request.state.request_id = given if _REQUEST_ID.fullmatch(given) else f"req-{uuid.uuid4()}"
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
        return response

    for router, tag in ROUTERS:
        app.include_router(router, tags=[tag])
    return app
