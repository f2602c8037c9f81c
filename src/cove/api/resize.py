"""The resize action: a new flavor or a larger volume for an instance.

The request is checked whole before anything changes: the instance must be ready, the target
must differ from what the instance has (a volume only grows), and the project's quotas must
hold the growth. The new size is then recorded on the instance (so concurrent creates and
resizes count it) together with the RESIZING task, in the transaction that locked the project,
and the task managers bring the guest to it. Should that fail, the task manager puts the old
size back. A larger volume for an instance with replicas grows their volumes too (a replica
holds all its source's data), in the same transaction.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import Response
from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready
from cove.api.instances import tell_task_managers
from cove.api.schemas import gigabytes
from cove.common.errors import (
    BadRequest,
    InstanceNotReady,
    VolumeSizeTooLarge,
)
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db.catalog import find_flavor
from cove.db.clusters import refuse_member
from cove.db.instances import get_instance, mark_settings_pending, replicas_of, transition
from cove.db.quotas import check_resize_quota, lock_project
from cove.db.sealed import ResizeArgs
from cove.domain.specs import Resize
from cove.domain.status import Task
from cove.rpc import RequestContext


def resize(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, args: Any
) -> Response:
    """``{"flavorRef": id}`` or ``{"volume": {"size": N}}``, exactly one of them."""
    if not isinstance(args, dict) or len(args) != 1:
        raise BadRequest("A resize names exactly one of 'flavorRef' and 'volume'.")
    key, value = next(iter(args.items()))
    resized = [instance_id]
    if key == "flavorRef":
        _resize_flavor(c, project_id, instance_id, value, ctx)
    elif key == "volume":
        resized = _resize_volume(c, project_id, instance_id, value)
    else:
        raise BadRequest(f"Cannot resize '{shown(key)}': a resize names 'flavorRef' or 'volume'.")
    for resized_id in resized:
        tell_task_managers(
            resized_id, "resize", functools.partial(c.taskmanager.resize_instance, ctx, resized_id)
        )
    return Response(status_code=202)


def _flavor_ref(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise BadRequest("'flavorRef' names a flavor by its id or name.")
    return str(value)


def _resize_flavor(
    c: ApiContext, project_id: str, instance_id: str, value: Any, ctx: RequestContext
) -> Resize:
    ref = _flavor_ref(value)
    check_ready(c, project_id, instance_id)
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        refuse_member(inst, "resizing a member")
        target = find_flavor(s, ref)
        current = inst.flavor
        if target.id == current.id:
            raise BadRequest(
                f"The new flavor must differ from the current flavor '{current.name}' "
                f"(id {current.id})."
            )
    # The guest knows how much memory its data needs (Redis holds all of it in memory).
    needed = c.guest(instance_id).min_ram_mb(ctx)
    if target.ram < needed:
        raise BadRequest(
            f"Flavor '{target.name}' ({target.ram} MB) is too small for the data of instance "
            f"{instance_id}, which needs at least {needed} MB."
        )
    with c.db.session() as s:
        lock_project(s, project_id)
        inst = get_instance(s, instance_id, project_id)
        old = inst.flavor_id
        check_resize_quota(s, c.settings, project_id, ram=target.ram - inst.flavor.ram)
        change = Resize(instance_id, old_flavor_id=old, new_flavor_id=target.id)
        _start_task(c, s, change)
        inst.flavor_id = target.id
    return change


def _resize_volume(c: ApiContext, project_id: str, instance_id: str, value: Any) -> list[str]:
    """Grow the instance's volume, and its replicas' that are smaller (a replica holds all of
    its source's data), all within the quota or none; returns the ids of what grows."""
    if not isinstance(value, dict) or "size" not in value:
        raise BadRequest("The new volume size must be given as a whole number of GB: {'size': N}.")
    try:
        size = gigabytes(value["size"])  # as at creation
    except ValueError as exc:
        raise BadRequest(f"resize.volume.size {exc}.") from None
    if size > c.settings.max_volume_size:
        raise VolumeSizeTooLarge(
            f"Volume 'size' cannot exceed maximum of {c.settings.max_volume_size} GB, "
            f"{shown(size)} cannot be accepted."
        )
    check_ready(c, project_id, instance_id)
    with c.db.session() as s:
        lock_project(s, project_id)
        inst = get_instance(s, instance_id, project_id)
        refuse_member(inst, "resizing a member")
        old = inst.volume_size
        if size <= old:
            raise BadRequest(
                f"The new volume 'size' must be larger than the current volume size of "
                f"'{old}'. A volume only grows."
            )
        replicas = [get_instance(s, r) for r in replicas_of(s, instance_id)]
        # A replica whose build or deletion failed is left as it is (it is to be deleted);
        # one that is busy (being built, resized, detached) has the request asked again later.
        smaller = [r for r in replicas if r.volume_size < size and not Task(r.task).is_error]
        busy = [r.id for r in smaller if r.task != Task.NONE.value]
        if busy:
            raise InstanceNotReady(
                f"Replica(s) {', '.join(busy)} of instance {instance_id} are busy; grow the "
                "volume once they are ACTIVE (a replica's volume grows with its source's)."
            )
        growth = size - old + sum(size - r.volume_size for r in smaller)
        check_resize_quota(s, c.settings, project_id, volume=growth)
        for grown in (inst, *smaller):
            change = Resize(grown.id, old_volume_size=grown.volume_size, new_volume_size=size)
            _start_task(c, s, change)  # a replica that is busy refuses the whole resize
            grown.volume_size = size
    return [inst.id, *(r.id for r in smaller)]


def _start_task(c: ApiContext, s: Session, change: Resize) -> None:
    """Start the RESIZING task with ``change`` sealed on the row, so whichever task manager
    runs it (or takes it over) knows the old size to put back."""
    instance_id = change.instance_id
    if not transition(s, instance_id, {Task.NONE}, Task.RESIZING, utcnow()):
        raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    get_instance(s, instance_id).task_args = c.sealer.seal(instance_id, ResizeArgs(change))
    # Should the resize and its undo both fail half-way, the monitor pushes the row's sizes.
    mark_settings_pending(s, instance_id)
