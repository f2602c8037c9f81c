"""Replication groups and their failovers in the control database.

A group exists from the moment its primary gets a replica (``ensure_group``) and follows the
primary through every change (``name_primary``, one transaction that also increments the
epoch and moves every member's ``replica_of_id``). The primary's guest agent holds the
group's lease (``renew_lease``); the task managers' failover coordinator looks for groups
whose lease lapsed (``lapsed_groups``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cove.common.ids import new_id, utcnow
from cove.db.instances import release_address
from cove.db.models import Failover, Instance, ReplicationGroup
from cove.domain.failover import LeaseAnswer, LeaseGrant
from cove.domain.status import Task

#: How far behind its primary a replica may be and still be promoted by default (bytes of
#: WAL for PostgreSQL; the datastore's own unit elsewhere).
DEFAULT_MAX_LAG = 64 * 1024 * 1024


class FailoverKind(StrEnum):
    SWITCHOVER = "switchover"
    EJECT = "eject"
    AUTOMATIC = "automatic"


class FailoverState(StrEnum):
    #: Deciding and promoting.
    RUNNING = "running"
    #: The new primary takes writes; the old one has not rejoined yet.
    PROMOTED = "promoted"
    #: The old primary is a replica of the new one.
    DONE = "done"
    #: Nothing was promoted (the message says why); the old primary is still the primary.
    FAILED = "failed"


def group_of(s: Session, instance_id: str) -> ReplicationGroup | None:
    """The group ``instance_id`` is the primary of, or that its primary leads."""
    group = s.scalars(
        select(ReplicationGroup).where(ReplicationGroup.primary_id == instance_id)
    ).first()
    if group is not None:
        return group
    inst = s.get(Instance, instance_id)
    if inst is None or inst.replica_of_id is None:
        return None
    return s.scalars(
        select(ReplicationGroup).where(ReplicationGroup.primary_id == inst.replica_of_id)
    ).first()


def ensure_group(s: Session, primary_id: str, now: datetime) -> ReplicationGroup:
    """The group led by ``primary_id``, made (epoch 1, failover on) if it has none yet."""
    group = s.scalars(
        select(ReplicationGroup).where(ReplicationGroup.primary_id == primary_id)
    ).first()
    if group is None:
        group = ReplicationGroup(
            id=new_id(),
            primary_id=primary_id,
            epoch=1,
            lease_until=None,
            synchronous=False,
            auto_failover=True,
            max_lag_bytes=DEFAULT_MAX_LAG,
            created=now,
            updated=now,
        )
        s.add(group)
        s.flush()
    return group


def members(s: Session, primary_id: str) -> list[Instance]:
    """The live replicas of ``primary_id``, oldest first."""
    return list(
        s.scalars(
            select(Instance)
            .where(Instance.replica_of_id == primary_id, Instance.deleted.is_(False))
            .order_by(Instance.created, Instance.id)
        )
    )


def name_primary(
    s: Session, group: ReplicationGroup, new_primary_id: str, now: datetime
) -> tuple[int, list[str]]:
    """Make ``new_primary_id`` the group's primary: the epoch moves on (every renewal of the
    old primary is refused from now on), the new primary has no lease yet, and every other
    member (the old primary too) becomes a replica of it. Answers the new epoch and the
    members now replicating from it. Idempotent: naming the primary again changes nothing."""
    old_primary_id = group.primary_id
    if old_primary_id == new_primary_id:
        return group.epoch, [m.id for m in members(s, new_primary_id)]
    others = [m for m in members(s, old_primary_id) if m.id != new_primary_id]
    group.epoch += 1
    group.primary_id = new_primary_id
    group.lease_until = None
    group.primary_position = None
    group.updated = now
    new = s.get(Instance, new_primary_id)
    old = s.get(Instance, old_primary_id)
    assert new is not None and old is not None
    new.replica_of_id = None
    new.rejoin_after = None
    new.updated = now
    followers = []
    for member in [*others, old]:
        if member.deleted:
            continue
        member.replica_of_id = new_primary_id
        member.updated = now
        followers.append(member.id)
    return group.epoch, followers


def drop_if_alone(s: Session, primary_id: str) -> None:
    """Remove the group ``primary_id`` leads once it has no replica left, with its endpoints'
    addresses (its failovers stay, as history)."""
    group = s.scalars(
        select(ReplicationGroup).where(ReplicationGroup.primary_id == primary_id)
    ).first()
    if group is not None and not members(s, primary_id):
        for which in ENDPOINTS:
            release_address(s, endpoint_owner(group.id, which))
        s.delete(group)


#: A group's two endpoints.
ENDPOINTS = ("rw", "ro")


def endpoint_owner(group_id: str, which: str) -> str:
    """The id an endpoint's address is allocated under (the allocation table's owner column
    holds ids of 36 characters)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"cove-endpoint:{group_id}:{which}"))


def renew_lease(
    s: Session, instance_id: str, epoch: int | None, ttl: float, position: int | None = None
) -> LeaseGrant:
    """Extend the lease of ``instance_id``'s group to now + ``ttl`` if it is the group's
    primary (and ``epoch``, when given, is still the group's), by one conditional update: a
    renewal racing a failover either lands before the coordinator saw the lease lapse (and it
    waits) or is refused, the primary's EJECTING task telling."""
    now = utcnow()
    group = s.scalars(
        select(ReplicationGroup).where(ReplicationGroup.primary_id == instance_id)
    ).first()
    if group is None:
        inst = s.get(Instance, instance_id)
        # A replica being detached is promoted by its guest before the row says so.
        if (
            inst is not None
            and inst.replica_of_id is not None
            and inst.task != Task.DETACHING.value
        ):
            return LeaseGrant(LeaseAnswer.REPLICA)
        return LeaseGrant(LeaseAnswer.STANDALONE)
    conditions = [ReplicationGroup.id == group.id, ReplicationGroup.primary_id == instance_id]
    if epoch is not None:
        conditions.append(ReplicationGroup.epoch == epoch)
    # Once its failover has started the old primary gets no lease again: the coordinator no
    # longer looks at the lease while it replaces it (an eject that finds no replica to
    # promote lifts the fence).
    ejecting = select(Instance.id).where(
        Instance.id == instance_id, Instance.task == Task.EJECTING.value
    )
    conditions.append(~ejecting.exists())
    moved = s.execute(
        update(ReplicationGroup)
        .where(*conditions)
        .values(
            lease_until=now + timedelta(seconds=ttl),
            primary_position=func.coalesce(position, ReplicationGroup.primary_position),
        )
        .execution_options(synchronize_session=False)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        return LeaseGrant(LeaseAnswer.REPLICA, group.epoch)
    return LeaseGrant(LeaseAnswer.GRANTED, group.epoch, group.auto_failover)


def start_failover(
    s: Session,
    group: ReplicationGroup,
    kind: FailoverKind,
    reason: str,
    now: datetime,
) -> Failover:
    """Record a failover of ``group`` beginning now (RUNNING)."""
    row = Failover(
        id=new_id(),
        group_id=group.id,
        kind=kind.value,
        reason=reason,
        epoch=group.epoch,
        old_primary_id=group.primary_id,
        state=FailoverState.RUNNING.value,
        started_at=now,
    )
    s.add(row)
    s.flush()
    return row


def failovers_of(s: Session, instance_id: str, limit: int = 20) -> list[Failover]:
    """The newest failovers of the group ``instance_id`` is (or was) in, newest first."""
    group = group_of(s, instance_id)
    ids = {instance_id}
    query = select(Failover)
    if group is not None:
        query = query.where(
            (Failover.group_id == group.id)
            | Failover.old_primary_id.in_(ids)
            | Failover.new_primary_id.in_(ids)
        )
    else:
        query = query.where(Failover.old_primary_id.in_(ids) | Failover.new_primary_id.in_(ids))
    return list(s.scalars(query.order_by(Failover.started_at.desc(), Failover.id).limit(limit)))
