"""Restarting an instance's database server through its guest agent."""

from __future__ import annotations

import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import get_instance, transition
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def end_task(tc: TaskContext, instance_id: str, task: Task, fault: str | None = None) -> None:
    """Set the instance's task back to NONE if it is still ``task``, noting ``fault``."""
    with tc.db.session() as s:
        now = utcnow()
        if transition(s, instance_id, {task}, Task.NONE, now) and fault:
            inst = get_instance(s, instance_id)
            inst.fault_message = fault
            inst.fault_at = now


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
        fault = f"Restart failed: {exc.message}"
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        now = utcnow()
        if inst.task != Task.REBOOTING.value:
            return  # ended meanwhile (see the monitor); its outcome is the guest's to report
        inst.task = Task.NONE.value
        inst.fault_message = fault
        inst.fault_at = now if fault else None
        inst.updated = now
