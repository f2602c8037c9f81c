"""Restarting an instance's database server through its guest agent."""

from __future__ import annotations

import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import end_task, get_instance
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def restart_instance(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    with tc.db.session() as s:
        if get_instance(s, instance_id).task != Task.REBOOTING.value:
            LOG.info("instance %s is no longer restarting; nothing to do", instance_id)
            return
    fault: str | None = None
    try:
        tc.guest(instance_id).restart(ctx)
    except CoveError as exc:
        LOG.error("restarting instance %s failed: %s", instance_id, exc.message)
        fault = f"Restart failed: {exc.public_message}"
    with tc.db.session() as s:
        # Should the task have ended meanwhile (see the monitor), the guest reports the outcome.
        end_task(s, instance_id, Task.REBOOTING, Task.NONE, fault, utcnow())
