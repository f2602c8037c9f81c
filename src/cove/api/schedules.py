"""The backup schedule workflows behind ``/backup_schedules`` (a Cove extension): create,
update, delete.

A schedule belongs to one instance of the project; the task managers run it
(cove.taskmanager.scheduler). Its ``next_run`` is set here whenever its cron expression changes
or it is enabled again, from now: runs missed while it was disabled are not made up. Changing
its retention has it applied again after the schedule's latest completed backup.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import require
from cove.api.schemas import BackupScheduleCreate, BackupScheduleUpdate
from cove.api.validate import checked_text
from cove.common.errors import BadRequest, InstanceNotReady
from cove.common.ids import new_id, utcnow
from cove.db.instances import get_instance
from cove.db.models import BackupSchedule
from cove.db.schedules import delete_schedules, get_schedule
from cove.domain.capabilities import Capability
from cove.domain.schedules import Retention, check_cron, next_run

NAME_MAX = 200


def create_schedule(c: ApiContext, project_id: str, spec: BackupScheduleCreate) -> BackupSchedule:
    """Record a schedule of backups of the project's instance.

    Raises BadRequest (a bad cron expression, retention or name), InstanceNotFound and
    OperationNotSupported (no backups, or no incrementals, for the instance's datastore).
    """
    instance_id = checked_text(spec.instance_id, "instance_id")
    cron = _cron(spec.cron)
    retention = _retention(spec.keep_count, spec.keep_days)
    name = _name(spec.name)
    now = utcnow()
    with c.db.session() as s:
        _check_instance(s, project_id, instance_id, spec.incremental)
        row = BackupSchedule(
            id=new_id(),
            project_id=project_id,
            instance_id=instance_id,
            name=name,
            cron=cron,
            incremental=spec.incremental,
            keep_count=retention.keep_count,
            keep_days=retention.keep_days,
            enabled=spec.enabled,
            next_run=next_run(cron, now),
            created=now,
            updated=now,
        )
        s.add(row)
    return row


def update_schedule(
    c: ApiContext, project_id: str, schedule_id: str, spec: BackupScheduleUpdate
) -> BackupSchedule:
    """Change the fields ``spec`` sets. Raises BackupScheduleNotFound, BadRequest,
    OperationNotSupported (``incremental`` where the datastore has no incrementals)."""
    given = spec.model_fields_set
    for field in ("cron", "incremental", "enabled"):
        if field in given and getattr(spec, field) is None:
            raise BadRequest(f"'{field}' cannot be null.")
    now = utcnow()
    with c.db.session() as s:
        row = get_schedule(s, schedule_id, project_id)
        reschedule = False
        if spec.cron is not None:
            cron = _cron(spec.cron)
            reschedule = cron != row.cron
            row.cron = cron
        if "name" in given:
            row.name = _name(spec.name)
        if spec.incremental is not None:
            if spec.incremental:
                _check_instance(s, project_id, row.instance_id, incremental=True)
            row.incremental = spec.incremental
        if given & {"keep_count", "keep_days"}:
            retention = _retention(
                spec.keep_count if "keep_count" in given else row.keep_count,
                spec.keep_days if "keep_days" in given else row.keep_days,
            )
            row.keep_count, row.keep_days = retention.keep_count, retention.keep_days
            row.pruned_for = None  # applied again after the latest completed backup
        if spec.enabled is not None:
            reschedule = reschedule or (spec.enabled and not row.enabled)
            row.enabled = spec.enabled
        if reschedule:
            row.next_run = next_run(row.cron, now)
            row.last_error = None
        row.updated = now
    return row


def delete_schedule(c: ApiContext, project_id: str, schedule_id: str) -> None:
    """Delete the schedule; its backups stay. Raises BackupScheduleNotFound."""
    with c.db.session() as s:
        delete_schedules(s, [get_schedule(s, schedule_id, project_id).id])


def _check_instance(s: Session, project_id: str, instance_id: str, incremental: bool) -> None:
    inst = get_instance(s, instance_id, project_id)
    datastore = inst.datastore_version.datastore.name
    require(datastore, Capability.BACKUPS)
    if incremental:
        require(datastore, Capability.INCREMENTAL_BACKUPS)
    if inst.replica_of_id is not None:
        raise InstanceNotReady(
            f"Instance {instance_id} is a read-only replica of instance {inst.replica_of_id}; "
            "schedule the backups of its source instead."
        )


def _cron(text: str) -> str:
    try:
        return check_cron(checked_text(text, "cron"))
    except ValueError as exc:
        raise BadRequest(f"Invalid cron expression: {exc}.") from None


def _retention(keep_count: int | None, keep_days: int | None) -> Retention:
    try:
        return Retention(keep_count=keep_count, keep_days=keep_days)
    except ValueError as exc:
        raise BadRequest(f"Invalid retention: {exc}.") from None


def _name(name: str | None) -> str | None:
    if name is None:
        return None
    name = checked_text(name, "name")
    if not name.strip() or len(name) > NAME_MAX or any(ord(ch) < 32 for ch in name):
        raise BadRequest(
            f"A backup schedule's name has 1 to {NAME_MAX} characters, none of them control "
            "characters."
        )
    return name
