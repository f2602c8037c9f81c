"""The task manager service: its RPC table, its monitor, and taking over unfinished work.

Every RPC names an instance whose task the API recorded; the workflow runs only while this task
manager holds the task's lease (cove.taskmanager.leases). The monitor runs, besides its checks,
every task nobody holds: those of a task manager that died, and those whose cast was lost.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cove.common.ids import utcnow
from cove.db.models import Backup
from cove.domain.status import Task
from cove.rpc import RequestContext, codec
from cove.rpc.taskmanager import TaskManagerClient
from cove.taskmanager import failover, leases
from cove.taskmanager.backup import TidyRetries, purge_deleted, run_backup, tidy_failed
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from cove.taskmanager.delete import delete_instance
from cove.taskmanager.endpoints import guard_instances, serve_endpoints
from cove.taskmanager.ends import TaskEnds
from cove.taskmanager.events import EventSender
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.replicas import detach_replica
from cove.taskmanager.resize import resize_instance
from cove.taskmanager.restart import restart_instance
from cove.taskmanager.scheduler import Clock, Scheduler
from cove.taskmanager.wal import Pruner

LOG = logging.getLogger(__name__)

#: How many taken-over tasks run at once; the RPC server's workers are not used for them.
RESUME_WORKERS = 4
#: How many backups this task manager watches at once, each on a thread of its own executor
#: (neither an RPC worker nor a resume worker: a backup may take hours). A backup arriving
#: when all are busy is left unclaimed, for a free watcher here (the monitor takes it as an
#: orphan) or another task manager.
BACKUP_WORKERS = 16
#: How often the replication groups are looked at: a lapsed lease is acted on within this.
FAILOVER_POLL = 0.2


class TaskManager:
    def __init__(self, tc: TaskContext, clock: Clock = utcnow) -> None:
        """``clock`` is what backup schedules run by (cove.taskmanager.scheduler)."""
        self.tc = tc
        self.owner = leases.new_owner()
        self._stop = threading.Event()
        self._resuming: set[str] = set()
        self._resuming_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(RESUME_WORKERS, thread_name_prefix="resume")
        # Failovers never wait behind resumed builds.
        self._failovers = ThreadPoolExecutor(RESUME_WORKERS, thread_name_prefix="failover")
        self._backups = ThreadPoolExecutor(BACKUP_WORKERS, thread_name_prefix="backup")
        self._backup_slots = threading.BoundedSemaphore(BACKUP_WORKERS)
        self._tidy = TidyRetries()
        self.scheduler = Scheduler(tc.settings, tc.db, self._cast_backup, clock)
        self._prune_wal = Pruner()
        self.events = EventSender(tc)
        tc.events = self.events
        self.ends = TaskEnds(tc, self.events)

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        """The task manager's RPC table; ``cove.rpc.taskmanager.TaskManagerClient`` is its
        client."""
        return codec.endpoints(
            {
                "create_instance": self.create_instance,
                "delete_instance": self.delete_instance,
                "restart_instance": self.restart_instance,
                "resize_instance": self.resize_instance,
                "detach_replica": self.detach_replica,
                "promote_replica": self.promote_replica,
                "eject_primary": self.eject_primary,
                "create_backup": self.create_backup,
            }
        )

    def create_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.BUILDING)

    def delete_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.DELETING)

    def restart_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.REBOOTING)

    def resize_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.RESIZING)

    def detach_replica(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.DETACHING)

    def promote_replica(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.PROMOTING)

    def eject_primary(self, ctx: RequestContext, instance_id: str) -> None:
        self._run(ctx, instance_id, Task.EJECTING)

    def create_backup(self, ctx: RequestContext, backup_id: str) -> None:
        self._watch_backup(ctx, backup_id)

    def _watch_backup(
        self, ctx: RequestContext, backup_id: str, dead_owner: str | None = None
    ) -> bool:
        """Hand the backup to a free watcher of this task manager's backup executor; False
        (left for later) when all are busy, it is watched here already, or this task manager
        is stopping."""
        with self._resuming_lock:
            if backup_id in self._resuming:
                return False
            if not self._backup_slots.acquire(blocking=False):
                LOG.info(
                    "all %d backup watchers are busy; backup %s waits", BACKUP_WORKERS, backup_id
                )
                return False
            self._resuming.add(backup_id)
        try:
            self._backups.submit(self._watch, ctx, backup_id, dead_owner)
        except RuntimeError:  # stopping: the executor takes nothing more
            self._unwatch(backup_id)
            return False
        return True

    def _watch(self, ctx: RequestContext, backup_id: str, dead_owner: str | None) -> None:
        try:
            self._run_backup(ctx, backup_id, dead_owner)
        except Exception:
            LOG.exception("watching backup %s failed", backup_id)
        finally:
            self._unwatch(backup_id)

    def _unwatch(self, backup_id: str) -> None:
        with self._resuming_lock:
            self._resuming.discard(backup_id)
        self._backup_slots.release()

    def _cast_backup(self, backup_id: str) -> None:
        """Hand a scheduled backup to the task managers, as the API hands one it recorded:
        their backup watchers run it, not this task manager's monitor."""
        TaskManagerClient(self.tc.bus).create_backup(RequestContext(), backup_id)

    def _run_backup(
        self, ctx: RequestContext, backup_id: str, dead_owner: str | None = None
    ) -> None:
        """Make the backup if its lease can be taken; nothing when another task manager
        holds it or it is no longer running."""
        if not leases.claim_backup(self.tc.db, backup_id, self.owner, dead_owner):
            LOG.info("backup %s is not waiting for a task manager", backup_id)
            return
        with (
            self.ends.backup(backup_id, ctx),
            leases.held(self.tc.db, backup_id, self.owner, Backup) as lost,
        ):
            run_backup(self.tc, ctx, backup_id, lost)

    def _run(
        self, ctx: RequestContext, instance_id: str, task: Task, dead_owner: str | None = None
    ) -> None:
        """Run ``task``'s workflow on ``instance_id`` if its lease can be taken; nothing when
        another task manager holds it or the task ended."""
        if not leases.claim(self.tc.db, instance_id, task, self.owner, dead_owner):
            LOG.info("instance %s: %s is not waiting for a task manager", instance_id, task.value)
            return
        following = None
        with (
            self.ends.instance_task(task, instance_id, ctx),
            leases.held(self.tc.db, instance_id, self.owner) as lost,
        ):
            if task is Task.BUILDING:
                create_instance(self.tc, ctx, instance_id, lost)
            elif task is Task.DELETING:
                delete_instance(self.tc, ctx, instance_id)
            elif task is Task.REBOOTING:
                # A cluster's rolling restart goes on with its next member.
                following = restart_instance(self.tc, ctx, instance_id)
            elif task is Task.RESIZING:
                resize_instance(self.tc, ctx, instance_id)
            elif task is Task.DETACHING:
                detach_replica(self.tc, ctx, instance_id)
            elif task is Task.PROMOTING:
                failover.promote_replica(self.tc, ctx, instance_id)
            elif task is Task.EJECTING:
                failover.eject_primary(self.tc, ctx, instance_id)
            elif task is Task.REJOINING:
                failover.rejoin_replica(self.tc, ctx, instance_id)
        if following is not None:
            self._run(ctx, following, Task.REBOOTING)

    def resume(self) -> None:
        """Start every task nobody holds, each in the background (once at a time)."""
        self._start_each(leases.orphans(self.tc.db, self.tc.driver.name), "taking over")
        for backup_id, dead_owner in leases.backup_orphans(self.tc.db):
            if self._watch_backup(RequestContext(), backup_id, dead_owner):
                LOG.warning("taking over backup %s", backup_id)

    def _start_each(
        self, orphans: Iterable[leases.Orphan], why: str, pool: ThreadPoolExecutor | None = None
    ) -> None:
        """Run each task in the background (on ``pool``, by default the resume workers),
        unless this task manager runs it already."""
        for orphan in orphans:
            with self._resuming_lock:
                if orphan.instance_id in self._resuming:
                    continue
                self._resuming.add(orphan.instance_id)
            LOG.warning("%s %s of instance %s", why, orphan.task.value, orphan.instance_id)
            try:
                (pool or self._pool).submit(self._resume_one, orphan)
            except RuntimeError:  # stopping: the pool takes nothing more
                with self._resuming_lock:
                    self._resuming.discard(orphan.instance_id)
                return

    def _resume_one(self, orphan: leases.Orphan) -> None:
        try:
            self._run(RequestContext(), orphan.instance_id, orphan.task, orphan.dead_owner)
        except Exception:
            LOG.exception(
                "resuming %s of instance %s failed", orphan.task.value, orphan.instance_id
            )
        finally:
            with self._resuming_lock:
                self._resuming.discard(orphan.instance_id)

    def run_monitor(self) -> None:
        while not self._stop.is_set():
            for step in (
                self.resume,
                lambda: check_instances(self.tc),
                lambda: purge_deleted(self.tc),
                lambda: tidy_failed(self.tc, self._tidy),
                self.scheduler.tick,
                lambda: self._prune_wal(self.tc),
            ):
                try:
                    step()
                except Exception:
                    LOG.exception("instance check failed")
            self._stop.wait(self.tc.settings.monitor_interval)

    def run_coordinator(self) -> None:
        """Every FAILOVER_POLL seconds: eject a primary whose lease lapsed, keep the host's
        endpoints on the current primaries (and its published instances), keep its filter on
        who may connect, rejoin an old primary whose agent reports again. A step that fails is
        logged once until it works again."""
        failing: dict[str, str] = {}
        while not self._stop.is_set():
            for name, step in (
                ("failover", self._start_failovers),
                ("endpoints", lambda: serve_endpoints(self.tc)),
                ("access", lambda: guard_instances(self.tc)),
                ("rejoin", self._start_rejoins),
            ):
                try:
                    step()
                    if failing.pop(name, None) is not None:
                        LOG.info("the coordinator's %s pass works again", name)
                except Exception as exc:
                    what = re.sub(r"\d+", "#", str(exc))  # the same failure, another pid
                    if failing.get(name) != what:
                        LOG.exception("the coordinator's %s pass failed", name)
                    failing[name] = what
            self._stop.wait(FAILOVER_POLL)

    def _start_failovers(self) -> None:
        ejects = failover.start_failovers(self.tc)
        self._start_each(
            [leases.Orphan(i, Task.EJECTING, None) for i in ejects], "starting", self._failovers
        )

    def _start_rejoins(self) -> None:
        rejoins = failover.rejoins_due(self.tc)
        self._start_each(
            [leases.Orphan(i, Task.REJOINING, None) for i in rejoins], "starting", self._failovers
        )

    def stop(self) -> None:
        self._stop.set()
        self.events.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._failovers.shutdown(wait=False, cancel_futures=True)
        self._backups.shutdown(wait=False, cancel_futures=True)
