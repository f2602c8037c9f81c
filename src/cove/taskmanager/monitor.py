"""The task manager's watch over live instances: re-attach and bring back guest agents, and
end builds that have taken too long."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from cove.common.ids import utcnow
from cove.db.instances import end_task
from cove.db.models import Instance
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.rpc.guest import RESTART_TIMEOUT
from cove.taskmanager.configure import apply_settings, push_pending
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import build_overdue, fail_build
from cove.taskmanager.resize import RESIZE_TIMEOUT

LOG = logging.getLogger(__name__)


def check_instances(tc: TaskContext) -> None:
    """One pass over every live instance of this driver."""
    with tc.db.session() as s:
        rows = s.execute(
            select(
                Instance.id, Instance.task, Instance.compute_state, Instance.task_started_at
            ).where(Instance.deleted.is_(False), Instance.compute_driver == tc.driver.name)
        ).all()
    now = utcnow()
    for instance_id, task, compute_state, task_started_at in rows:
        overdue = task_started_at is not None and now - task_started_at > timedelta(
            seconds=tc.settings.build_timeout
        )
        if task == Task.BUILDING.value and overdue and build_overdue(tc, instance_id, now):
            # A restore is given longer than build_timeout (create.build_deadline).
            fail_build(tc, instance_id, "The instance did not become ready in time.")
            continue
        waited = now - task_started_at if task_started_at is not None else timedelta(0)
        if task == Task.REBOOTING.value and waited > timedelta(seconds=RESTART_TIMEOUT * 2):
            # The task manager that waited on this restart is gone; the guest's heartbeat
            # tells how the server came out of it.
            _end_overdue(tc, instance_id, Task.REBOOTING)
            continue
        if task == Task.RESIZING.value and waited > timedelta(seconds=RESIZE_TIMEOUT * 2):
            # The task manager that ran the resize is gone, perhaps half-way. The row holds
            # the new size (quotas count it): give it to the place and the guest again, so
            # they agree with the row; a new flavor then shows RESTART_REQUIRED.
            apply_settings(tc, RequestContext(), instance_id)
            _end_overdue(
                tc,
                instance_id,
                Task.RESIZING,
                "The resize did not finish in time; the new size was given to the instance "
                "again (restart it if it shows RESTART_REQUIRED).",
            )
            continue
        if compute_state == ComputeState.BUILD.value or task == Task.DELETING.value:
            continue
        _revive(tc, instance_id, compute_state)
    push_pending(tc)


def _end_overdue(tc: TaskContext, instance_id: str, task: Task, fault: str | None = None) -> None:
    """Set the instance's task back to NONE if it is still ``task``, noting ``fault``."""
    with tc.db.session() as s:
        end_task(s, instance_id, task, Task.NONE, fault, utcnow())


def _revive(tc: TaskContext, instance_id: str, recorded: str) -> None:
    try:
        state = tc.driver.state(instance_id)
        if state is ComputeState.ERROR:
            LOG.error(
                "instance %s: its place is broken (see the driver's warning before)", instance_id
            )
            _set_compute(tc, instance_id, ComputeState.ERROR)
            return
        if state is ComputeState.ACTIVE:
            if recorded != ComputeState.ACTIVE.value:
                _set_compute(tc, instance_id, ComputeState.ACTIVE, agent_started=True)
            tc.driver.reconcile(instance_id)
            return
        LOG.warning("the guest agent of instance %s is not running; starting it", instance_id)
        # Recorded before the spawn: the new agent's first heartbeat must count as after it.
        _set_compute(tc, instance_id, ComputeState.SHUTDOWN, agent_started=True)
        tc.driver.ensure_running(instance_id)
        _set_compute(tc, instance_id, ComputeState.ACTIVE)
    except Exception:
        LOG.exception("could not check instance %s", instance_id)


def _set_compute(
    tc: TaskContext, instance_id: str, state: ComputeState, agent_started: bool = False
) -> None:
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted:
            return
        now = utcnow()
        inst.compute_state = state.value
        if agent_started:
            inst.agent_started_at = now
        inst.updated = now
