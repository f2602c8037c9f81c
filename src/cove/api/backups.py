"""The backup workflows behind ``/backups``: create and delete.

A backup is recorded (NEW, counted against the ``backups`` quota, in the project's lock: see
:mod:`cove.db.backup_records`, which backup schedules share) and its task manager told; a lost
cast loses nothing, as for instance tasks. A delete marks the backup and every incremental built
on it deleted at once; the task managers remove their artifacts from the store (a store that
refuses puts the backup back as DELETE_FAILED). What a restore checks is in
:mod:`cove.api.restore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cove.api.context import ApiContext
from cove.api.instances import tell_task_managers
from cove.api.schemas import BackupCreate
from cove.api.validate import checked, checked_text
from cove.common.errors import BadRequest, NotImplementedFault
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db.backup_records import BackupRequest, delete_with_descendants, record_backup
from cove.db.backups import get_backup
from cove.db.models import Backup
from cove.domain import names
from cove.rpc import RequestContext
from cove.storage import check_container


def create_backup(
    c: ApiContext,
    ctx: RequestContext,
    project_id: str,
    spec: BackupCreate,
    render: Callable[[Backup], dict[str, Any]],
) -> dict[str, Any]:
    """Record a NEW backup of the project's instance and hand it to the task managers;
    returns its view as ``render`` makes it when recorded (a task manager may move it on at
    once).

    Raises BadRequest (a missing instance, a bad name, container or storage driver),
    NotImplementedFault (``restore_from``), and what :func:`cove.db.backup_records.record_backup`
    raises: InstanceNotFound, BackupNotFound, OperationNotSupported, InstanceNotReady and
    QuotaExceeded among others.
    """
    if spec.restore_from is not None:
        raise NotImplementedFault("Importing a backup ('restore_from') is not supported by Cove.")
    if not spec.instance:
        raise BadRequest("instance is missing.")
    instance_id = checked_text(spec.instance, "instance")
    name = checked(names.instance_name, spec.name if spec.name is not None else "")
    description = checked_text(spec.description, "description") if spec.description else None
    if description is not None and len(description) > 255:
        raise BadRequest("A backup's description has at most 255 characters.")
    request = BackupRequest(
        project_id=project_id,
        instance_id=instance_id,
        name=name,
        description=description,
        parent_id=checked_text(spec.parent_id, "parent_id") if spec.parent_id else None,
        incremental=bool(spec.incremental),
        container=_container(c, spec),
    )
    with c.db.session() as s:
        row = record_backup(s, c.settings, request)
        backup_id = row.id
        view = render(row)
    tell_task_managers(instance_id, "backup", lambda: c.taskmanager.create_backup(ctx, backup_id))
    return view


def _container(c: ApiContext, spec: BackupCreate) -> str | None:
    if spec.storage_driver is not None and spec.storage_driver != c.settings.backup_store:
        raise BadRequest(
            f"Storage driver '{shown(spec.storage_driver)}' is not configured; this deployment "
            f"stores backups in '{c.settings.backup_store}'."
        )
    if spec.swift_container is None:
        return None
    try:
        name = check_container(spec.swift_container)
    except ValueError as exc:
        raise BadRequest(f"Invalid container: {exc}.") from None
    allowed = [c.settings.backup_container, *c.settings.allowed_containers]
    if name not in allowed:
        raise BadRequest(
            f"Container '{name}' is not one this deployment stores backups in "
            f"(allowed: {', '.join(allowed)})."
        )
    return name


def delete_backup(c: ApiContext, project_id: str, backup_id: str) -> None:
    """Mark the backup and every incremental built on it deleted; the task managers remove
    their artifacts. Raises BackupNotFound, Unprocessable (one of them is still running)."""
    with c.db.session() as s:
        delete_with_descendants(s, get_backup(s, backup_id, project_id), utcnow())
