"""Backups: start one on the instance's guest, watch it to its end, record the outcome; and
remove the artifacts of deleted backups.

A backup runs under a lease on its row (cove.taskmanager.leases), like an instance's task: a
task manager that dies while watching is replaced by another, which asks the guest again (the
guest's ``start_backup`` is idempotent and its outcome outlives the agent). A guest that no
longer knows a backup it ran (its agent died meanwhile) cut it short: the backup FAILS at once,
with what it left in the store removed, never BUILDING for ever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select

from cove.common.errors import CoveError, ServiceUnavailable
from cove.common.ids import utcnow
from cove.db.backups import meta_of, set_status, store_of
from cove.db.models import Backup, Instance
from cove.domain.backups import (
    BackupJob,
    BackupProgress,
    BackupResult,
    BackupStatus,
    JobState,
)
from cove.rpc import RequestContext
from cove.storage import open_store
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import public
from cove.taskmanager.stores import seal_key, with_credentials

LOG = logging.getLogger(__name__)

#: How often a running backup's progress is asked.
POLL_SECONDS = 1.0
#: Longest pause between two attempts to reach a guest that is away.
MAX_RETRY_PAUSE = 5.0
#: How long a guest may stay unreachable in the middle of a backup before it is failed.
UNREACHABLE_PATIENCE = timedelta(minutes=5)

_RUNNING = {BackupStatus.NEW, BackupStatus.BUILDING}


def run_backup(tc: TaskContext, ctx: RequestContext, backup_id: str, lost: threading.Event) -> None:
    """Start the backup on its guest and watch it until it ends; ``lost`` is set when this
    task manager no longer holds its lease. Never raises."""
    try:
        _run(tc, ctx, backup_id, lost)
    except Exception as exc:
        if not isinstance(exc, CoveError):
            LOG.exception("backup %s failed", backup_id)
        fail_backup(tc, backup_id, public(exc))


def _run(tc: TaskContext, ctx: RequestContext, backup_id: str, lost: threading.Event) -> None:
    job, instance_id, deadline = _job(tc, backup_id)
    if job is None:
        return
    guest = tc.guest(instance_id)
    progress = _ask(
        tc, backup_id, instance_id, lost, deadline, lambda: guest.start_backup(ctx, job)
    )
    if progress is None:
        return
    with tc.db.session() as s:
        set_status(s, backup_id, {BackupStatus.NEW}, BackupStatus.BUILDING, utcnow())
    while progress.state is JobState.RUNNING:
        if lost.wait(POLL_SECONDS):
            return
        progress = _ask(
            tc,
            backup_id,
            instance_id,
            lost,
            deadline,
            lambda: guest.backup_progress(ctx, backup_id),
        )
        if progress is None:
            return
    if progress.state is JobState.COMPLETED and progress.result is not None:
        _complete(tc, backup_id, progress.result)
    elif progress.state is JobState.UNKNOWN:
        fail_backup(tc, backup_id, "The guest agent stopped while the backup ran.")
    else:
        fail_backup(tc, backup_id, f"The backup failed: {progress.error}")


def _job(tc: TaskContext, backup_id: str) -> tuple[BackupJob | None, str, float]:
    """What to ask the guest, its instance and the backup's deadline (monotonic); no job when
    the backup is no longer running."""
    with tc.db.session() as s:
        row = s.get(Backup, backup_id)
        if row is None or row.deleted or BackupStatus(row.status) not in _RUNNING:
            return None, "", 0.0
        parent_meta = None
        if row.parent_id is not None:
            parent = s.get(Backup, row.parent_id)
            if parent is None or parent.deleted:
                raise _Failed("Its parent backup was deleted.")
            parent_meta = meta_of(parent)
        if row.started_at is None:
            row.started_at = utcnow()
        left = row.started_at + timedelta(seconds=tc.settings.backup_timeout) - utcnow()
        job = BackupJob(
            backup_id=row.id,
            store=with_credentials(tc, store_of(row)),
            artifact=row.artifact,
            seal=seal_key(tc, row.key_id),
            parent_meta=parent_meta,
        )
        return job, row.instance_id, time.monotonic() + left.total_seconds()


class _Failed(CoveError):
    """The backup cannot be made; the message says why."""


def _ask(
    tc: TaskContext,
    backup_id: str,
    instance_id: str,
    lost: threading.Event,
    deadline: float,
    question: Callable[[], BackupProgress],
) -> BackupProgress | None:
    """The guest's answer to ``question``, asked again while the guest or the bus is away (up
    to UNREACHABLE_PATIENCE); None when the lease was lost meanwhile. Raises _Failed when the
    deadline passed, the instance went or the guest stayed away."""
    pause = 0.2
    away_since: float | None = None
    while True:
        if time.monotonic() > deadline:
            raise _Failed("The backup did not finish in time.")
        try:
            return question()
        except ServiceUnavailable as exc:
            if not _instance_alive(tc, instance_id):
                raise _Failed("The instance was deleted while the backup ran.") from None
            now = time.monotonic()
            away_since = away_since if away_since is not None else now
            if now - away_since > UNREACHABLE_PATIENCE.total_seconds():
                raise _Failed(
                    f"The guest agent could not be reached for {UNREACHABLE_PATIENCE}."
                ) from None
            LOG.warning("backup %s: %s; asking again", backup_id, exc.message)
            if lost.wait(pause):
                return None
            pause = min(pause * 2, MAX_RETRY_PAUSE)


def _instance_alive(tc: TaskContext, instance_id: str) -> bool:
    with tc.db.session() as s:
        row = s.get(Instance, instance_id)
        return row is not None and not row.deleted


def _complete(tc: TaskContext, backup_id: str, result: BackupResult) -> None:
    with tc.db.session() as s:
        done = set_status(
            s,
            backup_id,
            _RUNNING,
            BackupStatus.COMPLETED,
            utcnow(),
            size=result.size,
            checksum=result.checksum,
            meta=json.dumps(result.meta),
            fault_message=None,
            task_owner=None,
            task_lease_until=None,
        )
    if done:
        LOG.info("backup %s completed (%d bytes)", backup_id, result.size)


def fail_backup(tc: TaskContext, backup_id: str, message: str) -> None:
    """Put a running backup in FAILED with ``message``, and remove what it left in the store
    (a partial upload, or an artifact the guest finished after all): a failed backup has
    nothing to restore from."""
    with tc.db.session() as s:
        row = s.get(Backup, backup_id)
        if row is None:
            return
        spec, artifact = store_of(row), row.artifact
        failed = set_status(
            s, backup_id, _RUNNING, BackupStatus.FAILED, utcnow(), fault_message=message
        )
    if not failed:
        return
    LOG.warning("backup %s failed: %s", backup_id, message)
    try:
        store = open_store(with_credentials(tc, spec))
        store.discard_partial(artifact)
        store.delete(artifact)
    except (CoveError, ValueError) as exc:
        LOG.warning("could not tidy up after backup %s: %s", backup_id, exc)


def purge_deleted(tc: TaskContext) -> None:
    """Remove the artifacts of deleted backups still in their store (a deleted backup keeps
    its checksum until its artifact is gone); a store that refuses puts the backup back as
    DELETE_FAILED (with the reason), to be deleted again."""
    with tc.db.session() as s:
        waiting = list(
            s.scalars(
                select(Backup.id).where(Backup.deleted.is_(True), Backup.checksum.is_not(None))
            )
        )
    for backup_id in waiting:
        with tc.db.session() as s:
            row = s.get(Backup, backup_id)
            if row is None or not row.deleted or row.checksum is None:
                continue
            spec, artifact = store_of(row), row.artifact
        try:
            open_store(with_credentials(tc, spec)).delete(artifact)
        except (CoveError, ValueError) as exc:
            message = exc.message if isinstance(exc, CoveError) else str(exc)
            LOG.warning("could not delete the artifact of backup %s: %s", backup_id, message)
            with tc.db.session() as s:
                row = s.get(Backup, backup_id)
                if row is not None:
                    row.deleted = False
                    row.deleted_at = None
                    row.status = BackupStatus.DELETE_FAILED.value
                    row.fault_message = f"Deleting the backup failed: {message}"
                    row.updated = utcnow()
            continue
        with tc.db.session() as s:
            row = s.get(Backup, backup_id)
            if row is not None and row.deleted:
                row.checksum = None  # nothing left in the store
        LOG.info("removed the artifact of deleted backup %s", backup_id)
