"""Guest logs (Trove's ``/instances/{id}/log``): list an instance's logs, show one, enable or
disable a USER log, publish a log to the store or discard what was published.

The instance's guest agent reads and changes its logs (``cove.guestagent.guestlogs``), so it
must be there (``cove.api.guest.check_agent``): any state but building or deleting will do,
during a backup, a restart or a resize too, a stopped or crashed server's error log being what
a user most wants to read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from cove.api import guestlogs
from cove.api.context import ApiContext, authorize_instance, cove
from cove.api.guest import check_agent
from cove.api.openapi import answers
from cove.api.responses import GuestLogList, GuestLogOne
from cove.api.schemas import LogActionBody
from cove.common.errors import (
    ArtifactDamaged,
    BadRequest,
    NotFound,
    StoreUnavailable,
)
from cove.domain import guestlogs as logs

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}")

FAULTS = (400, 404, 422, 503)


@router.get("/log", responses=answers(GuestLogList, *FAULTS))
def list_logs(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx, project_id = authorize_instance(
        request, project_id, instance_id, "instance:guest_log_list"
    )
    check_agent(c, project_id, instance_id)
    container = c.settings.guest_log_container
    states = c.guest(instance_id).list_logs(ctx)
    return {"logs": [guestlogs.view(s, instance_id, container) for s in states]}


@router.post("/log", responses=answers(GuestLogOne, *FAULTS))
def log_action(
    project_id: str,
    instance_id: str,
    body: LogActionBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    ctx, project_id = authorize_instance(
        request, project_id, instance_id, "instance:guest_log_action"
    )
    if body.enable and body.disable:
        raise BadRequest("A log cannot be enabled and disabled at once.")
    if body.publish and body.discard:
        raise BadRequest("A log cannot be published and discarded at once.")
    datastore = check_agent(c, project_id, instance_id)
    try:
        log = logs.find(datastore, body.name)
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    guest = c.guest(instance_id)
    state = None
    if body.enable or body.disable:
        state = guest.set_log(ctx, log.name, bool(body.enable))
    if body.publish or body.discard:
        target = guestlogs.target(c.settings, instance_id)
        try:
            if body.discard:
                state = guest.discard_log(ctx, log.name, target)
            else:
                state = guest.publish_log(ctx, log.name, target)
        except (StoreUnavailable, ArtifactDamaged) as exc:
            what = f"the {log.name} log of instance {instance_id}"
            raise guestlogs.unavailable(exc, what) from None
    if state is None:
        state = guest.show_log(ctx, log.name)
    return {"log": guestlogs.view(state, instance_id, c.settings.guest_log_container)}
