"""Deletion: stop everything, remove the place, release the address, forget the queue."""

from __future__ import annotations

import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import record_fault, release_address
from cove.db.models import GuestState, Instance
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def delete_instance(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    try:
        tc.driver.destroy(instance_id)
        tc.guest(instance_id).forget()
    except Exception as exc:
        message = exc.message if isinstance(exc, CoveError) else f"{type(exc).__name__}: {exc}"
        LOG.exception("deleting instance %s failed", instance_id)
        with tc.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None and not inst.deleted:
                fault = f"Deleting the instance failed: {message}"
                record_fault(inst, fault, utcnow(), task=Task.DELETE_ERROR)
        return
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None:
            return
        release_address(s, instance_id)
        guest = s.get(GuestState, instance_id)
        if guest is not None:
            s.delete(guest)
        now = utcnow()
        inst.deleted = True
        inst.deleted_at = now
        inst.updated = now
        inst.task = Task.NONE.value
        inst.address = None
    LOG.info("instance %s deleted", instance_id)
