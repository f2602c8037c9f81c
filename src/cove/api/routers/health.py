"""Health endpoints for load balancers and supervisors, outside the Trove API and without a
token: ``/healthz`` (the process answers) and ``/readyz`` (it can serve: see cove.api.health).
Neither names a URL, a path or an error: the reasons are in the API's log."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from cove.api.context import ApiContext, cove
from cove.api.health import DEPENDENCIES
from cove.api.openapi import answers
from cove.api.responses import Liveness, Readiness

router = APIRouter()


@router.get("/healthz", responses=answers(Liveness))
async def healthz() -> JSONResponse:
    """200 while the process serves requests; it checks nothing else."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    responses={
        **answers(Readiness),
        503: {"model": Readiness, "description": "The control database or the bus fails."},
    },
)
def readyz(c: ApiContext = Depends(cove)) -> JSONResponse:
    """200 when the control database and the bus answer, else 503 naming which did not."""
    outcome = c.readiness.check(c.db, c.bus)
    checks = {name: "failed" if name in outcome.failed else "ok" for name in DEPENDENCIES}
    return JSONResponse(
        {"status": "ok" if outcome.ready else "unavailable", "checks": checks},
        status_code=200 if outcome.ready else 503,
    )
