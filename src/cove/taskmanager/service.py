"""The task manager service: its RPC table, its monitor, and resuming unfinished work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cove.db.models import Instance
from cove.domain.specs import DatabaseSpec, Resize, UserSpec
from cove.domain.status import Task
from cove.rpc import RequestContext, codec
from cove.taskmanager.configure import apply_settings
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from cove.taskmanager.delete import delete_instance
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.resize import resize_instance
from cove.taskmanager.restart import restart_instance

LOG = logging.getLogger(__name__)


class TaskManager:
    def __init__(self, tc: TaskContext) -> None:
        self.tc = tc
        self._stop = threading.Event()

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        """The task manager's RPC table; ``cove.rpc.taskmanager.TaskManagerClient`` is its
        client."""
        return codec.endpoints(
            {
                "create_instance": self.create_instance,
                "delete_instance": self.delete_instance,
                "restart_instance": self.restart_instance,
                "resize_instance": self.resize_instance,
                "update_configuration": self.update_configuration,
            }
        )

    def create_instance(
        self,
        ctx: RequestContext,
        instance_id: str,
        databases: list[DatabaseSpec],
        users: list[UserSpec],
    ) -> None:
        create_instance(self.tc, ctx, instance_id, databases, users)

    def delete_instance(self, ctx: RequestContext, instance_id: str) -> None:
        delete_instance(self.tc, ctx, instance_id)

    def restart_instance(self, ctx: RequestContext, instance_id: str) -> None:
        restart_instance(self.tc, ctx, instance_id)

    def resize_instance(self, ctx: RequestContext, resize: Resize) -> None:
        resize_instance(self.tc, ctx, resize)

    def update_configuration(self, ctx: RequestContext, instance_id: str) -> None:
        apply_settings(self.tc, ctx, instance_id)

    def resume(self) -> None:
        """Finish deletions an earlier task manager left half-done."""
        with self.tc.db.session() as s:
            pending = list(
                s.scalars(
                    select(Instance.id).where(
                        Instance.deleted.is_(False), Instance.task == Task.DELETING.value
                    )
                )
            )
        for instance_id in pending:
            LOG.info("resuming the deletion of instance %s", instance_id)
            delete_instance(self.tc, RequestContext(), instance_id)

    def run_monitor(self) -> None:
        while not self._stop.is_set():
            try:
                check_instances(self.tc)
            except Exception:
                LOG.exception("instance check failed")
            self._stop.wait(self.tc.settings.monitor_interval)

    def stop(self) -> None:
        self._stop.set()
