"""Backups (Trove's ``/backups`` and ``/instances/{id}/backups``): create, list, show, delete.

A backup is made by its instance's guest agent into the deployment's store, sealed; the
workflows are in :mod:`cove.api.backups`. Lists are newest ``updated`` first, paged in SQL;
``all_projects`` (cloud administrators only) lists every project's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select

from cove.api import backups as workflows
from cove.api.context import ApiContext, authorize, authorize_instance, cove
from cove.api.openapi import answers
from cove.api.responses import BackupList, BackupOne, RestoreWindowOne
from cove.api.restore import restore_window
from cove.api.schemas import BackupCreateBody
from cove.api.validate import checked_text
from cove.api.views import backup_view, next_links, page_limit, restore_window_view
from cove.common.errors import BadRequest
from cove.db.backups import get_backup, live_backups, page_backups
from cove.db.instances import get_instance
from cove.db.models import Backup, Datastore, DatastoreVersion

router = APIRouter(prefix="/v1.0/{project_id}")


def _page(
    request: Request, c: ApiContext, query: Select[Backup], limit: int | None, marker: str | None
) -> dict[str, Any]:
    size = page_limit(limit, c.settings.page_size)
    with c.db.session() as s:
        page, more = page_backups(s, query, marker, size)
        body: dict[str, Any] = {"backups": [backup_view(b) for b in page]}
    if more:
        body["links"] = next_links(request, page[-1].id, size)
    return body


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise BadRequest(f"'{name}' must be true or false.")


@router.get("/backups", responses=answers(BackupList, 403))
def list_backups(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    datastore: str | None = None,
    instance_id: str | None = None,
    all_projects: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    everyone = _flag(all_projects, "all_projects")
    authorize(request, project_id, "backup:index:all_projects" if everyone else "backup:index")
    query = live_backups()
    if not everyone:
        query = query.where(Backup.project_id == project_id)
    if instance_id is not None:
        query = query.where(Backup.instance_id == checked_text(instance_id, "instance_id"))
    if datastore is not None:
        name = checked_text(datastore, "datastore")
        versions = (
            DatastoreVersion.__table__.select()
            .with_only_columns(DatastoreVersion.id)
            .join(Datastore.__table__, Datastore.id == DatastoreVersion.datastore_id)
            .where((Datastore.name == name) | (Datastore.id == name))
        )
        query = query.where(Backup.datastore_version_id.in_(versions))
    return _page(request, c, query, limit, marker)


@router.post(
    "/backups", status_code=202, responses=answers(BackupOne, 403, 404, 413, 422, 501, status=202)
)
def create_backup(
    project_id: str, body: BackupCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "backup:create")
    return {"backup": workflows.create_backup(c, ctx, project_id, body.backup, backup_view)}


@router.get("/backups/{backup_id}", responses=answers(BackupOne, 404))
def show_backup(
    project_id: str, backup_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "backup:show")
    with c.db.session() as s:
        return {"backup": backup_view(get_backup(s, backup_id, project_id))}


@router.delete(
    "/backups/{backup_id}",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422),
)
def delete_backup(
    project_id: str, backup_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    authorize(request, project_id, "backup:delete")
    workflows.delete_backup(c, project_id, backup_id)
    return Response(status_code=202)


@router.get("/instances/{instance_id}/backups", responses=answers(BackupList, 404))
def list_instance_backups(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    _, project_id = authorize_instance(request, project_id, instance_id, "backup:index")
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
    query = live_backups().where(Backup.project_id == project_id, Backup.instance_id == instance_id)
    return _page(request, c, query, limit, marker)


@router.get(
    "/instances/{instance_id}/restore_window", responses=answers(RestoreWindowOne, 404, 503)
)
def show_restore_window(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """Cove extension: the moments the instance can be restored to (``restore_time``)."""
    _, project_id = authorize_instance(request, project_id, instance_id, "backup:index")
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
        window = restore_window(s, c.settings, project_id, instance_id)
    return {"restore_window": restore_window_view(instance_id, window)}
