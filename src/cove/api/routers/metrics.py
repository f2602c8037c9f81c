"""``GET /metrics``: the control plane's metrics in Prometheus's text format, for an operator's
Prometheus (``docs/operator-guide.md``, "Metrics"). Outside the Trove API and without a token,
like the health endpoints: it carries counts and timings, no project, instance or user."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cove.api.context import ApiContext, cove
from cove.api.metrics import instance_families
from cove.common.errors import NotFound
from cove.common.metrics import CONTENT_TYPE

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus's text format."}},
)
async def metrics(c: ApiContext = Depends(cove)) -> Response:
    """Requests, RPC, tasks and instances by status, of every control plane process of this
    host; 404 when the operator turned metrics off."""
    if c.metrics is None:
        raise NotFound("Metrics are turned off (the metrics setting).")
    families = await run_in_threadpool(instance_families, c)
    text = await run_in_threadpool(c.metrics.exposition, families)
    return Response(text, media_type=CONTENT_TYPE)
