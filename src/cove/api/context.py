"""What every API request handler reaches through ``request.app.state.cove``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request

from cove.common.errors import BadRequest
from cove.common.settings import Settings
from cove.db.engine import Database
from cove.rpc import RequestContext, RpcClient

_PROJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class ApiContext:
    settings: Settings
    db: Database
    bus: RpcClient


def cove(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.cove
    return ctx


def request_context(request: Request, project_id: str) -> RequestContext:
    """The caller's identity. Until identity lands, the project id in the path is trusted
    (development-only ``noauth`` strategy, announced loudly at start-up)."""
    if not _PROJECT.match(project_id):
        raise BadRequest(f"Invalid project id '{project_id[:80]}'.")
    return RequestContext(request_id=request.state.request_id, project_id=project_id, user_id=None)
