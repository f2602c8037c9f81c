"""Applying an instance's settings to a running instance: after a configuration group is
attached, detached or changed (and, through :func:`push_settings`, after a resize).

The compute driver rewrites the guest's settings first (so they hold across agent restarts),
then the guest agent takes them: dynamic parameters are set live, and a static one that changed
leaves the instance RESTART_REQUIRED (reported by the guest's heartbeat) until it is restarted.
A failure leaves the instance usable, with a fault message saying what went wrong.

Every change of an instance's settings marks its row ``settings_pending`` (the API has already
given the guest the new values within the request when it could, but only a push from here
rewrites the place). :func:`push_pending`, once per monitor pass, pushes each marked instance,
which a success unmarks, so a push that failed or was cut short is resumed.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import SETTINGS_FAULT, clear_settings_pending, get_instance, record_fault
from cove.db.models import Instance
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import guest_spec

LOG = logging.getLogger(__name__)

#: Fault messages recorded here start with this, so a later success clears only its own.
FAULT_PREFIX = SETTINGS_FAULT


def push_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> bool:
    """Give the instance its settings as its row stands now (flavor sizes, volume size, the
    group's values): rewrite them through the compute driver, then have the guest agent apply
    them; then clear its ``settings_pending`` mark, unless the row changed meanwhile. Returns
    whether the server must be restarted for all of them to be in effect (False for an instance
    not placed yet, which will be given them when it is).

    Raises InstanceNotFound, and CoveError when the driver or the guest agent fails.
    """
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if inst.address is None:
            # Not placed yet: placing it reads the settings as they will stand then.
            return False
        spec = guest_spec(tc, inst)
        revision, settings_revision = inst.updated, inst.settings_revision
    try:
        previous = tc.driver.update(spec)
    except CoveError:
        raise
    except Exception as exc:
        raise CoveError(f"the compute driver could not update the instance: {exc}") from exc
    try:
        result = tc.guest(instance_id).apply_configuration(
            ctx, spec.ram_mb, spec.vcpus, spec.volume_gb, dict(spec.overrides), settings_revision
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
    with tc.db.session() as s:
        if not clear_settings_pending(s, instance_id, revision):
            LOG.debug("instance %s: no mark cleared (none, or its row changed)", instance_id)
    return result.restart_required


def apply_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> bool:
    """:func:`push_settings`, recording a failure as the instance's fault (and clearing a fault
    of an earlier failed attempt on success). Runs after any other settings change of the
    instance under way here (see InstanceLocks). Returns False when the push failed."""
    with tc.locks.hold(instance_id):
        return _apply_settings(tc, ctx, instance_id)


def _apply_settings(tc: TaskContext, ctx: RequestContext, instance_id: str) -> bool:
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted or inst.task == Task.DELETING.value:
            LOG.info("instance %s is gone or going; its settings are not pushed", instance_id)
            return True
    try:
        restart = push_settings(tc, ctx, instance_id)
    except CoveError as exc:
        LOG.error("applying the settings of instance %s failed: %s", instance_id, exc.message)
        _record_fault(tc, instance_id, f"{FAULT_PREFIX}: {exc.public_message}")
        return False
    LOG.info(
        "settings of instance %s applied%s",
        instance_id,
        "; a restart is required" if restart else "",
    )
    _record_fault(tc, instance_id, None)
    return True


def push_pending(tc: TaskContext) -> list[str]:
    """Once per monitor pass: start pushing the settings of every instance of this driver
    marked ``settings_pending`` that is placed, has its agent up and no task running, unless a
    push for it is running already or its last one failed too recently (``tc.pushes``). Each
    push runs in a thread of its own, so a guest that does not answer holds up neither the
    monitor nor the other pushes; a push cut short (the task manager stopped) leaves the mark,
    so the next pass starts it again. Returns the ids of the instances whose push started."""
    with tc.db.session() as s:
        rows = s.execute(
            select(Instance.id, Instance.updated)
            .where(
                Instance.deleted.is_(False),
                Instance.settings_pending.is_(True),
                Instance.task == Task.NONE.value,
                Instance.compute_state == ComputeState.ACTIVE.value,
                Instance.address.is_not(None),
                Instance.compute_driver == tc.driver.name,
            )
            .order_by(Instance.updated)
        ).all()
    tc.pushes.keep_only({instance_id for instance_id, _ in rows})
    started = []
    for instance_id, revision in rows:
        if not tc.pushes.claim(instance_id, revision):
            continue
        name = f"push-{instance_id[:8]}"
        threading.Thread(target=_push, args=(tc, instance_id), name=name, daemon=True).start()
        started.append(instance_id)
    return started


def _push(tc: TaskContext, instance_id: str) -> None:
    ok = False
    try:
        ok = apply_settings(tc, RequestContext(), instance_id)
    except Exception:
        LOG.exception("pushing the settings of instance %s failed", instance_id)
    finally:
        tc.pushes.done(instance_id, ok)


def _record_fault(tc: TaskContext, instance_id: str, message: str | None) -> None:
    with tc.db.session() as s:
        try:
            row = get_instance(s, instance_id)
        except CoveError:
            return  # deleted meanwhile
        if message is not None:
            # Not touching ``updated``: a failure is no new change, which would be retried at
            # once (PendingPushes) instead of after its wait.
            record_fault(row, message, utcnow(), touch=False)
        elif row.fault_message and row.fault_message.startswith(FAULT_PREFIX):
            # Only this workflow's own fault is cleared: another's still holds.
            record_fault(row, None, utcnow(), touch=False)
