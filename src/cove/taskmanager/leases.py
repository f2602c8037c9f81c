"""Claims on instance tasks, so a task whose task manager died is taken over by another.

A task manager works on an instance's task (BUILDING, DELETING, REBOOTING, RESIZING) only while
it holds the task's lease: ``task_owner`` and ``task_lease_until`` on the instance row, taken by
one conditional update (so two task managers never both hold it) and renewed by a thread while
the work goes on. A lease that expired means its holder died (or hung): the monitor of any task
manager then finds the task among :func:`orphans` and runs its workflow again, which picks up
from what the row records. A task the API started whose cast was lost (the bus went away
between the commit and the cast) has no lease at all: it is an orphan too once it is older than
:data:`ORPHAN_GRACE`, so nothing the API accepted is lost.

Every workflow is written to be run again: each step checks the row first and is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select, update

from cove.common.ids import new_id, utcnow
from cove.db.engine import Database
from cove.db.models import Backup, Instance
from cove.domain.backups import BackupStatus
from cove.domain.status import Task

LOG = logging.getLogger(__name__)

#: How long a claim holds without renewal. Long enough that a busy machine renews in time;
#: short enough that a dead task manager's work is taken over within the 30 s a user waits.
LEASE_SECONDS = 12.0
#: How often a held claim is renewed.
RENEW_SECONDS = 3.0
#: How long a task the API started may wait for its cast before the monitor runs it: normally
#: a task manager takes the cast within milliseconds.
ORPHAN_GRACE = timedelta(seconds=3)
#: The tasks that are resumed from the row.
RESUMABLE = (
    Task.BUILDING,
    Task.DELETING,
    Task.REBOOTING,
    Task.RESIZING,
    Task.DETACHING,
    Task.PROMOTING,
    Task.EJECTING,
    Task.REJOINING,
)


def new_owner() -> str:
    """A name for one task manager process, unique across hosts and restarts: where it runs
    (:func:`_here`), its pid there, and a random part."""
    return f"{_here()}:{os.getpid()}:{new_id()[:8]}"


def claim(
    db: Database, instance_id: str, task: Task, owner: str, dead_owner: str | None = None
) -> bool:
    """Take the lease of ``instance_id``'s ``task`` for ``owner``: True when the instance still
    has that task and nobody else holds an unexpired lease on it (but ``dead_owner``, a task
    manager known to be gone)."""
    now = utcnow()
    free = or_(Instance.task_lease_until.is_(None), Instance.task_lease_until < now)
    if dead_owner is not None:
        free = or_(free, Instance.task_owner == dead_owner)
    with db.session() as s:
        moved = s.execute(
            update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.deleted.is_(False),
                Instance.task == task.value,
                free,
            )
            .values(task_owner=owner, task_lease_until=now + timedelta(seconds=LEASE_SECONDS))
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]


#: The rows whose work is leased: an instance's task, or a backup being made.
Leased = type[Instance] | type[Backup]


def claim_backup(db: Database, backup_id: str, owner: str, dead_owner: str | None = None) -> bool:
    """Take the lease of a running backup (NEW or BUILDING) for ``owner``; see :func:`claim`."""
    now = utcnow()
    free = or_(Backup.task_lease_until.is_(None), Backup.task_lease_until < now)
    if dead_owner is not None:
        free = or_(free, Backup.task_owner == dead_owner)
    running = [s.value for s in BackupStatus if s.running]
    with db.session() as s:
        moved = s.execute(
            update(Backup)
            .where(
                Backup.id == backup_id,
                Backup.deleted.is_(False),
                Backup.status.in_(running),
                free,
            )
            .values(task_owner=owner, task_lease_until=now + timedelta(seconds=LEASE_SECONDS))
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]


def renew(db: Database, row_id: str, owner: str, model: Leased = Instance) -> bool:
    """Extend ``owner``'s lease; False when it no longer holds it (the task ended, or was
    reset, or the lease expired and another took it)."""
    now = utcnow()
    with db.session() as s:
        moved = s.execute(
            update(model)
            .where(model.id == row_id, model.task_owner == owner)
            .values(task_lease_until=now + timedelta(seconds=LEASE_SECONDS))
        )
        return bool(moved.rowcount)  # type: ignore[attr-defined]


def release(db: Database, row_id: str, owner: str, model: Leased = Instance) -> None:
    """Give the lease up, if ``owner`` still holds it."""
    with db.session() as s:
        s.execute(
            update(model)
            .where(model.id == row_id, model.task_owner == owner)
            .values(task_owner=None, task_lease_until=None)
        )


@contextmanager
def held(
    db: Database, row_id: str, owner: str, model: Leased = Instance
) -> Iterator[threading.Event]:
    """Renew a claimed lease while the body runs; release it afterwards. The event it yields
    is set when the lease was lost, so long waits can stop early."""
    lost = threading.Event()
    done = threading.Event()

    def keep() -> None:
        while not done.wait(RENEW_SECONDS):
            try:
                if not renew(db, row_id, owner, model):
                    lost.set()
                    return
            except Exception:
                # The control database may be briefly away: the next round tries again, and
                # the lease outlasts several missed rounds.
                LOG.warning("could not renew the lease on %s", row_id, exc_info=True)

    renewer = threading.Thread(target=keep, name=f"lease-{row_id[:8]}", daemon=True)
    renewer.start()
    try:
        yield lost
    finally:
        done.set()
        renewer.join()
        try:
            release(db, row_id, owner, model)
        except Exception:
            LOG.warning("could not release the lease on %s", row_id, exc_info=True)


@dataclass(frozen=True)
class Orphan:
    instance_id: str
    task: Task
    #: The task manager of this host that held it and is gone (its lease has not expired).
    dead_owner: str | None = None


def orphans(db: Database, driver: str) -> list[Orphan]:
    """The tasks of ``driver``'s instances that nobody works on: their lease expired or its
    holder was a task manager of this host that is gone, or they never had one and are older
    than :data:`ORPHAN_GRACE`."""
    now = utcnow()
    with db.session() as s:
        rows = s.execute(
            select(
                Instance.id, Instance.task, Instance.task_owner, Instance.task_lease_until
            ).where(
                Instance.deleted.is_(False),
                Instance.compute_driver == driver,
                Instance.task.in_([t.value for t in RESUMABLE]),
                or_(
                    Instance.task_lease_until.is_not(None),
                    Instance.task_started_at < now - ORPHAN_GRACE,
                ),
            )
        ).all()
    found = []
    for instance_id, task, owner, until in rows:
        if until is None or until < now:
            found.append(Orphan(instance_id, Task(task)))
        elif gone_from_this_host(owner):
            found.append(Orphan(instance_id, Task(task), owner))
    return found


def backup_orphans(db: Database) -> list[tuple[str, str | None]]:
    """The running backups nobody works on, as (backup id, dead owner of this host or None):
    see :func:`orphans`."""
    now = utcnow()
    running = [s.value for s in BackupStatus if s.running]
    with db.session() as s:
        rows = s.execute(
            select(Backup.id, Backup.task_owner, Backup.task_lease_until).where(
                Backup.deleted.is_(False),
                Backup.status.in_(running),
                or_(Backup.task_lease_until.is_not(None), Backup.created < now - ORPHAN_GRACE),
            )
        ).all()
    found: list[tuple[str, str | None]] = []
    for backup_id, owner, until in rows:
        if until is None or until < now:
            found.append((backup_id, None))
        elif gone_from_this_host(owner):
            found.append((backup_id, owner))
    return found


def gone_from_this_host(owner: str | None) -> bool:
    """Whether ``owner`` (see :func:`new_owner`) names a process of this host that no longer
    runs: its work need not wait for the lease to expire. Task managers elsewhere (another
    host, boot or pid namespace: see :func:`_here`) always wait for the lease."""
    if owner is None:
        return False
    here, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if here != _here() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not os.path.exists(f"/proc/{pid}")


def _here() -> str:
    """Where this process's pids mean something: the host name, the kernel's boot and the pid
    namespace, hashed. Containers sharing a host name but not their pids differ here, so none
    takes a live task manager of another for dead."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text())
        except OSError:
            parts.append("?")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
