"""A due backup schedule is taken by exactly one task manager, on SQLite and on a real
PostgreSQL server: several schedulers, each with a database connection pool of its own as a
task manager process has, pass over the same due schedule at the same moment; one records the
backup, the others find the run taken. Retention is applied once per completed backup the same
way."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from cove.common.ids import new_id, utcnow
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import (
    Backup,
    BackupSchedule,
    BackupScheduleRun,
    DatastoreVersion,
    GuestState,
    Instance,
)
from cove.db.schedules import Due, claim_run, due_schedules
from cove.domain.backups import BackupStatus
from cove.domain.schedules import next_run
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.taskmanager.scheduler import Scheduler

pytestmark = pytest.mark.integration

MANAGERS = 6
ROUNDS = 5


def settings_for(tmp_path: Path, db: Database) -> Settings:
    return load_settings(data_dir=tmp_path, database_url=db.url)


def seed(db: Database) -> tuple[str, str]:
    """A serving instance and a daily schedule of it; returns their ids."""
    instance_id, schedule_id, now = new_id(), new_id(), utcnow()
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        s.flush()
        version = s.scalars(select(DatastoreVersion)).one()
        s.add(
            Instance(
                id=instance_id,
                project_id="p",
                name="orders",
                flavor_id="1",
                datastore_version_id=version.id,
                volume_size=1,
                compute_driver="local",
                task=Task.NONE.value,
                compute_state=ComputeState.ACTIVE.value,
                port=5432,
                created=now,
                updated=now,
            )
        )
        s.flush()
        s.add(
            GuestState(
                instance_id=instance_id,
                status=GuestStatus.HEALTHY.value,
                payload="{}",
                heartbeat_at=now + timedelta(hours=1),  # stays fresh while the test runs
            )
        )
        s.add(
            BackupSchedule(
                id=schedule_id,
                project_id="p",
                instance_id=instance_id,
                cron="0 3 * * *",
                incremental=False,
                keep_count=2,
                enabled=True,
                next_run=next_run("0 3 * * *", now),
                created=now,
                updated=now,
            )
        )
    return instance_id, schedule_id


def together(count: int, work: object) -> None:
    """Run ``work(i)`` in ``count`` threads released at the same moment."""
    gate = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        gate.wait()
        try:
            work(i)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_the_claim_is_taken_once(db: Database) -> None:
    _, schedule_id = seed(db)
    with db.session() as s:
        sched = s.get(BackupSchedule, schedule_id)
        assert sched is not None
        due = Due(schedule_id, sched.next_run, sched.cron)
    taken: list[int] = []
    databases = [Database(db.url) for _ in range(MANAGERS)]
    try:

        def claim(i: int) -> None:
            with databases[i].session() as s:
                if claim_run(s, due, due.next_run + timedelta(days=1), utcnow()):
                    taken.append(i)

        together(MANAGERS, claim)
    finally:
        for d in databases:
            d.dispose()
    assert len(taken) == 1
    with db.session() as s:
        after = s.get(BackupSchedule, schedule_id)
        assert after is not None and after.next_run == due.next_run + timedelta(days=1)


def test_schedulers_racing_record_one_backup_per_run(tmp_path: Path, db: Database) -> None:
    instance_id, schedule_id = seed(db)
    settings = settings_for(tmp_path, db)
    with db.session() as s:
        sched = s.get(BackupSchedule, schedule_id)
        assert sched is not None
        now = [sched.next_run]
    started: list[str] = []
    lock = threading.Lock()

    def start(backup_id: str) -> None:
        with lock:
            started.append(backup_id)

    databases = [Database(db.url) for _ in range(MANAGERS)]
    managers = [Scheduler(settings, d, start, lambda: now[0]) for d in databases]
    try:
        for round_ in range(ROUNDS):
            together(MANAGERS, lambda i: managers[i].run_due())
            assert len(started) == round_ + 1
            with db.session() as s:
                s.execute(
                    update(Backup)
                    .where(Backup.id == started[-1])
                    .values(status=BackupStatus.COMPLETED.value)
                )
            # Retention after it, by every scheduler at once: applied once.
            together(MANAGERS, lambda i: managers[i].apply_retention())
            with db.session() as s:
                sched = s.get(BackupSchedule, schedule_id)
                assert sched is not None
                now[0] = sched.next_run
    finally:
        for d in databases:
            d.dispose()
    with db.session() as s:
        runs = s.scalar(select(func.count()).select_from(BackupScheduleRun))
        live = list(
            s.scalars(
                select(Backup.id)
                .where(Backup.instance_id == instance_id, Backup.deleted.is_(False))
                .order_by(Backup.created)
            )
        )
        total = s.scalar(select(func.count()).select_from(Backup))
    assert runs == total == ROUNDS == len(set(started))
    assert live == started[-2:]


def test_a_run_read_before_another_took_it_is_not_run_again(tmp_path: Path, db: Database) -> None:
    """A task manager that read the due run just before another took (and even finished) it
    does not run it a second time: the backup of the other no longer runs, so only the claim
    stands in the way."""
    _, schedule_id = seed(db)
    settings = settings_for(tmp_path, db)
    with db.session() as s:
        sched = s.get(BackupSchedule, schedule_id)
        assert sched is not None
        now = sched.next_run
    started: list[str] = []
    first, late = (Scheduler(settings, db, started.append, lambda: now) for _ in range(2))
    with db.session() as s:
        stale = due_schedules(s, now)
    assert [d.schedule_id for d in stale] == [schedule_id]
    assert len(first.run_due()) == 1
    with db.session() as s:
        s.execute(
            update(Backup)
            .where(Backup.id == started[0])
            .values(status=BackupStatus.COMPLETED.value)
        )
    assert late.run_one(stale[0], now) is None
    assert len(started) == 1


def test_an_incremental_schedule_starts_new_chains_so_retention_prunes(
    tmp_path: Path, db: Database
) -> None:
    """keep_count 2 on an incremental schedule: a full backup, one incremental on it, then a new
    full backup; the older chain goes as a whole once the new one holds two backups."""
    instance_id, schedule_id = seed(db)
    with db.session() as s:
        s.execute(
            update(BackupSchedule).where(BackupSchedule.id == schedule_id).values(incremental=True)
        )
        sched = s.get(BackupSchedule, schedule_id)
        assert sched is not None
        now = [sched.next_run]
    started: list[str] = []
    scheduler = Scheduler(settings_for(tmp_path, db), db, started.append, lambda: now[0])
    live_counts = []
    for _ in range(6):
        assert len(scheduler.run_due()) == 1
        with db.session() as s:
            s.execute(
                update(Backup)
                .where(Backup.id == started[-1])
                .values(status=BackupStatus.COMPLETED.value)
            )
        scheduler.apply_retention()
        with db.session() as s:
            live_counts.append(
                s.scalar(
                    select(func.count())
                    .select_from(Backup)
                    .where(Backup.instance_id == instance_id, Backup.deleted.is_(False))
                )
            )
            sched = s.get(BackupSchedule, schedule_id)
            assert sched is not None
            now[0] = sched.next_run
    with db.session() as s:
        parents = {b.id: b.parent_id for b in s.scalars(select(Backup))}
        live = set(s.scalars(select(Backup.id).where(Backup.deleted.is_(False))))
    a, _, c, _, e, f = started
    assert [parents[x] for x in started] == [None, a, None, c, None, e]
    assert live_counts == [1, 2, 3, 2, 3, 2]
    assert live == {e, f}
