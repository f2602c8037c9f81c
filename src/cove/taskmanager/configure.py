"""Applying an instance's settings to a running instance: after a configuration group is
attached, detached or changed (and, through :func:`push_settings`, after a resize).

The compute driver rewrites the guest's settings first (so they hold across agent restarts),
then the guest agent takes them: dynamic parameters are set live, and a static one that changed
leaves the instance RESTART_REQUIRED (reported by the guest's heartbeat) until it is restarted.
A failure leaves the instance usable, with a fault message saying what went wrong.
"""

from __future__ import annotations

import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import get_instance, record_fault
from cove.db.models import Instance
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import guest_spec

LOG = logging.getLogger(__name__)

#: Fault messages recorded here start with this, so a later success clears only its own.
FAULT_PREFIX = "Applying the configuration failed"


def push_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> bool:
    """Give the instance its settings as its row stands now (flavor sizes, volume size, the
    group's values): rewrite them through the compute driver, then have the guest agent apply
    them. Returns whether the server must be restarted for all of them to be in effect (False
    for an instance not placed yet, which will be given them when it is).

    Raises InstanceNotFound, and CoveError when the driver or the guest agent fails.
    """
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if inst.address is None:
            # Not placed yet: placing it reads the settings as they will stand then.
            return False
        spec = guest_spec(tc, inst)
    try:
        previous = tc.driver.update(spec)
    except CoveError:
        raise
    except Exception as exc:
        raise CoveError(f"the compute driver could not update the instance: {exc}") from exc
    try:
        result = tc.guest(instance_id).apply_configuration(
            ctx, spec.ram_mb, spec.vcpus, spec.volume_gb, dict(spec.overrides)
        )
    except CoveError:
        # The guest kept its settings: so must the place, or its next start would take the
        # refused ones.
        if previous is not None:
            try:
                tc.driver.update(previous)
            except Exception as exc:
                LOG.error("cannot put back the settings of instance %s: %s", instance_id, exc)
        raise
    return result.restart_required


def apply_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    """The ``update_configuration`` workflow: :func:`push_settings`, recording a failure as
    the instance's fault (and clearing a fault of an earlier failed attempt on success). Runs
    after any other settings change of the instance under way here (see InstanceLocks)."""
    with tc.locks.hold(instance_id):
        _apply_settings(tc, ctx, instance_id)


def _apply_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted or inst.task == Task.DELETING.value:
            LOG.info("instance %s is gone or going; its settings are not pushed", instance_id)
            return
    try:
        restart = push_settings(tc, ctx, instance_id)
    except CoveError as exc:
        LOG.error("applying the settings of instance %s failed: %s", instance_id, exc.message)
        _record_fault(tc, instance_id, f"{FAULT_PREFIX}: {exc.message}")
        return
    LOG.info(
        "settings of instance %s applied%s",
        instance_id,
        "; a restart is required" if restart else "",
    )
    _record_fault(tc, instance_id, None)


def _record_fault(tc: TaskContext, instance_id: str, message: str | None) -> None:
    with tc.db.session() as s:
        try:
            row = get_instance(s, instance_id)
        except CoveError:
            return  # deleted meanwhile
        if message is not None:
            record_fault(row, message, utcnow())
        elif row.fault_message and row.fault_message.startswith(FAULT_PREFIX):
            # Only this workflow's own fault is cleared: another's still holds.
            record_fault(row, None, utcnow(), touch=False)
