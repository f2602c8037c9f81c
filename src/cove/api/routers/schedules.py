"""Backup schedules (a Cove extension beside Trove's ``/backups``): list, create, show,
update, delete. The workflows are in :mod:`cove.api.schedules`; the task managers run the
schedules (cove.taskmanager.scheduler)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from cove.api import schedules as workflows
from cove.api.context import ApiContext, authorize, cove
from cove.api.openapi import answers
from cove.api.responses import BackupScheduleList, BackupScheduleOne
from cove.api.schemas import BackupScheduleCreateBody, BackupScheduleUpdateBody
from cove.api.validate import checked_text
from cove.api.views import links, paged, trove_time
from cove.db.models import BackupSchedule
from cove.db.schedules import get_schedule, list_schedules

router = APIRouter(prefix="/v1.0/{project_id}/backup_schedules")


def schedule_view(request: Request, row: BackupSchedule) -> dict[str, Any]:
    """A schedule; ``next_run`` is null while it is disabled."""
    return {
        "id": row.id,
        "name": row.name,
        "instance_id": row.instance_id,
        "project_id": row.project_id,
        "cron": row.cron,
        "incremental": row.incremental,
        "keep_count": row.keep_count,
        "keep_days": row.keep_days,
        "enabled": row.enabled,
        "next_run": trove_time(row.next_run) if row.enabled else None,
        "last_run": trove_time(row.last_run),
        "last_backup_id": row.last_backup_id,
        "last_error": row.last_error,
        "created": trove_time(row.created),
        "updated": trove_time(row.updated),
        "links": links(request, row.project_id, "backup_schedules", row.id),
    }


@router.get("", responses=answers(BackupScheduleList))
def index_schedules(
    project_id: str,
    request: Request,
    instance_id: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    """The project's schedules, oldest first; ``instance_id`` keeps one instance's."""
    authorize(request, project_id, "backup_schedule:index")
    instance = checked_text(instance_id, "instance_id") if instance_id is not None else None
    with c.db.session() as s:
        rows = list_schedules(s, project_id, instance)
    return paged(
        request,
        "backup_schedules",
        rows,
        lambda r: r.id,
        limit,
        marker,
        c.settings.page_size,
        lambda r: schedule_view(request, r),
    )


@router.post("", responses=answers(BackupScheduleOne, 404, 501))
def create_schedule(
    project_id: str, body: BackupScheduleCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "backup_schedule:create")
    row = workflows.create_schedule(c, project_id, body.backup_schedule)
    return {"backup_schedule": schedule_view(request, row)}


@router.get("/{schedule_id}", responses=answers(BackupScheduleOne, 404))
def show_schedule(
    project_id: str, schedule_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "backup_schedule:show")
    with c.db.session() as s:
        row = get_schedule(s, schedule_id, project_id)
    return {"backup_schedule": schedule_view(request, row)}


@router.put("/{schedule_id}", responses=answers(BackupScheduleOne, 404, 501))
def update_schedule(
    project_id: str,
    schedule_id: str,
    body: BackupScheduleUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "backup_schedule:update")
    row = workflows.update_schedule(c, project_id, schedule_id, body.backup_schedule)
    return {"backup_schedule": schedule_view(request, row)}


@router.delete(
    "/{schedule_id}", status_code=202, response_class=Response, responses=answers(None, 404)
)
def delete_schedule(
    project_id: str, schedule_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    """Deletes the schedule; its backups stay."""
    authorize(request, project_id, "backup_schedule:delete")
    workflows.delete_schedule(c, project_id, schedule_id)
    return Response(status_code=202)
