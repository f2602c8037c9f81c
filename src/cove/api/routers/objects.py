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

import logging
import re
from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from cove.api import guestlogs
from cove.api.context import ApiContext, authorize, cove
from cove.api.guestlogs import StoredObject
from cove.common.errors import (
    ArtifactDamaged,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    StoreUnavailable,
)
from cove.db.instances import get_instance, live_instances_of
from cove.domain import guestlogs as logs

LOG = logging.getLogger(__name__)

router = APIRouter(prefix="/swift/v1/AUTH_{project_id}", include_in_schema=False)

RULE = "instance:guest_log_list"
#: Objects one listing gives at most (Swift's own default limit).
LISTING_LIMIT = 10000
_INSTANCE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _container(c: ApiContext, name: str) -> None:
    if name != c.settings.guest_log_container:
        raise NotFound(f"Container {name[:64]} not found.")


def _logs_of(c: ApiContext, project_id: str, prefix: str) -> Iterable[tuple[str, str]]:
    """(instance id, log name) of every log the listing may hold: the prefix's instance's
    when it names one, else every live instance's of the project."""
    head = prefix.split("/", 1)[0]
    with c.db.session() as s:
        if _INSTANCE.fullmatch(head):
            try:
                instances = [get_instance(s, head, project_id)]
            except NotFound:
                return []
        else:
            instances = live_instances_of(s, project_id)
        pairs = [
            (i.id, log.name)
            for i in instances
            for log in logs.logs_of(i.datastore_version.datastore.name)
        ]
    return pairs


def _find(c: ApiContext, project_id: str, name: str) -> tuple[str, StoredObject]:
    """The object ``name`` and its instance's id. Raises NotFound."""
    head, _, rest = name.partition("/")
    log = rest.split("/", 1)[0].removesuffix(".metafile")
    if not _INSTANCE.fullmatch(head) or not log:
        raise NotFound(f"Object {name[:160]} not found.")
    with c.db.session() as s:
        inst = get_instance(s, head, project_id)
        datastore = inst.datastore_version.datastore.name
    if log not in {d.name for d in logs.logs_of(datastore)}:
        raise NotFound(f"Object {name[:160]} not found.")
    for item in guestlogs.objects(guestlogs.log_store(c.settings), head, log):
        if item.name == name:
            return head, item
    raise NotFound(f"Object {name[:160]} not found.")


def _unavailable(exc: Exception) -> ServiceUnavailable:
    LOG.error("reading published guest logs: %s", exc)
    return ServiceUnavailable("The store of published logs cannot be reached now; try again later.")


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
    store = guestlogs.log_store(c.settings)
    items: list[StoredObject] = []
    try:
        for instance_id, log in _logs_of(c, project_id, prefix):
            items += guestlogs.objects(store, instance_id, log)
    except (StoreUnavailable, ArtifactDamaged) as exc:
        raise _unavailable(exc) from None
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
        instance_id, item = _find(c, project_id, name)
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
    except (StoreUnavailable, ArtifactDamaged) as exc:
        raise _unavailable(exc) from None
    return Response(data, headers=headers, media_type=kind)
