"""``GET /metrics``: the control plane's metrics and every instance's vital signs in Prometheus's
text format, for an operator's Prometheus (``docs/operator-guide.md``, "Metrics"). Outside the
Trove API: no Keystone token (a scraper has none), but the operator's ``metrics_token`` as a
bearer token when one is set."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cove.api.context import ApiContext, cove
from cove.api.metrics import scraped_families
from cove.common.errors import NotFound, Unauthorized
from cove.common.metrics import CONTENT_TYPE

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus's text format."}},
)
async def metrics(request: Request, c: ApiContext = Depends(cove)) -> Response:
    """Requests, RPC, tasks and instances by status, of every control plane process of this
    host, and each instance's vital signs; 404 when the operator turned metrics off, 401
    without the metrics token the operator set."""
    if c.metrics is None:
        raise NotFound("Metrics are turned off (the metrics setting).")
    expected = c.settings.metrics_token.get_secret_value()
    if expected:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        good = hmac.compare_digest(given.strip().encode(), expected.encode())
        if scheme.lower() != "bearer" or not good:
            raise Unauthorized("The metrics need the operator's metrics token.")
    families = await run_in_threadpool(scraped_families, c)
    text = await run_in_threadpool(c.metrics.exposition, families)
    return Response(text, media_type=CONTENT_TYPE)
