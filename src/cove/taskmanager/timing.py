"""The task manager's tasks timed in its metrics (``cove_task_duration_seconds``) and the
failed ones counted (``cove_task_failures_total``). A workflow records its failure on what it
works on rather than raising: the instance ends in an error task or is given a fault, the
backup ends FAILED; an exception that escapes is a failure too."""

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
from cove.taskmanager.context import TaskContext

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


class TaskTimer:
    def __init__(self, tc: TaskContext) -> None:
        self.tc = tc

    def instance_task(
        self, task: Task, instance_id: str
    ) -> contextlib.AbstractContextManager[None]:
        """Time ``task`` of ``instance_id``, run inside."""
        return self._timed(
            TASK_NAMES.get(task, task.value.lower()), self._instance_failed(instance_id)
        )

    def backup(self, backup_id: str) -> contextlib.AbstractContextManager[None]:
        """Time the backup, run inside."""
        return self._timed("backup", self._backup_failed(backup_id))

    @contextlib.contextmanager
    def _timed(self, task: str, failed: Callable[[datetime], bool]) -> Iterator[None]:
        if self.tc.metrics is None:
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
            self.tc.metrics.task(task, time.monotonic() - start, failure)

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
