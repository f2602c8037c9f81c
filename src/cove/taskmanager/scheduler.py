"""Backup schedules, run by every task manager's monitor: start the backups whose time has
come, and apply each schedule's retention once its latest backup completed.

Several task managers pass over the same schedules; a due run is taken by a conditional update
of the schedule's ``next_run`` (cove.db.schedules.claim_run) in the transaction that records
the backup, so exactly one of them records it, as ``POST /backups`` would
(cove.db.backup_records), and casts it to the task managers. A run that cannot start (the
instance is not ready, a backup of it is running, the quota is used up) rolls back: the run
stays due, the reason is kept in ``last_error``, and the next pass tries again. Runs missed
while Cove was down are not made up: one run, then the next time after now.

Retention (cove.domain.schedules.to_prune) marks backups deleted as ``DELETE /backups`` does;
the task managers' purge removes their artifacts. It is applied once per completed backup,
by the task manager whose conditional update of ``pruned_for`` succeeds.

The clock is a parameter, so tests run schedules on a clock of their own; only what the
schedules decide (when they run, how old their backups are) follows it, while the records
of the backups keep the real time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from cove.common.errors import CoveError, InstanceNotFound, ServiceUnavailable, Unprocessable
from cove.common.ids import utcnow
from cove.common.settings import Settings
from cove.db.backup_records import BackupRequest, delete_with_descendants, record_backup
from cove.db.backups import MAX_CHAIN
from cove.db.engine import Database
from cove.db.models import Backup, BackupSchedule, BackupScheduleRun
from cove.db.schedules import (
    Due,
    awaiting_retention,
    chain_taken,
    claim_prune,
    claim_run,
    delete_schedules,
    due_schedules,
    get_schedule,
    latest_completed_run,
    note_refused,
    retention_facts,
    retention_of,
)
from cove.domain.backups import BackupStatus
from cove.domain.schedules import next_run, starts_new_chain, to_prune

LOG = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Scheduler:
    """Runs the schedules of the control database ``db``; ``start`` hands a recorded backup
    to the task managers (a cast: its loss is made good by their monitor)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        start: Callable[[str], None],
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.start = start
        self.clock = clock
        #: The last refusal logged per schedule, so a run refused at every pass is logged once.
        self._refused: dict[str, str] = {}

    def tick(self) -> None:
        """One pass: run what is due, then apply retention where a backup completed."""
        self.run_due()
        self.apply_retention()

    # -- runs ----------------------------------------------------------------------------------

    def run_due(self) -> list[str]:
        """Record and start the backup of every due schedule this task manager takes; returns
        their ids."""
        now = self.clock()
        with self.db.session() as s:
            due = due_schedules(s, now)
        started = []
        for item in due:
            backup_id = self.run_one(item, now)
            if backup_id is not None:
                started.append(backup_id)
        return started

    def run_one(self, due: Due, now: datetime) -> str | None:
        """Take the run ``due`` describes (read earlier, perhaps long before), record its
        backup and start it; None when another task manager took it first, the schedule
        changed meanwhile, or the run could not start."""
        try:
            following = next_run(due.cron, now)
        except ValueError:
            LOG.error("backup schedule %s has a cron expression that never runs", due.schedule_id)
            return None
        try:
            with self.db.session() as s:
                if not claim_run(s, due, following, now):
                    return None  # another task manager took it, or the schedule changed
                backup_id = self._record(s, due.schedule_id, now)
        except InstanceNotFound:
            self._forget(due.schedule_id)
            return None
        except CoveError as exc:
            self._refuse(due, exc.message)
            return None
        self._refused.pop(due.schedule_id, None)
        LOG.info("backup schedule %s started backup %s", due.schedule_id, backup_id)
        try:
            self.start(backup_id)
        except ServiceUnavailable as exc:
            LOG.warning(
                "backup %s is recorded; the task managers will take it up (%s)",
                backup_id,
                exc.message,
            )
        return backup_id

    def _record(self, s: Session, schedule_id: str, now: datetime) -> str:
        schedule = get_schedule(s, schedule_id)
        parent = self._parent(s, schedule, now)
        label = schedule.name or "scheduled"
        row = record_backup(
            s,
            self.settings,
            BackupRequest(
                project_id=schedule.project_id,
                instance_id=schedule.instance_id,
                name=f"{label} {now:%Y-%m-%d %H:%M}",
                description=f"Made by backup schedule {schedule.id}.",
                parent_id=parent.id if parent is not None else None,
            ),
        )
        s.add(BackupScheduleRun(backup_id=row.id, schedule_id=schedule.id, run_at=now))
        schedule.last_run = now
        schedule.last_backup_id = row.id
        schedule.last_error = None
        return row.id

    @staticmethod
    def _parent(s: Session, schedule: BackupSchedule, now: datetime) -> Backup | None:
        """What an incremental schedule's run builds on: its newest completed backup, unless
        a new chain starts (cove.domain.schedules.starts_new_chain). None for a full backup."""
        if not schedule.incremental:
            return None
        latest = latest_completed_run(s, schedule.id)
        if latest is None:
            return None
        taken = chain_taken(s, latest)
        if starts_new_chain(taken, retention_of(schedule), now, MAX_CHAIN):
            return None
        return latest

    def _refuse(self, due: Due, message: str) -> None:
        """The run could not start: it stays due, with the reason kept for the user."""
        try:
            with self.db.session() as s:
                noted = note_refused(s, due, message)
        except Exception:
            LOG.warning("could not record why schedule %s did not run", due.schedule_id)
            return
        if noted and self._refused.get(due.schedule_id) != message:
            self._refused[due.schedule_id] = message
            LOG.info(
                "backup schedule %s: the run is put off until the next pass: %s",
                due.schedule_id,
                message,
            )

    def _forget(self, schedule_id: str) -> None:
        """The schedule's instance is gone (its deletion removes its schedules; this covers a
        deletion that ended before it could)."""
        with self.db.session() as s:
            delete_schedules(s, [schedule_id])
        self._refused.pop(schedule_id, None)
        LOG.info("backup schedule %s deleted: its instance is gone", schedule_id)

    # -- retention ---------------------------------------------------------------------------

    def apply_retention(self) -> list[str]:
        """Apply the retention of every schedule whose last backup ended since it was last
        applied; returns the ids of the backups marked deleted."""
        now = self.clock()
        with self.db.session() as s:
            waiting = awaiting_retention(s)
        pruned: list[str] = []
        for schedule_id, backup_id in waiting:
            try:
                pruned += self._prune(schedule_id, backup_id, now)
            except CoveError as exc:
                LOG.warning("retention of backup schedule %s failed: %s", schedule_id, exc.message)
        return pruned

    def _prune(self, schedule_id: str, backup_id: str, now: datetime) -> list[str]:
        with self.db.session() as s:
            if not claim_prune(s, schedule_id, backup_id):
                return []
            schedule = s.get(BackupSchedule, schedule_id)
            last = s.get(Backup, backup_id)
            if schedule is None or last is None or last.status != BackupStatus.COMPLETED.value:
                return []  # a failed run prunes nothing
            doomed = to_prune(retention_facts(s, schedule), retention_of(schedule), now)
            deleted: list[str] = []
            when = utcnow()
            for pruned_id in sorted(doomed):
                row = s.get(Backup, pruned_id)
                if row is None or row.deleted:
                    continue  # taken with an ancestor pruned before it
                try:
                    deleted += [b.id for b in delete_with_descendants(s, row, when)]
                except Unprocessable as exc:  # a descendant runs: never pruned (to_prune)
                    LOG.warning("backup schedule %s: %s", schedule_id, exc.message)
        if deleted:
            LOG.info(
                "backup schedule %s: retention deleted %d backups: %s",
                schedule_id,
                len(deleted),
                ", ".join(deleted),
            )
        return deleted
