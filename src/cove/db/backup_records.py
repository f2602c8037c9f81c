"""Recording a new backup and marking backups deleted: the one way both happen, whoever asks.

``POST /backups`` (cove.api.backups) and the task managers' backup schedules
(cove.taskmanager.scheduler) record a backup through :func:`record_backup`, so a scheduled
backup is checked, counted and stored exactly as one asked for through the API.
``DELETE /backups`` and schedule retention mark backups deleted through
:func:`delete_with_descendants`; the task managers then remove their artifacts
(cove.taskmanager.backup.purge_deleted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from cove.common.errors import (
    BadRequest,
    InstanceNotReady,
    OperationNotSupported,
    Unprocessable,
)
from cove.common.ids import new_id, utcnow
from cove.common.settings import Settings
from cove.db.backups import (
    descendants,
    get_backup,
    latest_completed,
    running_backup_of,
    store_json,
    store_of,
)
from cove.db.instances import get_instance, snapshot
from cove.db.models import Backup, Instance
from cove.db.quotas import check_backup_quota, lock_project
from cove.domain.backups import BackupStatus
from cove.domain.capabilities import Capability, capabilities
from cove.domain.status import can_act, compute_status
from cove.storage import configured_store


@dataclass(frozen=True)
class BackupRequest:
    """A backup to record, its text already checked by the caller."""

    project_id: str
    instance_id: str
    name: str
    description: str | None = None
    #: The backup to build on (an incremental); it must be a completed backup of the instance.
    parent_id: str | None = None
    #: Without ``parent_id``: build on the instance's newest completed backup, if any.
    incremental: bool = False
    #: The store's container (checked by the caller); None: the configured one.
    container: str | None = None


def record_backup(s: Session, settings: Settings, req: BackupRequest) -> Backup:
    """Record a NEW backup of the project's instance in ``s``, counted against the project's
    ``backups`` quota; the caller commits, then tells the task managers.

    Raises InstanceNotFound, OperationNotSupported (no backups, or no incrementals, for the
    datastore), InstanceNotReady (not serving, or a backup already running), BackupNotFound
    (a parent not of this project), BadRequest (a parent of another instance), Unprocessable
    (a parent not completed) and QuotaExceeded.
    """
    lock_project(s, req.project_id)
    inst = get_instance(s, req.instance_id, req.project_id)
    datastore = inst.datastore_version.datastore.name
    require_capability(datastore, Capability.BACKUPS)
    if inst.replica_of_id is not None:
        raise InstanceNotReady(
            f"Instance {inst.id} is a read-only replica of instance {inst.replica_of_id}; back "
            "up its source instead."
        )
    if running_backup_of(s, [inst.id]):
        raise InstanceNotReady(f"Instance {inst.id} is not ready. (A backup of it is running.)")
    _check_ready(settings, inst)
    parent = _parent(s, req)
    if parent is not None:
        require_capability(datastore, Capability.INCREMENTAL_BACKUPS)
    check_backup_quota(s, settings, req.project_id)
    store = store_of(parent) if parent is not None else configured_store(settings, req.container)
    backup_id = new_id()
    now = utcnow()
    s.add(
        Backup(
            id=backup_id,
            project_id=req.project_id,
            name=req.name,
            description=req.description,
            instance_id=inst.id,
            datastore_version_id=inst.datastore_version_id,
            parent_id=parent.id if parent is not None else None,
            status=BackupStatus.NEW.value,
            store=store_json(store),
            artifact=f"{inst.id}/{backup_id}.cbk",
            # Chosen by the task manager when the backup starts.
            key_id="",
            meta="{}",
            created=now,
            updated=now,
        )
    )
    s.flush()
    return get_backup(s, backup_id)


def require_capability(datastore: str, capability: Capability) -> None:
    """Raises OperationNotSupported (501) unless ``datastore`` has ``capability``."""
    if capability not in capabilities(datastore):
        raise OperationNotSupported(
            f"Operation '{capability.value}' is not supported for datastore {datastore}."
        )


def _check_ready(settings: Settings, inst: Instance) -> None:
    snap = snapshot(inst, inst.guest)
    now = utcnow()
    if not can_act(snap, now, settings.heartbeat_interval):
        status = compute_status(snap, now, settings.heartbeat_interval)
        raise InstanceNotReady(f"Instance {inst.id} is not ready. (Status is {status.status}).")


def _parent(s: Session, req: BackupRequest) -> Backup | None:
    """The backup an incremental builds on: the one named, else (``incremental``) the
    instance's newest completed one, else none (a full backup)."""
    if req.parent_id:
        parent = get_backup(s, req.parent_id, req.project_id)
        if parent.instance_id != req.instance_id:
            raise BadRequest(f"Backup {parent.id} is not a backup of instance {req.instance_id}.")
        if parent.status != BackupStatus.COMPLETED.value:
            raise Unprocessable(f"Backup {parent.id} is not completed; it cannot be a parent.")
        return parent
    if req.incremental:
        return latest_completed(s, req.instance_id)
    return None


def delete_with_descendants(s: Session, backup: Backup, now: datetime) -> list[Backup]:
    """Mark ``backup`` and every incremental built on it deleted; returns them. Raises
    Unprocessable (one of them is still running), changing nothing."""
    doomed = [backup, *descendants(s, backup.id)]
    running = [b.id for b in doomed if BackupStatus(b.status).running]
    if running:
        raise Unprocessable(
            f"Backup {running[0]} is still running; it can be deleted once it ends."
        )
    for row in doomed:
        row.deleted = True
        row.deleted_at = now
        row.updated = now
    return doomed
