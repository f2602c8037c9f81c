"""The task manager service: its RPC table, its monitor, and resuming unfinished work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cove.db.models import Instance
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.configure import apply_settings
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from cove.taskmanager.delete import delete_instance
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.resize import resize_instance
from cove.taskmanager.restart import restart_instance

LOG = logging.getLogger(__name__)

TOPIC = "taskmanager"


class TaskManager:
    def __init__(self, tc: TaskContext) -> None:
        self.tc = tc
        self._stop = threading.Event()

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        tc = self.tc

        def create(
            ctx: RequestContext,
            instance_id: str,
            databases: list[dict[str, Any]],
            users: list[dict[str, Any]],
        ) -> None:
            create_instance(tc, ctx, instance_id, databases, users)

        def delete(ctx: RequestContext, instance_id: str) -> None:
            delete_instance(tc, ctx, instance_id)

        def restart(ctx: RequestContext, instance_id: str) -> None:
            restart_instance(tc, ctx, instance_id)

        def update_configuration(ctx: RequestContext, instance_id: str) -> None:
            apply_settings(tc, ctx, instance_id)

        def resize(ctx: RequestContext, instance_id: str, **sizes: Any) -> None:
            resize_instance(tc, ctx, instance_id, **sizes)

        return {
            "create_instance": create,
            "delete_instance": delete,
            "restart_instance": restart,
            "resize_instance": resize,
            "update_configuration": update_configuration,
        }

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
