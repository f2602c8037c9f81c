"""The task manager's side of backups against a real SQLite control database and a filesystem
store, the guest answered by the fake bus: how a backup ends when it fails, which key it gets,
how long a restore may take, and that watching backups keeps the task manager's threads free."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cove.common import keys
from cove.common.ids import new_id, utcnow
from cove.common.metrics import Metrics
from cove.common.settings import load_settings
from cove.db.backups import store_json
from cove.db.engine import Database
from cove.db.models import Backup, Instance
from cove.db.sealed import CreateArgs
from cove.domain.backups import (
    BackupJob,
    BackupProgress,
    BackupResult,
    BackupStatus,
    JobState,
    StoreSpec,
)
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext, codec
from cove.storage.sealed import Sealed, unsealed
from cove.taskmanager import backup as workflow
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import RESTORE_PACE, build_overdue, public, restore_job
from cove.taskmanager.ends import TaskEnds
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.service import TaskManager
from fakes import FakeBus, FakeDriver
from rows import add_instance

CTX = RequestContext()


@pytest.fixture
def tc(tmp_path: Path, migrated_db: Any) -> TaskContext:
    settings = load_settings(data_dir=tmp_path, build_timeout=60, backup_timeout=3600)
    migrated_db(settings.database_url)
    return TaskContext(settings, Database(settings.database_url), FakeBus(), FakeDriver())  # type: ignore[arg-type]


def bus(tc: TaskContext) -> FakeBus:
    assert isinstance(tc.bus, FakeBus)
    return tc.bus


def store_root(tc: TaskContext) -> Path:
    return tc.settings.data_dir / "store"


def add_backup(
    tc: TaskContext,
    status: BackupStatus = BackupStatus.NEW,
    key_id: str = "",
    started_ago: float | None = None,
    location: Path | None = None,
    **values: Any,
) -> tuple[str, str]:
    """A backup of a new ACTIVE instance, as the API records it; (backup id, instance id)."""
    iid = add_instance(tc.db, Task.NONE, ComputeState.ACTIVE)
    bid = new_id()
    spec = StoreSpec("filesystem", str(location or store_root(tc)), prefix="c")
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        now = utcnow()
        s.add(
            Backup(
                id=bid,
                project_id="p",
                name="b",
                instance_id=iid,
                datastore_version_id=inst.datastore_version_id,
                status=status.value,
                store=store_json(spec),
                artifact=f"{iid}/{bid}.cbk",
                key_id=key_id,
                meta="{}",
                started_at=now - timedelta(seconds=started_ago) if started_ago else None,
                created=now,
                updated=now,
                **values,
            )
        )
    return bid, iid


def backup(tc: TaskContext, bid: str) -> Backup:
    with tc.db.session() as s:
        row = s.get(Backup, bid)
        assert row is not None
        return row


def partial(tc: TaskContext, bid: str, iid: str) -> Path:
    """A partial upload, as a guest cut short leaves it in the filesystem store."""
    path = store_root(tc) / "c" / iid / f"{bid}.cbk.partial-0123abcd"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half")
    return path


def methods(tc: TaskContext) -> list[str]:
    return [c.method for c in bus(tc).calls]


def progress(state: JobState, **fields: Any) -> Any:
    return codec.to_wire(BackupProgress(state, **fields))


def result_of(job: BackupJob, size: int = 10, checksum: str = "c" * 64) -> BackupResult:
    return BackupResult(job.artifact, size, checksum, job.seal.key_id, {"format": "test"})


def completing(jobs: list[BackupJob]) -> Any:
    """A start_backup answer that records the job and completes it at once."""

    def answer(_ctx: RequestContext, job: Any) -> Any:
        got = codec.from_wire(BackupJob, job, "job")
        jobs.append(got)
        return progress(JobState.COMPLETED, result=result_of(got))

    return answer


# -- keys ------------------------------------------------------------------------------------------


def test_a_backup_is_sealed_with_a_key_derived_for_it_from_the_key_current_at_its_start(
    tc: TaskContext,
) -> None:
    jobs: list[BackupJob] = []
    bus(tc).answer("start_backup", completing(jobs))
    first, _ = add_backup(tc)
    second, _ = add_backup(tc)
    for bid in (first, second):
        workflow.run_backup(tc, CTX, bid, threading.Event())
    key_id, master = keys.current_backup_key(tc.settings.backup_keys_dir)
    for bid, job in zip((first, second), jobs, strict=True):
        row = backup(tc, bid)
        assert row.status == "COMPLETED" and row.key_id == key_id
        assert job.seal.key_id == key_id
        # Never the deployment's key: one derived for this backup alone.
        assert job.seal.key != master.decode()
        assert job.seal.key == keys.derive_backup_key(master, bid).hex()
        assert row.started_at is not None and job.deadline is not None
        assert job.deadline == row.started_at + timedelta(seconds=tc.settings.backup_timeout) + (
            workflow.GUEST_DEADLINE_GRACE
        )
    assert jobs[0].seal.key != jobs[1].seal.key
    assert {k.key for k in (jobs[0].seal, jobs[1].seal)}.isdisjoint({master.decode()})


def test_derived_keys_differ_per_backup_and_per_master() -> None:
    a, b = b"11" * 32, b"22" * 32
    assert keys.derive_backup_key(a, "x") == keys.derive_backup_key(a, "x")
    assert len({keys.derive_backup_key(a, "x"), keys.derive_backup_key(a, "y")}) == 2
    assert keys.derive_backup_key(a, "x") != keys.derive_backup_key(b, "x")
    with pytest.raises(ValueError):
        keys.derive_backup_key(a, "")


def test_a_backup_sealed_before_a_rotation_restores_after_it(tc: TaskContext) -> None:
    jobs: list[BackupJob] = []
    data = b"rows of the moment " * 1000

    def seal_for_real(_ctx: RequestContext, job: Any) -> Any:
        got = codec.from_wire(BackupJob, job, "job")
        jobs.append(got)
        sealed = Sealed([data], got.seal)
        artifact = b"".join(sealed)
        (store_root(tc) / got.backup_id).write_bytes(artifact)
        return progress(JobState.COMPLETED, result=result_of(got, len(artifact), sealed.checksum))

    store_root(tc).mkdir(parents=True)
    bus(tc).answer("start_backup", seal_for_real)
    old, _ = add_backup(tc)
    workflow.run_backup(tc, CTX, old, threading.Event())
    old_key = backup(tc, old).key_id
    new_key = keys.rotate_backup_key(tc.settings.backup_keys_dir)
    assert new_key != old_key

    piece = restore_job(tc, old).chain[0]
    assert piece.seal.key_id == old_key and piece.seal == jobs[0].seal
    artifact = (store_root(tc) / old).read_bytes()
    assert b"".join(unsealed([artifact], piece.seal, piece.checksum)) == data

    # Backups started after the rotation take the new key.
    new, _ = add_backup(tc)
    workflow.run_backup(tc, CTX, new, threading.Event())
    assert backup(tc, new).key_id == new_key == jobs[1].seal.key_id


# -- ending cleanly ------------------------------------------------------------------------------


def test_a_backup_seen_building_is_asked_about_and_failed_never_started_again(
    tc: TaskContext,
) -> None:
    key_id, _ = keys.current_backup_key(tc.settings.backup_keys_dir)
    bid, _ = add_backup(tc, BackupStatus.BUILDING, key_id, started_ago=30)
    # The agent restarted mid-backup: it does not know it. start_backup has no answer: the
    # fake bus fails the test if the workflow asks it.
    bus(tc).answer("backup_progress", progress(JobState.UNKNOWN))
    bus(tc).answer("cancel_backup", progress(JobState.FAILED, error="cancelled"))
    workflow.run_backup(tc, CTX, bid, threading.Event())
    row = backup(tc, bid)
    assert row.status == "FAILED"
    assert row.fault_message == "The guest agent stopped while the backup ran."
    assert methods(tc) == ["backup_progress", "cancel_backup"]


def test_a_backup_past_its_deadline_is_cancelled_on_the_guest_and_tidied(
    tc: TaskContext,
) -> None:
    tc.settings = tc.settings.model_copy(update={"backup_timeout": 5.0})
    key_id, _ = keys.current_backup_key(tc.settings.backup_keys_dir)
    bid, iid = add_backup(tc, BackupStatus.BUILDING, key_id, started_ago=60)
    left = partial(tc, bid, iid)
    bus(tc).answer("cancel_backup", progress(JobState.FAILED, error="stopped"))
    workflow.run_backup(tc, CTX, bid, threading.Event())
    row = backup(tc, bid)
    assert (row.status, row.fault_message) == ("FAILED", "The backup did not finish in time.")
    assert methods(tc) == ["cancel_backup"]
    assert bus(tc).calls[0].args == {"backup_id": bid}
    assert not left.exists() and row.checksum is None


def test_a_backup_whose_instance_went_is_failed_without_asking_its_guest_to_cancel(
    tc: TaskContext,
) -> None:
    from cove.common.errors import ServiceUnavailable

    key_id, _ = keys.current_backup_key(tc.settings.backup_keys_dir)
    bid, iid = add_backup(tc, BackupStatus.BUILDING, key_id, started_ago=1)
    with tc.db.session() as s:
        s.execute(update(Instance).where(Instance.id == iid).values(deleted=True))
    bus(tc).answer("backup_progress", ServiceUnavailable("the guest is gone"))
    workflow.run_backup(tc, CTX, bid, threading.Event())
    assert backup(tc, bid).fault_message == "The instance was deleted while the backup ran."
    assert "cancel_backup" not in methods(tc)


def test_what_a_store_kept_is_removed_by_a_later_pass_once_it_answers(tc: TaskContext) -> None:
    # The store's directory is a file for now: every operation on it fails.
    blocked = tc.settings.data_dir / "blocked"
    blocked.write_text("")
    bid, iid = add_backup(tc, location=blocked)
    bus(tc).answer(
        "start_backup",
        progress(JobState.FAILED, error="cannot write in the filesystem store: it is full"),
    )
    workflow.run_backup(tc, CTX, bid, threading.Event())
    row = backup(tc, bid)
    assert row.status == "FAILED" and "it is full" in (row.fault_message or "")
    assert row.checksum == workflow.UNTIDY
    assert "cancel_backup" not in methods(tc)  # the guest said it ended

    now = [100.0]
    retries = workflow.TidyRetries(clock=lambda: now[0])
    workflow.tidy_failed(tc, retries)  # still away
    assert backup(tc, bid).checksum == workflow.UNTIDY
    # The store answers again, with what the guest left in it.
    blocked.unlink()
    with tc.db.session() as s:
        s.execute(
            update(Backup)
            .where(Backup.id == bid)
            .values(store=store_json(StoreSpec("filesystem", str(store_root(tc)), prefix="c")))
        )
    left = partial(tc, bid, iid)
    workflow.tidy_failed(tc, retries)
    assert left.exists(), "asked again before its pause"
    now[0] += retries.FIRST_WAIT
    workflow.tidy_failed(tc, retries)
    assert not left.exists()
    assert backup(tc, bid).checksum is None and backup(tc, bid).status == "FAILED"


def test_a_deleted_failed_backup_has_its_partial_upload_removed(tc: TaskContext) -> None:
    bid, iid = add_backup(tc, BackupStatus.FAILED, checksum=workflow.UNTIDY)
    left = partial(tc, bid, iid)
    with tc.db.session() as s:
        s.execute(update(Backup).where(Backup.id == bid).values(deleted=True))
    workflow.purge_deleted(tc)
    assert not left.exists() and backup(tc, bid).checksum is None


def test_a_task_manager_that_lost_its_lease_cancels_only_what_nobody_runs(
    tc: TaskContext,
) -> None:
    lost = threading.Event()

    def running(_ctx: RequestContext, job: Any) -> Any:
        lost.set()  # the lease goes while the guest starts it
        return progress(JobState.RUNNING)

    bus(tc).answer("start_backup", running)
    bus(tc).answer("cancel_backup", progress(JobState.FAILED, error="stopped"))
    taken_over, _ = add_backup(tc)
    workflow.run_backup(tc, CTX, taken_over, lost)
    assert backup(tc, taken_over).status == "BUILDING"  # another task manager watches it
    assert "cancel_backup" not in methods(tc)

    lost.clear()
    ended, _ = add_backup(tc)

    def failed_meanwhile(_ctx: RequestContext, job: Any) -> Any:
        with tc.db.session() as s:
            s.execute(update(Backup).where(Backup.id == ended).values(status="FAILED"))
        lost.set()
        return progress(JobState.RUNNING)

    bus(tc).answer("start_backup", failed_meanwhile)
    workflow.run_backup(tc, CTX, ended, lost)
    assert methods(tc)[-1] == "cancel_backup"
    assert bus(tc).calls[-1].args == {"backup_id": ended}


# -- the task manager's threads --------------------------------------------------------------------


def test_create_backup_answers_at_once_and_a_backup_watcher_runs_it(tc: TaskContext) -> None:
    started = threading.Event()
    release = threading.Event()
    seen: list[str] = []

    def slow_start(_ctx: RequestContext, job: Any) -> Any:
        seen.append(threading.current_thread().name)
        started.set()
        release.wait(30)
        got = codec.from_wire(BackupJob, job, "job")
        return progress(JobState.COMPLETED, result=result_of(got))

    bus(tc).answer("start_backup", slow_start)
    bid, _ = add_backup(tc)
    tm = TaskManager(tc)
    try:
        tm.create_backup(CTX, bid)  # returns while the guest is still being asked
        assert started.wait(30)
        assert not release.is_set() and seen[0].startswith("backup")
        # Asked again (the monitor taking it for an orphan), it is not watched twice.
        assert not tm._watch_backup(CTX, bid)
        release.set()
        deadline = time.monotonic() + 30
        while backup(tc, bid).status != "COMPLETED":
            assert time.monotonic() < deadline, backup(tc, bid).status
            time.sleep(0.02)
        assert len(seen) == 1
    finally:
        release.set()
        tm.stop()


# -- restores and faults ---------------------------------------------------------------------------


def test_a_restore_is_given_longer_than_build_timeout_in_proportion_to_its_size(
    tc: TaskContext,
) -> None:
    bid, _ = add_backup(tc, BackupStatus.COMPLETED, "bk-00000000", checksum="c" * 64)
    with tc.db.session() as s:
        s.execute(update(Backup).where(Backup.id == bid).values(size=100 * RESTORE_PACE))
    # build_timeout is 60 s; the backup adds 100 s.
    iid = add_instance(tc.db, Task.BUILDING, ComputeState.BUILD, age=120)
    plain = add_instance(tc.db, Task.BUILDING, ComputeState.BUILD, age=120)
    with tc.db.session() as s:
        for instance_id, args in (
            (iid, CreateArgs([], [], restore_from=bid)),
            (plain, CreateArgs([], [])),
        ):
            s.execute(
                update(Instance)
                .where(Instance.id == instance_id)
                .values(task_args=tc.sealer.seal(instance_id, args))
            )
    now = utcnow()
    assert not build_overdue(tc, iid, now)
    assert build_overdue(tc, plain, now)
    assert build_overdue(tc, iid, now + timedelta(seconds=45))
    check_instances(tc)
    with tc.db.session() as s:
        tasks = {i: s.get(Instance, i).task for i in (iid, plain)}  # type: ignore[union-attr]
    assert tasks == {iid: "BUILDING", plain: "BUILD_ERROR"}


def test_a_replay_of_archived_wal_is_given_time_for_its_segments(tc: TaskContext) -> None:
    """An incremental's artifact is a small manifest and a moment's replay has no artifact of
    its own: the WAL segments replayed count instead."""
    bid, _ = add_backup(tc, BackupStatus.COMPLETED, "bk-00000000", checksum="c" * 64)
    # build_timeout is 60 s; 50 segments of 16 MiB at 8 MiB/s add 100 s.
    moment = add_instance(tc.db, Task.BUILDING, ComputeState.BUILD, age=120)
    args = CreateArgs([], [], restore_from=bid, restore_time=utcnow().isoformat())
    with tc.db.session() as s:
        s.execute(
            update(Instance)
            .where(Instance.id == moment)
            .values(task_args=tc.sealer.seal(moment, dataclasses.replace(args, replay_segments=50)))
        )
    now = utcnow()
    assert not build_overdue(tc, moment, now)
    assert build_overdue(tc, moment, now + timedelta(seconds=45))


def test_a_fault_never_shows_the_text_of_an_unexpected_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cove.common.errors import StoreUnavailable

    assert public(StoreUnavailable("cannot reach the S3 store")) == "cannot reach the S3 store"
    message = public(KeyError("/srv/secret/path"))
    assert "secret" not in message and "KeyError" not in message
    reference = message.split("reference ")[1].split(")")[0]
    assert any(
        reference in r.getMessage() and "/srv/secret/path" in str(r.exc_info)
        for r in caplog.records
    )


def test_the_guest_is_given_its_deadline_with_the_job(tc: TaskContext) -> None:
    jobs: list[BackupJob] = []
    bus(tc).answer("start_backup", completing(jobs))
    bid, _ = add_backup(tc)
    workflow.run_backup(tc, CTX, bid, threading.Event())
    sent = json.dumps(bus(tc).calls[0].args)
    assert "deadline" in sent and jobs[0].deadline is not None


def test_a_backup_that_ends_failed_is_counted_as_failed(tc: TaskContext) -> None:
    tc.metrics = Metrics.start(None)
    timer = TaskEnds(tc)
    failed, _ = add_backup(tc, BackupStatus.FAILED)
    completed, _ = add_backup(tc, BackupStatus.COMPLETED)
    for bid in (failed, completed):
        with timer.backup(bid, RequestContext()):
            pass
    text = tc.metrics.exposition().decode()
    assert 'cove_task_duration_seconds_count{task="backup"} 2.0' in text
    assert 'cove_task_failures_total{task="backup"} 1.0' in text
