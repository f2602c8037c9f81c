"""Queries on backup schedules shared by the API and the task managers' scheduler.

A due run is taken by :func:`claim_run`, one conditional update of ``next_run``: of several
task managers passing at once, exactly one moves it on, and only that one records the backup,
in the same transaction. Retention is applied once per completed backup the same way, by
:func:`claim_prune` on ``pruned_for``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, false, or_, select, true, update
from sqlalchemy.orm import Session

from cove.common.errors import BackupScheduleNotFound
from cove.common.text import shown
from cove.db.backups import MAX_CHAIN
from cove.db.models import Backup, BackupSchedule, BackupScheduleRun
from cove.domain.backups import BackupStatus
from cove.domain.schedules import BackupFact, Retention


def get_schedule(
    session: Session, schedule_id: str, project_id: str | None = None
) -> BackupSchedule:
    """The schedule ``schedule_id`` (of ``project_id`` if given). Raises
    BackupScheduleNotFound."""
    row = session.get(BackupSchedule, schedule_id)
    if row is None or (project_id is not None and row.project_id != project_id):
        raise BackupScheduleNotFound(f"Backup schedule {shown(schedule_id)} could not be found.")
    return row


def list_schedules(
    session: Session, project_id: str, instance_id: str | None = None
) -> list[BackupSchedule]:
    """The project's schedules (of one instance if given), oldest first."""
    query = select(BackupSchedule).where(BackupSchedule.project_id == project_id)
    if instance_id is not None:
        query = query.where(BackupSchedule.instance_id == instance_id)
    return list(session.scalars(query.order_by(BackupSchedule.created, BackupSchedule.id)))


def retention_of(row: BackupSchedule) -> Retention:
    return Retention(keep_count=row.keep_count, keep_days=row.keep_days)


def delete_instance_schedules(session: Session, instance_id: str) -> int:
    """Delete the instance's schedules (their backups stay); returns how many there were."""
    ids = list(
        session.scalars(select(BackupSchedule.id).where(BackupSchedule.instance_id == instance_id))
    )
    delete_schedules(session, ids)
    return len(ids)


def delete_schedules(session: Session, schedule_ids: Sequence[str]) -> None:
    """Delete schedules and what records their runs; their backups stay."""
    if not schedule_ids:
        return
    ids = list(schedule_ids)
    session.execute(delete(BackupScheduleRun).where(BackupScheduleRun.schedule_id.in_(ids)))
    session.execute(delete(BackupSchedule).where(BackupSchedule.id.in_(ids)))


# -- running schedules -------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """A schedule whose run has come, as read before it is claimed."""

    schedule_id: str
    next_run: datetime
    cron: str


def due_schedules(session: Session, now: datetime) -> list[Due]:
    """The enabled schedules whose ``next_run`` is not after ``now``, earliest first."""
    rows = session.execute(
        select(BackupSchedule.id, BackupSchedule.next_run, BackupSchedule.cron)
        .where(BackupSchedule.enabled == true(), BackupSchedule.next_run <= now)
        .order_by(BackupSchedule.next_run, BackupSchedule.id)
    ).all()
    return [Due(schedule_id, next_run, cron) for schedule_id, next_run, cron in rows]


def claim_run(session: Session, due: Due, following: datetime, now: datetime) -> bool:
    """Take the run ``due`` describes: move the schedule's ``next_run`` on to ``following``,
    if it is still enabled, due at that time and on that cron expression. True for exactly one
    of the transactions that try; call it first in the transaction, which then records the
    run (a rollback gives the run back)."""
    moved = session.execute(
        update(BackupSchedule)
        .where(
            BackupSchedule.id == due.schedule_id,
            BackupSchedule.enabled == true(),
            BackupSchedule.next_run == due.next_run,
            BackupSchedule.cron == due.cron,
        )
        .values(next_run=following, updated=now)
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def note_refused(session: Session, due: Due, message: str) -> bool:
    """Record why the run ``due`` describes could not start, leaving it due; False when the
    schedule moved on meanwhile (another task manager ran it, or it was changed)."""
    moved = session.execute(
        update(BackupSchedule)
        .where(BackupSchedule.id == due.schedule_id, BackupSchedule.next_run == due.next_run)
        .values(last_error=message)
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def latest_completed_run(session: Session, schedule_id: str) -> Backup | None:
    """The schedule's newest live completed backup (by when it ran)."""
    return session.scalars(
        select(Backup)
        .join(BackupScheduleRun, BackupScheduleRun.backup_id == Backup.id)
        .where(
            BackupScheduleRun.schedule_id == schedule_id,
            Backup.deleted == false(),
            Backup.status == BackupStatus.COMPLETED.value,
        )
        .order_by(BackupScheduleRun.run_at.desc(), Backup.id.desc())
        .limit(1)
    ).first()


def chain_taken(session: Session, backup: Backup) -> list[datetime]:
    """When each backup a restore of ``backup`` reads was taken, its full backup first: the
    scheduler's time for a schedule's run, the creation time for another backup."""
    taken: list[datetime] = []
    link: Backup | None = backup
    while link is not None and len(taken) <= MAX_CHAIN:
        run = session.get(BackupScheduleRun, link.id)
        taken.append(run.run_at if run is not None else link.created)
        link = session.get(Backup, link.parent_id) if link.parent_id is not None else None
    return list(reversed(taken))


# -- retention ---------------------------------------------------------------------------------


def awaiting_retention(session: Session) -> list[tuple[str, str]]:
    """(schedule id, backup id) of the schedules whose last backup ended (or is gone) since
    their retention was last applied."""
    ended = [BackupStatus.COMPLETED.value, BackupStatus.FAILED.value]
    rows = session.execute(
        select(BackupSchedule.id, BackupSchedule.last_backup_id)
        .join(Backup, Backup.id == BackupSchedule.last_backup_id)
        .where(
            or_(BackupSchedule.pruned_for.is_(None), BackupSchedule.pruned_for != Backup.id),
            or_(Backup.status.in_(ended), Backup.deleted == true()),
        )
    ).all()
    return [(schedule_id, backup_id) for schedule_id, backup_id in rows if backup_id is not None]


def claim_prune(session: Session, schedule_id: str, backup_id: str) -> bool:
    """Take the application of the schedule's retention after ``backup_id`` (its last backup)
    ended: True for exactly one of the transactions that try; call it first in the
    transaction that prunes."""
    moved = session.execute(
        update(BackupSchedule)
        .where(
            BackupSchedule.id == schedule_id,
            BackupSchedule.last_backup_id == backup_id,
            or_(BackupSchedule.pruned_for.is_(None), BackupSchedule.pruned_for != backup_id),
        )
        .values(pruned_for=backup_id)
    )
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def retention_facts(session: Session, schedule: BackupSchedule) -> list[BackupFact]:
    """Every live backup of the schedule's instance as retention sees it: the schedule's own
    aged by when they ran, the others by when they were made."""
    runs = dict(
        session.execute(
            select(BackupScheduleRun.backup_id, BackupScheduleRun.run_at).where(
                BackupScheduleRun.schedule_id == schedule.id
            )
        ).all()
    )
    rows = session.execute(
        select(Backup.id, Backup.parent_id, Backup.status, Backup.created).where(
            Backup.instance_id == schedule.instance_id, Backup.deleted == false()
        )
    ).all()
    return [
        BackupFact(
            id=backup_id,
            parent_id=parent_id,
            status=BackupStatus(status),
            taken_at=runs.get(backup_id, created),
            scheduled=backup_id in runs,
        )
        for backup_id, parent_id, status, created in rows
    ]
