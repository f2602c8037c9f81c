"""How the task manager's tasks end: each is timed in its metrics
(``cove_task_duration_seconds``, the failed ones counted in ``cove_task_failures_total``) and
told as notification events (``cove.taskmanager.events``). A workflow records its failure on
what it works on rather than raising: the instance ends in an error task or is given a fault,
the backup ends FAILED; an exception that escapes is a failure too."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from cove.common.ids import utcnow
from cove.db.models import Backup, Instance
from cove.domain.backups import BackupStatus
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.events import EventSender

LOG = logging.getLogger(__name__)

#: What each task is called in the metrics: what it does to the instance.
TASK_NAMES = {
    Task.BUILDING: "create",
    Task.DELETING: "delete",
    Task.REBOOTING: "restart",
    Task.RESIZING: "resize",
    Task.DETACHING: "detach",
    Task.PROMOTING: "promote",
    Task.EJECTING: "eject",
    Task.REJOINING: "rejoin",
}


class TaskEnds:
    def __init__(self, tc: TaskContext, events: EventSender | None = None) -> None:
        """``events`` tells each end (None: none are told)."""
        self.tc = tc
        self.events = events

    @contextlib.contextmanager
    def instance_task(self, task: Task, instance_id: str, ctx: RequestContext) -> Iterator[None]:
        """``task`` of ``instance_id``, run inside."""
        name = TASK_NAMES.get(task, task.value.lower())
        before = self.events.before(task, instance_id) if self.events is not None else None

        def ended(failed: bool) -> None:
            if self.events is not None and before is not None:
                self.events.instance_task_ended(name, before, ctx, failed)
                self.events.member_task_ended(instance_id, ctx)

        with self._timed(name, self._instance_failed(instance_id), ended):
            yield

    def backup(
        self, backup_id: str, ctx: RequestContext
    ) -> contextlib.AbstractContextManager[None]:
        """The backup, run inside."""

        def ended(failed: bool) -> None:
            if self.events is not None:
                self.events.backup_ended(backup_id, ctx, failed)

        return self._timed("backup", self._backup_failed(backup_id), ended)

    @contextlib.contextmanager
    def _timed(
        self, task: str, failed: Callable[[datetime], bool], ended: Callable[[bool], None]
    ) -> Iterator[None]:
        if self.tc.metrics is None and self.events is None:
            yield
            return
        started, start = utcnow(), time.monotonic()
        raised = True
        try:
            yield
            raised = False
        finally:
            try:
                failure = raised or failed(started)
            except Exception:  # the control database is away: counted as it went
                LOG.warning("cannot tell how %s ended", task, exc_info=True)
                failure = raised
            if self.tc.metrics is not None:
                self.tc.metrics.task(task, time.monotonic() - start, failure)
            try:
                ended(failure)
            except Exception:  # its events are lost, the task's outcome stands
                LOG.warning("cannot tell the end of %s", task, exc_info=True)

    def _instance_failed(self, instance_id: str) -> Callable[[datetime], bool]:
        def failed(since: datetime) -> bool:
            with self.tc.db.session() as s:
                inst = s.get(Instance, instance_id)
                if inst is None:
                    return False
                faulted = inst.fault_at is not None and inst.fault_at >= since
                return Task(inst.task).is_error or faulted

        return failed

    def _backup_failed(self, backup_id: str) -> Callable[[datetime], bool]:
        def failed(_since: datetime) -> bool:
            with self.tc.db.session() as s:
                backup = s.get(Backup, backup_id)
                return backup is not None and backup.status == BackupStatus.FAILED.value

        return failed
