"""The backup workflows behind ``/backups``: create and delete.

A backup is recorded (NEW, counted against the ``backups`` quota, in the project's lock) and
its task manager told; a lost cast loses nothing, as for instance tasks. A delete marks the
backup and every incremental built on it deleted at once; the task managers remove their
artifacts from the store (a store that refuses puts the backup back as DELETE_FAILED). What a
restore checks is in :mod:`cove.api.restore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready, require
from cove.api.instances import tell_task_managers
from cove.api.schemas import BackupCreate
from cove.api.validate import checked, checked_text
from cove.common.errors import (
    BadRequest,
    InstanceNotReady,
    NotImplementedFault,
    Unprocessable,
)
from cove.common.ids import new_id, utcnow
from cove.common.keys import current_backup_key
from cove.common.text import shown
from cove.db.backups import (
    descendants,
    get_backup,
    latest_completed,
    running_backup_of,
    store_json,
    store_of,
)
from cove.db.instances import get_instance
from cove.db.models import Backup
from cove.db.quotas import check_backup_quota, lock_project
from cove.domain import names
from cove.domain.backups import BackupStatus
from cove.domain.capabilities import Capability
from cove.rpc import RequestContext
from cove.storage import check_container, configured_store


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
    NotImplementedFault (``restore_from``), InstanceNotFound, BackupNotFound (a parent not of
    this project), OperationNotSupported (no backups, or no incrementals, for the datastore),
    InstanceNotReady (not serving, or a backup already running) and QuotaExceeded.
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
    container = _container(c, spec)
    ds_name = check_ready(c, project_id, instance_id, Capability.BACKUPS)
    backup_id = new_id()
    key_id, _ = current_backup_key(c.settings.backup_keys_dir)
    with c.db.session() as s:
        lock_project(s, project_id)
        inst = get_instance(s, instance_id, project_id)
        if running_backup_of(s, [instance_id]):
            raise InstanceNotReady(
                f"Instance {instance_id} is not ready. (A backup of it is running.)"
            )
        parent = _parent(s, project_id, instance_id, spec)
        if parent is not None:
            require(ds_name, Capability.INCREMENTAL_BACKUPS)
        check_backup_quota(s, c.settings, project_id)
        store = store_of(parent) if parent is not None else configured_store(c.settings, container)
        now = utcnow()
        row = Backup(
            id=backup_id,
            project_id=project_id,
            name=name,
            description=description,
            instance_id=instance_id,
            datastore_version_id=inst.datastore_version_id,
            parent_id=parent.id if parent is not None else None,
            status=BackupStatus.NEW.value,
            store=store_json(store),
            artifact=f"{instance_id}/{backup_id}.cbk",
            key_id=key_id,
            meta="{}",
            created=now,
            updated=now,
        )
        s.add(row)
        s.flush()
        view = render(get_backup(s, backup_id))
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
        return check_container(spec.swift_container)
    except ValueError as exc:
        raise BadRequest(f"Invalid container: {exc}.") from None


def _parent(s: Session, project_id: str, instance_id: str, spec: BackupCreate) -> Backup | None:
    """The backup an incremental builds on: the one named, else (``incremental: 1``) the
    instance's newest completed one, else none (a full backup)."""
    if spec.parent_id:
        parent = get_backup(s, checked_text(spec.parent_id, "parent_id"), project_id)
        if parent.instance_id != instance_id:
            raise BadRequest(f"Backup {parent.id} is not a backup of instance {instance_id}.")
        if parent.status != BackupStatus.COMPLETED.value:
            raise Unprocessable(f"Backup {parent.id} is not completed; it cannot be a parent.")
        return parent
    if spec.incremental:
        return latest_completed(s, instance_id)
    return None


def delete_backup(c: ApiContext, project_id: str, backup_id: str) -> None:
    """Mark the backup and every incremental built on it deleted; the task managers remove
    their artifacts. Raises BackupNotFound, Unprocessable (one of them is still running)."""
    with c.db.session() as s:
        backup = get_backup(s, backup_id, project_id)
        doomed = [backup, *descendants(s, backup.id)]
        running = [b.id for b in doomed if BackupStatus(b.status).running]
        if running:
            raise Unprocessable(
                f"Backup {running[0]} is still running; it can be deleted once it ends."
            )
        now = utcnow()
        for row in doomed:
            row.deleted = True
            row.deleted_at = now
            row.updated = now
