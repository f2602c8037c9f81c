"""Resizing an instance: bring its place and its server to the flavor or volume size the API
recorded, or put the old size back.

The API records the new size on the instance with the RESIZING task (so quotas count it at once)
and seals the old one on the row. Here the driver and the guest agent take the new settings; a new
flavor changes the server's memory settings, so the server is restarted. Should any step fail,
the old size goes back on the row, the guest is given the old settings again, and the fault is
recorded: the instance is back to what it was, with the reason shown.
"""

from __future__ import annotations

import logging

from cove.common.errors import CoveError, UnreadableTaskArgs
from cove.common.ids import utcnow
from cove.db.instances import end_task, get_instance, mark_settings_pending
from cove.db.sealed import ResizeArgs
from cove.domain.specs import Resize
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.rpc.guest import RESTART_TIMEOUT
from cove.taskmanager.configure import push_settings
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)

#: How long a resize may take before the monitor gives up waiting for it.
RESIZE_TIMEOUT = RESTART_TIMEOUT * 2


def resize_instance(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    """Resize to what the row holds, the old size coming sealed on the row. Runs after any
    other settings change of the instance under way here (InstanceLocks). Run again after a
    task manager died half-way, it gives the place and the guest the new size again."""
    with tc.locks.hold(instance_id):
        with tc.db.session() as s:
            inst = get_instance(s, instance_id)
            if inst.task != Task.RESIZING.value:
                LOG.info("instance %s is no longer resizing; nothing to do", instance_id)
                return
            sealed = inst.task_args
        try:
            if sealed is None:
                raise UnreadableTaskArgs("the resize's old and new sizes were not recorded")
            change = tc.sealer.open(instance_id, sealed, ResizeArgs).resize
        except UnreadableTaskArgs as exc:
            LOG.error("cannot resize instance %s: %s", instance_id, exc.message)
            with tc.db.session() as s:
                end_task(
                    s,
                    instance_id,
                    Task.RESIZING,
                    Task.NONE,
                    f"Resize failed: {exc.message}",
                    utcnow(),
                )
            return
        _resize(tc, ctx, change)


def _resize(tc: TaskContext, ctx: RequestContext, change: Resize) -> None:
    instance_id = change.instance_id
    with tc.db.session() as s:
        if get_instance(s, instance_id).task != Task.RESIZING.value:
            LOG.info("instance %s is no longer resizing; nothing to do", instance_id)
            return
    flavor = change.new_flavor_id is not None
    fault: str | None = None
    try:
        _apply(tc, ctx, instance_id, restart=flavor)
        LOG.info("instance %s resized", instance_id)
    except CoveError as exc:
        LOG.error("resizing instance %s failed: %s", instance_id, exc.message)
        fault = f"Resize failed: {exc.public_message}"
        _revert(tc, ctx, change)
    with tc.db.session() as s:
        end_task(s, instance_id, Task.RESIZING, Task.NONE, fault, utcnow())


def _apply(tc: TaskContext, ctx: RequestContext, instance_id: str, restart: bool) -> None:
    """Give the driver and the guest the row's sizes; restart the server when asked."""
    push_settings(tc, ctx, instance_id)
    if restart:
        tc.guest(instance_id).restart(ctx)


def _revert(tc: TaskContext, ctx: RequestContext, change: Resize) -> None:
    """Put the old size back on the row (unless something changed it since) and on the guest."""
    instance_id = change.instance_id
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if change.old_flavor_id is not None and inst.flavor_id == change.new_flavor_id:
            inst.flavor_id = change.old_flavor_id
        if change.old_volume_size is not None and inst.volume_size == change.new_volume_size:
            inst.volume_size = change.old_volume_size
        # Should giving the old size back fail too, the monitor pushes the row's size later.
        mark_settings_pending(s, instance_id)
    try:
        _apply(tc, ctx, instance_id, restart=change.old_flavor_id is not None)
    except CoveError as exc:
        LOG.error(
            "instance %s could not be given its old size back either: %s", instance_id, exc.message
        )
