"""Changing a replication group's primary through the API: Trove's
``promote_to_replica_source`` (a switchover, asked of the replica) and
``eject_replica_source`` (asked of a primary that stopped reporting), and the group's
failover history (a Cove extension).

Both only record the task (and, for an eject, the failover) under the project's lock and tell
the task managers (``cove.taskmanager.failover`` runs them).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready, require
from cove.api.instances import tell_task_managers
from cove.api.responses import View
from cove.api.schemas import ReplicationIn
from cove.common.errors import BadRequest, InstanceNotReady
from cove.common.ids import utcnow
from cove.db.instances import get_instance, snapshot, transition
from cove.db.models import Failover
from cove.db.quotas import lock_project
from cove.db.replication import (
    FailoverKind,
    ensure_group,
    failovers_of,
    group_of,
    members,
    start_failover,
)
from cove.domain.capabilities import Capability
from cove.domain.status import GuestStatus, Task, guest_view
from cove.rpc import RequestContext
from cove.rpc.guest import GuestReplicationClient


class FailoverRecord(View):
    """One change of a group's primary: ``kind`` switchover, eject or automatic; ``state``
    running, promoted (the new primary takes writes), done (the old one rejoined as a
    replica) or failed (``message`` says why); positions in the datastore's unit, and
    ``lost_bytes`` how far the promoted replica was behind the old primary's last known
    position (asynchronous mode's loss; none when unknown)."""

    id: str
    kind: str
    reason: str
    state: str
    message: str | None
    old_primary: str
    new_primary: str | None
    epoch: int
    old_position: int | None
    new_position: int | None
    lost_bytes: int | None
    started: str
    promoted: str | None
    rejoined: str | None


class FailoverList(View):
    failovers: list[FailoverRecord]


def _no_arguments(action: str, args: Any) -> None:
    if args not in (None, {}):
        raise BadRequest(f"The action '{action}' takes no arguments.")


def promote_to_replica_source(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, args: Any
) -> None:
    """Start a switchover to the replica ``instance_id``. Raises InstanceNotFound,
    BadRequest (not a replica, arguments given), OperationNotSupported, InstanceNotReady
    (the replica or its source is busy or not serving: a source that is gone is ejected)."""
    _no_arguments("promote_to_replica_source", args)
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        source_id = inst.replica_of_id
        datastore = inst.datastore_version.datastore.name
    if source_id is None:
        raise BadRequest(f"Instance {instance_id} is not a replica.")
    require(datastore, Capability.REPLICATION)
    check_ready(c, project_id, instance_id)
    check_ready(c, project_id, source_id)
    with c.db.session() as s:
        lock_project(s, project_id)
        if get_instance(s, source_id).task != Task.NONE.value:
            raise InstanceNotReady(f"Instance {source_id} is not ready. (Status is busy).")
        _refuse_a_second_change(s, source_id)
        if not transition(s, instance_id, {Task.NONE}, Task.PROMOTING, utcnow()):
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    tell_task_managers(
        instance_id, "promotion", lambda: c.taskmanager.promote_replica(ctx, instance_id)
    )


def eject_replica_source(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, args: Any
) -> None:
    """Start replacing the primary ``instance_id``, which stopped reporting, by its best
    replica. Raises InstanceNotFound, BadRequest (not a replica source, still reporting,
    arguments given), OperationNotSupported, InstanceNotReady (busy)."""
    _no_arguments("eject_replica_source", args)
    now = utcnow()
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        datastore = inst.datastore_version.datastore.name
        if inst.replica_of_id is not None or not members(s, instance_id):
            raise BadRequest(f"Instance {instance_id} is not a replica source.")
        seen = guest_view(snapshot(inst, inst.guest), now, c.settings.heartbeat_interval)
    require(datastore, Capability.REPLICATION)
    if seen not in (None, GuestStatus.UNKNOWN):
        raise BadRequest(
            f"Replica source {instance_id} cannot be ejected as it has a current heartbeat; "
            "promote one of its replicas instead."
        )
    with c.db.session() as s:
        lock_project(s, project_id)
        _refuse_a_second_change(s, instance_id)
        if not transition(s, instance_id, {Task.NONE}, Task.EJECTING, now):
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
        group = ensure_group(s, instance_id, now)
        start_failover(s, group, FailoverKind.EJECT, "eject_replica_source was asked", now)
    tell_task_managers(instance_id, "eject", lambda: c.taskmanager.eject_primary(ctx, instance_id))


def _refuse_a_second_change(s: Session, primary_id: str) -> None:
    """One change of primary at a time per group: a replica being promoted has fenced the
    primary already. Raises InstanceNotReady."""
    busy = [m.id for m in members(s, primary_id) if m.task == Task.PROMOTING.value]
    if busy:
        raise InstanceNotReady(
            f"Instance {busy[0]} is being promoted to replica source; try again once it is done."
        )


def failover_history(c: ApiContext, project_id: str, instance_id: str) -> list[dict[str, Any]]:
    """The newest failovers of the instance's group, newest first. Raises InstanceNotFound."""
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
        return [failover_view(f) for f in failovers_of(s, instance_id)]


def failover_view(row: Failover) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%f")

    return {
        "id": row.id,
        "kind": row.kind,
        "reason": row.reason,
        "state": row.state,
        "message": row.message,
        "old_primary": row.old_primary_id,
        "new_primary": row.new_primary_id,
        "epoch": row.epoch,
        "old_position": row.old_position,
        "new_position": row.new_position,
        "lost_bytes": row.lost_bytes,
        "started": when(row.started_at),
        "promoted": when(row.promoted_at),
        "rejoined": when(row.rejoined_at),
    }


def update_replication(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, wanted: ReplicationIn
) -> None:
    """Set the instance's promotion weight, and its group's automatic failover and
    synchronous mode. Synchronous mode is set on every member first (replicas before the
    primary when turning it on, the primary first when turning it off, so no commit waits
    for a replica that does not acknowledge), and recorded once all took it. Raises
    InstanceNotFound, BadRequest (no group), OperationNotSupported, InstanceNotReady (a
    member is busy or not serving), GuestError, ServiceUnavailable."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        datastore = inst.datastore_version.datastore.name
        group = group_of(s, instance_id)
        if group is None and (wanted.synchronous is not None or wanted.auto_failover is not None):
            raise BadRequest(f"Instance {instance_id} is in no replication group.")
        primary = group.primary_id if group is not None else instance_id
        replicas = [m.id for m in members(s, primary)]
        current = group.synchronous if group is not None else False
    require(datastore, Capability.REPLICATION)
    if wanted.synchronous is not None and wanted.synchronous != current:
        order = [*replicas, primary] if wanted.synchronous else [primary, *replicas]
        for member in order:
            check_ready(c, project_id, member)
        for member in order:
            GuestReplicationClient(c.bus, member, c.settings.rpc_timeout).set_synchronous(
                ctx, wanted.synchronous
            )
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        if wanted.weight is not None:
            inst.replication_weight = wanted.weight
        group = group_of(s, instance_id)
        if group is not None:
            if wanted.synchronous is not None:
                group.synchronous = wanted.synchronous
            if wanted.auto_failover is not None:
                group.auto_failover = wanted.auto_failover
            group.updated = utcnow()
