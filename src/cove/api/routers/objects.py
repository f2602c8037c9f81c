"""The published guest logs through a read-only subset of the Swift object API, which
python-troveclient's ``log_generator`` (``openstack database log tail`` and ``save``) reads
through swiftclient: the token's catalogue names it as the ``object-store`` service.

Only the guest log container is served, and in it only the objects of the caller's project's
instances: each log's parts and its index (Trove's ``metafile``). ``GET`` of the container
lists them as Swift does (``format=json`` or plain names; ``prefix``, ``marker``,
``end_marker`` and ``limit``; a prefix under which nothing is published is not found, so a
client says the log was never published); ``HEAD`` and ``GET`` of an object give its headers
(a part's line count in ``X-Object-Meta-Lines``, as Trove's publisher sets it) and its plain
bytes. Every other method is refused: the logs are written by publishing them.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from cove.api import guestlogs
from cove.api.context import ApiContext, authorize, cove
from cove.common.errors import (
    ArtifactDamaged,
    BadRequest,
    ConfigurationError,
    NotFound,
    StoreUnavailable,
)

router = APIRouter(prefix="/swift/v1/AUTH_{project_id}", include_in_schema=False)

RULE = "instance:guest_log_list"
#: Objects one listing gives at most (Swift's own default limit).
LISTING_LIMIT = 10000


def _container(c: ApiContext, name: str) -> None:
    if name != c.settings.guest_log_container:
        raise NotFound(f"Container {name[:64]} not found.")


#: What reading the published logs may raise that is the store's (or its key's) fault, not
#: the request's: out of reach, damaged, a key gone, a store the settings cannot open.
UNREADABLE = (StoreUnavailable, ArtifactDamaged, ConfigurationError, ValueError)


@router.get("/{container}")
@router.head("/{container}")
def list_container(
    project_id: str,
    container: str,
    request: Request,
    format: str = "plain",
    prefix: str = "",
    marker: str = "",
    end_marker: str = "",
    limit: int = LISTING_LIMIT,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, RULE)
    _container(c, container)
    if format not in ("json", "plain", "text"):
        raise BadRequest("format must be json or plain.")
    if not 0 <= limit <= LISTING_LIMIT:
        raise BadRequest(f"limit must be between 0 and {LISTING_LIMIT}.")
    try:
        items = guestlogs.project_objects(c, project_id, prefix)
    except UNREADABLE as exc:
        raise guestlogs.unavailable(exc, "reading published guest logs") from None
    chosen = sorted(
        (
            i
            for i in items
            if i.name.startswith(prefix)
            and i.name > marker
            and (not end_marker or i.name < end_marker)
        ),
        key=lambda i: i.name,
    )[:limit]
    if prefix and not chosen and not marker:
        # Swift lists an empty match; a log never published (or discarded) is "not found"
        # instead, which is what clients tell their users ("No published 'general' log").
        raise NotFound(f"Nothing is published under {prefix[:160]}.")
    headers = {
        "X-Container-Object-Count": str(len(items)),
        "X-Container-Bytes-Used": str(sum(i.size for i in items)),
    }
    if request.method == "HEAD":
        return Response(status_code=204, headers=headers)
    if format == "json":
        body = [
            {
                "name": i.name,
                "bytes": i.size,
                "hash": i.md5,
                "last_modified": i.last_modified,
                "content_type": "application/json" if i.index else "text/plain",
            }
            for i in chosen
        ]
        return JSONResponse(body, headers=headers)
    text = "".join(f"{i.name}\n" for i in chosen)
    return PlainTextResponse(text, status_code=200 if text else 204, headers=headers)


@router.get("/{container}/{name:path}")
@router.head("/{container}/{name:path}")
def get_object(
    project_id: str, container: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    authorize(request, project_id, RULE)
    _container(c, container)
    try:
        instance_id, item = guestlogs.find_object(c, project_id, name)
        moment = datetime.fromisoformat(item.last_modified + "+00:00")
        headers: dict[str, Any] = {
            "ETag": item.md5,
            "Last-Modified": format_datetime(moment, usegmt=True),
            "X-Timestamp": f"{moment.timestamp():.5f}",
            "Content-Length": str(item.size),
        }
        if item.lines is not None:
            headers["X-Object-Meta-Lines"] = str(item.lines)
        kind = "application/json" if item.index else "text/plain; charset=utf-8"
        if request.method == "HEAD":
            return Response(headers=headers, media_type=kind)
        data = guestlogs.read(c.settings, guestlogs.log_store(c.settings), instance_id, item)
    except UNREADABLE as exc:
        raise guestlogs.unavailable(exc, "reading published guest logs") from None
    return Response(data, headers=headers, media_type=kind)
