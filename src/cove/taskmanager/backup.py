"""Backups: start one on the instance's guest, watch it to its end, record the outcome; and
remove the artifacts of deleted backups.

A backup runs under a lease on its row (cove.taskmanager.leases), like an instance's task: a
task manager that dies while watching is replaced by another, which asks the guest again (the
guest's ``start_backup`` is idempotent and its outcome outlives the agent). A backup that was
seen to start (BUILDING) is only ever asked about, never started again: a guest that no longer
knows it (its agent died meanwhile) cut it short, and the backup FAILS at once, never BUILDING
for ever.

A backup ends cleanly: when the task manager fails a backup that may still run (its deadline
passed, its instance went, the guest stayed away), it cancels it on the guest first, which kills
the tool and discards the partial upload; the guest also stops it by itself a little after the
deadline, should no task manager watch it any more. What a failed backup may have left in the
store is removed then, or, when the store is away, by a later pass (:func:`tidy_failed`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update

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
    StoreSpec,
)
from cove.domain.capabilities import Capability, capabilities
from cove.rpc import RequestContext
from cove.storage import open_store
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import public
from cove.taskmanager.stores import current_key_id, seal_key, with_credentials
from cove.taskmanager.wal import archive_target

LOG = logging.getLogger(__name__)

#: How often a running backup's progress is asked.
POLL_SECONDS = 1.0
#: Longest pause between two attempts to reach a guest that is away.
MAX_RETRY_PAUSE = 5.0
#: How long a guest may stay unreachable in the middle of a backup before it is failed.
UNREACHABLE_PATIENCE = timedelta(minutes=5)
#: How long after the task manager's deadline (``backup_timeout`` after the start) the guest
#: stops a backup by itself: a task manager still watching cancels it first, and says why.
GUEST_DEADLINE_GRACE = timedelta(seconds=30)
#: The checksum of a FAILED backup whose leftovers in the store (a partial upload) could not
#: be removed yet: :func:`tidy_failed` removes them, then clears it.
UNTIDY = "untidy"

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
    job, instance_id, deadline, building = _job(tc, backup_id)
    if job is None:
        return
    guest = tc.guest(instance_id)

    def asked() -> BackupProgress | None:
        return _ask(
            tc,
            backup_id,
            instance_id,
            lost,
            deadline,
            lambda: guest.backup_progress(ctx, backup_id),
        )

    if building:
        # Seen to start before (by a task manager that died, or lost its lease): asked about,
        # never started again, even by a guest that forgot it.
        progress = asked()
    else:
        progress = _ask(
            tc, backup_id, instance_id, lost, deadline, lambda: guest.start_backup(ctx, job)
        )
        if progress is not None:
            with tc.db.session() as s:
                set_status(s, backup_id, {BackupStatus.NEW}, BackupStatus.BUILDING, utcnow())
    if progress is None:
        _let_go(tc, backup_id, instance_id)
        return
    while progress.state is JobState.RUNNING:
        if lost.wait(POLL_SECONDS):
            _let_go(tc, backup_id, instance_id)
            return
        progress = asked()
        if progress is None:
            _let_go(tc, backup_id, instance_id)
            return
    if progress.state is JobState.COMPLETED and progress.result is not None:
        _complete(tc, backup_id, progress.result)
    elif progress.state is JobState.UNKNOWN:
        # Cancelled all the same: the guest then records it FAILED, so a start_backup still on
        # its way never runs it.
        fail_backup(tc, backup_id, "The guest agent stopped while the backup ran.")
    else:
        fail_backup(tc, backup_id, f"The backup failed: {progress.error}", cancel=False)


def _job(tc: TaskContext, backup_id: str) -> tuple[BackupJob | None, str, float, bool]:
    """What to ask the guest, its instance, the backup's deadline (monotonic) and whether it
    was seen to start (BUILDING); no job when the backup is no longer running. The backup's
    key is chosen here, when it starts, unless it was already."""
    with tc.db.session() as s:
        row = s.get(Backup, backup_id)
        if row is None or row.deleted or BackupStatus(row.status) not in _RUNNING:
            return None, "", 0.0, False
        parent_meta = None
        if row.parent_id is not None:
            parent = s.get(Backup, row.parent_id)
            if parent is None or parent.deleted:
                raise _Failed("Its parent backup was deleted.")
            parent_meta = meta_of(parent)
        if row.started_at is None:
            row.started_at = utcnow()
        if not row.key_id:
            row.key_id = current_key_id(tc)
        ends = row.started_at + timedelta(seconds=tc.settings.backup_timeout)
        left = ends - utcnow()
        job = BackupJob(
            backup_id=row.id,
            store=with_credentials(tc, store_of(row)),
            artifact=row.artifact,
            seal=seal_key(tc, row.key_id, row.id),
            parent_meta=parent_meta,
            deadline=ends + GUEST_DEADLINE_GRACE,
            wal=(
                archive_target(tc, store_of(row), row.instance_id)
                if Capability.POINT_IN_TIME in capabilities(row.datastore_version.datastore.name)
                else None
            ),
        )
        building = row.status == BackupStatus.BUILDING.value
        return job, row.instance_id, time.monotonic() + left.total_seconds(), building


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


def fail_backup(tc: TaskContext, backup_id: str, message: str, cancel: bool = True) -> None:
    """Put a running backup in FAILED with ``message``, and remove what it left in the store
    (a partial upload, or an artifact the guest finished after all): a failed backup has
    nothing to restore from. With ``cancel`` (the guest may still be running it), the guest
    is told to stop it first, so nothing is written after the tidy-up. A store that cannot be
    tidied now leaves the backup marked UNTIDY, for :func:`tidy_failed`."""
    with tc.db.session() as s:
        row = s.get(Backup, backup_id)
        if row is None or BackupStatus(row.status) not in _RUNNING:
            return
        instance_id, spec, artifact = row.instance_id, store_of(row), row.artifact
    if cancel:
        cancel_on_guest(tc, backup_id, instance_id)
    with tc.db.session() as s:
        # Marked untidy with the same update: a task manager that dies before the tidy-up
        # below leaves it to the next pass.
        failed = set_status(
            s,
            backup_id,
            _RUNNING,
            BackupStatus.FAILED,
            utcnow(),
            fault_message=message,
            checksum=UNTIDY,
        )
    if not failed:
        return
    LOG.warning("backup %s failed: %s", backup_id, message)
    if _tidy(tc, backup_id, spec, artifact):
        _mark_tidy(tc, backup_id)


def cancel_on_guest(tc: TaskContext, backup_id: str, instance_id: str) -> None:
    """Have the instance's guest stop the backup (kill its tool, discard its partial upload)
    and wait a little for it; a guest that cannot be reached is only logged (it stops the
    backup itself at the job's deadline)."""
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted:
            return  # its agent went with it
    try:
        outcome = tc.guest(instance_id).cancel_backup(RequestContext(), backup_id)
    except CoveError as exc:
        LOG.warning("could not cancel backup %s on its guest: %s", backup_id, exc.message)
        return
    LOG.info("backup %s cancelled on its guest: %s", backup_id, outcome.state.value)


def _let_go(tc: TaskContext, backup_id: str, instance_id: str) -> None:
    """This task manager lost the backup's lease. Another that took it over watches it; a
    backup that no longer runs (failed or deleted meanwhile) is watched by nobody, so it is
    cancelled on the guest."""
    with tc.db.session() as s:
        row = s.get(Backup, backup_id)
        running = row is not None and not row.deleted and BackupStatus(row.status) in _RUNNING
    if running:
        LOG.info("backup %s: lease lost; another task manager watches it", backup_id)
        return
    cancel_on_guest(tc, backup_id, instance_id)


def _tidy(tc: TaskContext, backup_id: str, spec: StoreSpec, artifact: str) -> bool:
    """Remove a failed backup's partial upload and artifact; False when the store refused."""
    try:
        store = open_store(with_credentials(tc, spec))
        store.discard_partial(artifact)
        store.delete(artifact)
    except (CoveError, ValueError) as exc:
        message = exc.message if isinstance(exc, CoveError) else str(exc)
        LOG.warning("could not tidy up after backup %s (tried again later): %s", backup_id, message)
        return False
    return True


def _mark_tidy(tc: TaskContext, backup_id: str) -> None:
    with tc.db.session() as s:
        s.execute(
            update(Backup)
            .where(Backup.id == backup_id, Backup.checksum == UNTIDY)
            .values(checksum=None)
        )


class TidyRetries:
    """When the leftovers of each failed backup whose store refused may be looked at again:
    after FIRST_WAIT, doubled at each further failure up to MOST_WAIT, so a store that stays
    away is not asked every second."""

    FIRST_WAIT = 5.0
    MOST_WAIT = 120.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failed: dict[str, tuple[int, float]] = {}  # backup id: failures, next attempt

    def due(self, backup_id: str) -> bool:
        failed = self._failed.get(backup_id)
        return failed is None or self._clock() >= failed[1]

    def record(self, backup_id: str, ok: bool) -> None:
        if ok:
            self._failed.pop(backup_id, None)
            return
        failures = self._failed.get(backup_id, (0, 0.0))[0] + 1
        wait = min(self.FIRST_WAIT * 2 ** min(failures - 1, 16), self.MOST_WAIT)
        self._failed[backup_id] = (failures, self._clock() + wait)

    def keep_only(self, waiting: set[str]) -> None:
        for backup_id in set(self._failed) - waiting:
            del self._failed[backup_id]


def tidy_failed(tc: TaskContext, retries: TidyRetries) -> None:
    """Remove what failed backups left in their store when that could not be done as they
    failed (the store was away): each keeps UNTIDY as its checksum until it is done."""
    with tc.db.session() as s:
        waiting = set(
            s.scalars(
                select(Backup.id).where(
                    Backup.deleted.is_(False),
                    Backup.status == BackupStatus.FAILED.value,
                    Backup.checksum == UNTIDY,
                )
            )
        )
    retries.keep_only(waiting)
    for backup_id in sorted(waiting):
        if not retries.due(backup_id):
            continue
        with tc.db.session() as s:
            row = s.get(Backup, backup_id)
            if row is None or row.checksum != UNTIDY:
                continue
            spec, artifact = store_of(row), row.artifact
        ok = _tidy(tc, backup_id, spec, artifact)
        retries.record(backup_id, ok)
        if ok:
            _mark_tidy(tc, backup_id)
            LOG.info("removed what failed backup %s left in its store", backup_id)


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
            failed = row.status == BackupStatus.FAILED.value
        try:
            store = open_store(with_credentials(tc, spec))
            if failed:  # it may have left a partial upload behind
                store.discard_partial(artifact)
            store.delete(artifact)
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
