"""The ``reset_status`` action: an administrator's way out for an instance stuck in a task.

A build, restart or resize whose task manager died, or an instance whose guest stopped
answering, cannot be deleted or acted on while its task lasts. As in Trove, the reset ends the
task (NONE) and marks the guest's service status unknown (``ERROR``) until the guest reports
again; the instance can then be deleted. Cove also records the reset as the instance's fault,
naming what it was, so its owner sees why a build vanished.

The reset does not wait for a task manager still working on the old task: it takes the task
and its lease from it, and every later write of that task manager is conditional on its task
(cove.db.instances.end_task), so nothing it does afterwards brings the old task back.
"""

from __future__ import annotations

from typing import Any

from cove.api.context import ApiContext
from cove.common.errors import BadRequest, InstanceNotReady
from cove.common.ids import utcnow
from cove.db.instances import get_instance, reset_task, snapshot
from cove.domain.status import compute_status


def reset_status(c: ApiContext, project_id: str, instance_id: str, args: Any) -> None:
    """Reset the instance of ``project_id``. ``args`` is the action's object: ``{}``, or
    ``{"force_delete": ...}`` as Trove accepts it (the reset is the same).

    Raises BadRequest (``args`` is not an object), InstanceNotFound, InstanceNotReady (the
    task changed while the reset was being made: look again).
    """
    if not isinstance(args, dict):
        raise BadRequest('The reset_status action takes an object: {"reset_status": {}}.')
    now = utcnow()
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        snap = snapshot(inst, inst.guest)
        was = compute_status(snap, now, c.settings.heartbeat_interval).status
        fault = (
            f"The status was reset by an administrator; the instance was {was} "
            f"(task {snap.task.value})."
        )
        if not reset_task(s, instance_id, snap.task, fault, now):
            raise InstanceNotReady(
                f"Instance {instance_id} changed while its status was being reset; try again."
            )
