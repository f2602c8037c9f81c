"""Changing a replication group's primary ("Replication and failover" in
docs/architecture.md): a switchover (the replica's PROMOTING task), an eject (the primary's
EJECTING task, asked through the API or set by the coordinator when the primary's lease
lapsed) and an old primary's rejoin (its REJOINING task, once its agent reports again).

Every step is idempotent, so a task manager that takes a task over from one that died runs
the workflow again from the start: the guest's fence, promotion and follow answer at once
when done, and naming the new primary in the control database is done once (the group's
``primary_id`` tells). The order matters for split brain: the new primary is named (the
epoch moves on, so the old primary's renewals are refused and its agent fences itself)
before the old primary is killed through the compute driver, and both before the replica is
promoted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.orm import aliased

from cove.common.errors import CoveError, GuestError
from cove.common.ids import utcnow
from cove.db.instances import end_task, get_instance, record_fault, transition
from cove.db.models import Failover, GuestState, Instance, ReplicationGroup
from cove.db.replication import (
    FailoverKind,
    FailoverState,
    ensure_group,
    group_of,
    members,
    name_primary,
    start_failover,
)
from cove.domain.failover import LEASE_TTL, GroupFacts, ReplicaFact, choose
from cove.domain.replication import ReplicaSource, Role
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.rpc.guest import GuestReplicationClient
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)

#: How long a switchover waits for the replica to replay the fenced primary's last record.
CATCH_UP_TIMEOUT = 120.0
#: How long a replica has to tell its position when a primary is being replaced: one that
#: does not answer in time is not a candidate.
STATE_TIMEOUT = 2.0
#: How long an eject keeps asking the chosen replica to promote itself.
PROMOTE_DEADLINE = 60.0
#: How long until a failed follow or rejoin is tried again.
REJOIN_RETRY = timedelta(seconds=30)
_FOLLOW_FAULT = "Following the replica source"
#: How long until the coordinator looks again at a group whose eject found no replica to
#: promote (its primary's agent, if it answers again, renews the lease meanwhile).
NO_CANDIDATE_RETRY = timedelta(seconds=10)


def _guest(
    tc: TaskContext, instance_id: str, timeout: float | None = None
) -> GuestReplicationClient:
    return GuestReplicationClient(tc.bus, instance_id, timeout or tc.settings.rpc_timeout)


def _running_failover(tc: TaskContext, group_id: str) -> str | None:
    with tc.db.session() as s:
        return s.scalar(
            select(Failover.id)
            .where(
                Failover.group_id == group_id,
                Failover.state.in_([FailoverState.RUNNING.value, FailoverState.PROMOTED.value]),
            )
            .order_by(Failover.started_at.desc())
        )


def _record(tc: TaskContext, failover_id: str | None, **values: object) -> None:
    if failover_id is None:
        return
    with tc.db.session() as s:
        row = s.get(Failover, failover_id)
        if row is not None:
            for key, value in values.items():
                setattr(row, key, value)


def _must_rejoin(tc: TaskContext, instance_id: str, after: datetime, fault: str | None) -> None:
    """Leave ``instance_id`` to the coordinator's rejoin pass, once its agent reports after
    ``after``; ``fault`` (if any) says why in its view."""
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.deleted:
            return
        inst.rejoin_after = after
        if fault is not None and inst.task in (Task.NONE.value, Task.REJOINING.value):
            inst.fault_message, inst.fault_at = fault, utcnow()


def _followed(tc: TaskContext, instance_id: str) -> None:
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is not None:
            inst.rejoin_after = None
            if (inst.fault_message or "").startswith(_FOLLOW_FAULT):
                record_fault(inst, None, utcnow())


# -- a switchover -------------------------------------------------------------------------------


def promote_replica(tc: TaskContext, ctx: RequestContext, replica_id: str) -> None:
    """The switchover: nothing written on the old primary is lost, and it follows the new one."""
    with tc.locks.hold(replica_id):
        with tc.db.session() as s:
            inst = get_instance(s, replica_id)
            if inst.task != Task.PROMOTING.value:
                LOG.info("instance %s is no longer being promoted; nothing to do", replica_id)
                return
            old_id = inst.replica_of_id
            group = ensure_group(s, old_id or replica_id, utcnow())
            group_id = group.id
        failover_id = _running_failover(tc, group_id)
        if old_id is not None:
            if failover_id is None:
                with tc.db.session() as s:
                    failover_id = start_failover(
                        s,
                        group_of(s, old_id) or ensure_group(s, old_id, utcnow()),
                        FailoverKind.SWITCHOVER,
                        "promote_to_replica_source was asked",
                        utcnow(),
                    ).id
            try:
                old_position, new_position = _catch_up(tc, ctx, old_id, replica_id)
            except CoveError as exc:
                LOG.error("the switchover to %s failed: %s", replica_id, exc.message)
                fault = f"Promoting the replica failed: {exc.public_message}"
                _record(tc, failover_id, state=FailoverState.FAILED.value, message=fault)
                with tc.db.session() as s:
                    end_task(s, replica_id, Task.PROMOTING, Task.NONE, fault, utcnow())
                return
            with tc.db.session() as s:
                current = group_of(s, old_id)
                if current is not None and current.primary_id == old_id:
                    epoch, _ = name_primary(s, current, replica_id, utcnow())
                    LOG.warning(
                        "instance %s is the primary of its group (epoch %d), after a switchover "
                        "from %s",
                        replica_id,
                        epoch,
                        old_id,
                    )
            # Named first: the promoted replica's agent asks for the lease at once, and is
            # fenced if the control database still calls it a replica.
            source = _promote(tc, ctx, replica_id)
            if source is None:
                fault = "The replica was named the primary but could not be promoted."
                _record(tc, failover_id, state=FailoverState.FAILED.value, message=fault)
                with tc.db.session() as s:
                    end_task(s, replica_id, Task.PROMOTING, Task.NONE, fault, utcnow())
                return
            _record(
                tc,
                failover_id,
                state=FailoverState.PROMOTED.value,
                new_primary_id=replica_id,
                old_position=old_position,
                new_position=new_position,
                lost_bytes=0,
                promoted_at=utcnow(),
            )
        else:
            source = _guest(tc, replica_id).promote_replica(ctx)  # resumed: idempotent
        _follow_all(tc, ctx, replica_id, source, failover_id)
        with tc.db.session() as s:
            end_task(s, replica_id, Task.PROMOTING, Task.NONE, None, utcnow())


def _catch_up(tc: TaskContext, ctx: RequestContext, old_id: str, new_id: str) -> tuple[int, int]:
    """Fence the old primary and wait for the replica to replay its last record; both
    positions then. On a failure the old primary takes writes again. Raises CoveError."""
    old = _guest(tc, old_id)
    new = _guest(tc, new_id)
    position = old.fence_primary(ctx)
    try:
        if position is None:
            raise GuestError(
                f"instance {old_id} did not stop cleanly, so no replica can be known to hold "
                "all its writes; eject it instead"
            )
        reached = _wait_caught_up(ctx, new, position)
    except CoveError:
        with contextlib.suppress(CoveError):
            old.unfence_primary(ctx)
            LOG.info("instance %s takes writes again", old_id)
        raise
    return position, reached


def _wait_caught_up(ctx: RequestContext, guest: GuestReplicationClient, position: int) -> int:
    """Wait until the replica replayed up to ``position``; its position then. Raises
    GuestError when it does not within CATCH_UP_TIMEOUT."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while True:
        state = guest.replication_state(ctx)
        if state.position is not None and state.position >= position:
            return state.position
        if state.role is Role.PRIMARY:
            raise GuestError(f"instance {guest.instance_id} is not a replica any more")
        if time.monotonic() > deadline:
            raise GuestError(
                f"instance {guest.instance_id} did not replay its primary's last writes within "
                f"{CATCH_UP_TIMEOUT:.0f} s"
            )
        time.sleep(0.05)


def _follow_all(
    tc: TaskContext,
    ctx: RequestContext,
    primary_id: str,
    source: ReplicaSource,
    failover_id: str | None,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Have every replica of ``primary_id`` (but ``skip``) follow ``source``, at once; one
    that cannot gets a fault, and the old primary's success ends the failover."""
    with tc.db.session() as s:
        followers = [m.id for m in members(s, primary_id) if m.id not in skip]
        old_primary = s.scalar(select(Failover.old_primary_id).where(Failover.id == failover_id))
        group = group_of(s, primary_id)
        synchronous = group is not None and group.synchronous

    def follow(instance_id: str) -> None:
        try:
            # Asked first, briefly: a follower whose agent is gone would hold the task for as
            # long as a copy may take; it follows once its agent reports again.
            _guest(tc, instance_id, STATE_TIMEOUT).replication_state(ctx)
        except CoveError as exc:
            LOG.error("instance %s cannot follow %s yet: %s", instance_id, primary_id, exc.message)
            _must_rejoin(
                tc,
                instance_id,
                utcnow(),
                f"{_FOLLOW_FAULT} {primary_id} waits for its guest agent to report.",
            )
            return
        try:
            # One source each: MariaDB's offers one copy of its data per answer.
            own = _guest(tc, primary_id).replication_source(ctx) if len(followers) > 1 else source
            _guest(tc, instance_id).follow_primary(ctx, own)
            if synchronous:  # what a replica needs to acknowledge (MariaDB's semi-sync)
                _guest(tc, instance_id).set_synchronous(ctx, True)
        except CoveError as exc:
            LOG.error("instance %s could not follow %s: %s", instance_id, primary_id, exc.message)
            _must_rejoin(
                tc,
                instance_id,
                utcnow() + REJOIN_RETRY,
                f"{_FOLLOW_FAULT} {primary_id} failed: {exc.public_message}",
            )
            return
        _followed(tc, instance_id)
        LOG.info("instance %s follows %s", instance_id, primary_id)
        if instance_id == old_primary:
            _record(tc, failover_id, state=FailoverState.DONE.value, rejoined_at=utcnow())

    if not followers:
        return
    with ThreadPoolExecutor(len(followers), thread_name_prefix="follow") as pool:
        list(pool.map(follow, followers))


# -- an eject (asked, or automatic) -------------------------------------------------------------


def eject_primary(tc: TaskContext, ctx: RequestContext, primary_id: str) -> None:
    """Replace a primary that is gone by its best replica; the old one rejoins later."""
    with tc.locks.hold(primary_id):
        with tc.db.session() as s:
            inst = get_instance(s, primary_id)
            if inst.task != Task.EJECTING.value:
                LOG.info("instance %s is no longer being ejected; nothing to do", primary_id)
                return
            group = group_of(s, primary_id)
            if group is None:
                end_task(
                    s, primary_id, Task.EJECTING, Task.NONE, None, utcnow()
                )  # its replicas went meanwhile
                return
            group_id, new_id = group.id, group.primary_id
            candidates = [(m.id, m.replication_weight) for m in members(s, primary_id)]
            max_lag, synchronous = group.max_lag_bytes, group.synchronous
            last_position = group.primary_position
            held_until = group.lease_until  # renewals are refused while it is EJECTING
        failover_id = _running_failover(tc, group_id)
        if failover_id is None:
            with tc.db.session() as s:
                row = start_failover(
                    s,
                    group_of(s, primary_id) or ensure_group(s, primary_id, utcnow()),
                    FailoverKind.EJECT,
                    "eject_replica_source was asked",
                    utcnow(),
                )
                failover_id = row.id
        if new_id == primary_id:
            choice = choose(
                GroupFacts(
                    tuple(_facts(tc, ctx, candidates)),
                    primary_position=last_position,
                    max_lag=max_lag,
                    synchronous=synchronous,
                )
            )
            if choice.promote is None:
                fault = f"No replica could take the place of the replica source: {choice.reason}."
                LOG.error("instance %s: %s", primary_id, fault)
                _record(tc, failover_id, state=FailoverState.FAILED.value, message=fault)
                with tc.db.session() as s:
                    end_task(s, primary_id, Task.EJECTING, Task.NONE, fault, utcnow())
                    # The coordinator looks again once this "lease" lapses in turn.
                    retry = group_of(s, primary_id)
                    if retry is not None:
                        retry.lease_until = utcnow() + NO_CANDIDATE_RETRY
                # Nothing took its place: where its agent still answers, it serves again.
                with contextlib.suppress(CoveError):
                    _guest(tc, primary_id, STATE_TIMEOUT).unfence_primary(ctx)
                return
            new_id = choice.promote
            with tc.db.session() as s:
                group = group_of(s, primary_id)
                assert group is not None
                epoch, _ = name_primary(s, group, new_id, utcnow())
            LOG.warning(
                "instance %s replaces %s as its group's primary (epoch %d): %s",
                new_id,
                primary_id,
                epoch,
                choice.reason,
            )
            _record(
                tc,
                failover_id,
                new_primary_id=new_id,
                epoch=epoch,
                old_position=last_position,
                lost_bytes=choice.behind,
            )
        if not tc.driver.fence(primary_id):
            # Its agent stops the server at its lease's end; a lease granted before the new
            # primary was named lasts LEASE_TTL at most from now.
            wait = LEASE_TTL
            if held_until is not None:
                wait = min(wait, (held_until - utcnow()).total_seconds())
            LOG.warning(
                "could not fence instance %s through the driver; waiting %.1f s for its lease to "
                "end, when its agent stops its server",
                primary_id,
                max(wait, 0.0),
            )
            time.sleep(max(wait, 0.0))
        source = _promote(tc, ctx, new_id)
        if source is None:
            fault = (
                f"The replica {new_id} chosen to replace the replica source could not be promoted."
            )
            _record(tc, failover_id, state=FailoverState.FAILED.value, message=fault)
            with tc.db.session() as s:
                end_task(s, primary_id, Task.EJECTING, Task.NONE, fault, utcnow())
            return
        with contextlib.suppress(CoveError):
            position = _guest(tc, new_id, STATE_TIMEOUT).replication_state(ctx).position
            _record(tc, failover_id, new_position=position)
        promoted_at = utcnow()
        _record(tc, failover_id, state=FailoverState.PROMOTED.value, promoted_at=promoted_at)
        LOG.warning("instance %s takes writes in place of %s", new_id, primary_id)
        # The old primary rejoins once its agent reports again: an agent started after the
        # fence and the promotion.
        _must_rejoin(tc, primary_id, promoted_at, None)
        _follow_all(tc, ctx, new_id, source, failover_id, skip=frozenset({primary_id}))
        with tc.db.session() as s:
            end_task(s, primary_id, Task.EJECTING, Task.NONE, None, utcnow())


def _facts(
    tc: TaskContext, ctx: RequestContext, candidates: list[tuple[str, int]]
) -> list[ReplicaFact]:
    """What each replica says of itself, asked of all at once (STATE_TIMEOUT each)."""

    def fact(candidate: tuple[str, int]) -> ReplicaFact:
        instance_id, weight = candidate
        try:
            state = _guest(tc, instance_id, STATE_TIMEOUT).replication_state(ctx)
        except CoveError as exc:
            LOG.warning("replica %s does not tell its position: %s", instance_id, exc.message)
            return ReplicaFact(instance_id, False, None, weight)
        return ReplicaFact(instance_id, state.role is Role.REPLICA, state.position, weight)

    if not candidates:
        return []
    with ThreadPoolExecutor(len(candidates), thread_name_prefix="fact") as pool:
        return list(pool.map(fact, candidates))


def _promote(tc: TaskContext, ctx: RequestContext, instance_id: str) -> ReplicaSource | None:
    """Promote the chosen replica (keeping its group's synchronous mode), asking again until
    PROMOTE_DEADLINE; None when it never answered."""
    with tc.db.session() as s:
        group = group_of(s, instance_id)
        synchronous = group is not None and group.synchronous
    deadline = time.monotonic() + PROMOTE_DEADLINE
    while True:
        try:
            source = _guest(tc, instance_id).promote_replica(ctx)
            if synchronous:
                _guest(tc, instance_id).set_synchronous(ctx, True)
            return source
        except CoveError as exc:
            LOG.error("promoting %s failed: %s", instance_id, exc.message)
            if time.monotonic() > deadline:
                return None
        time.sleep(0.5)


# -- an old primary's rejoin --------------------------------------------------------------------


def rejoin_replica(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    """Make an old primary, whose agent reports again, a replica of the group's primary."""
    with tc.locks.hold(instance_id):
        with tc.db.session() as s:
            inst = get_instance(s, instance_id)
            if inst.task != Task.REJOINING.value:
                return
            primary_id = inst.replica_of_id
            failover_id = s.scalar(
                select(Failover.id)
                .where(
                    Failover.old_primary_id == instance_id,
                    Failover.state == FailoverState.PROMOTED.value,
                )
                .order_by(Failover.started_at.desc())
            )
        fault = None
        if primary_id is None:
            fault = "The instance is no replica any more; nothing to rejoin."
        else:
            try:
                source = _guest(tc, primary_id).replication_source(ctx)
                _guest(tc, instance_id).follow_primary(ctx, source)
            except CoveError as exc:
                LOG.error("instance %s could not rejoin: %s", instance_id, exc.message)
                fault = f"{_FOLLOW_FAULT} {primary_id} failed: {exc.public_message}"
        if fault is None:
            _followed(tc, instance_id)
            _record(tc, failover_id, state=FailoverState.DONE.value, rejoined_at=utcnow())
            LOG.warning("instance %s rejoined as a replica of %s", instance_id, primary_id)
        else:
            if primary_id is not None:  # asked again once its agent reports after the wait
                _must_rejoin(tc, instance_id, utcnow() + REJOIN_RETRY, None)
            _record(tc, failover_id, message=fault)
        with tc.db.session() as s:
            end_task(s, instance_id, Task.REJOINING, Task.NONE, fault, utcnow())


# -- the coordinator's passes -------------------------------------------------------------------


def start_failovers(tc: TaskContext) -> list[str]:
    """Set EJECTING, recording an automatic failover, on every primary of this driver whose
    group has replicas, automatic failover on, and a lease that lapsed; the primaries to run
    the eject on. The conditional move of the task makes one task manager the one that runs
    each."""
    now = utcnow()
    member = aliased(Instance)
    with tc.db.session() as s:
        rows = s.execute(
            select(ReplicationGroup.id, ReplicationGroup.primary_id, ReplicationGroup.lease_until)
            .join(Instance, Instance.id == ReplicationGroup.primary_id)
            .where(
                ReplicationGroup.auto_failover.is_(True),
                ReplicationGroup.lease_until.is_not(None),
                ReplicationGroup.lease_until < now,
                Instance.task == Task.NONE.value,
                Instance.deleted.is_(False),
                Instance.compute_driver == tc.driver.name,
                exists().where(
                    member.replica_of_id == ReplicationGroup.primary_id,
                    member.deleted.is_(False),
                ),
                # A switchover under way fences the primary itself: its lease lapses, and
                # the switchover, not the coordinator, names the new one.
                ~exists().where(
                    member.replica_of_id == ReplicationGroup.primary_id,
                    member.task == Task.PROMOTING.value,
                ),
            )
        ).all()
    started = []
    for group_id, primary_id, until in rows:
        try:
            with tc.db.session() as s:
                # Still lapsed now, in the transaction that sets EJECTING: a renewal that
                # landed since the look above wins, and nothing starts.
                cleared = s.execute(
                    update(ReplicationGroup)
                    .where(
                        ReplicationGroup.id == group_id,
                        ReplicationGroup.primary_id == primary_id,
                        ReplicationGroup.lease_until < utcnow(),
                    )
                    .values(lease_until=None)
                    .execution_options(synchronize_session=False)
                )
                if not cleared.rowcount:  # type: ignore[attr-defined]
                    continue
                if not transition(s, primary_id, {Task.NONE}, Task.EJECTING, now):
                    raise _NotStarted
                group = s.get(ReplicationGroup, group_id)
                assert group is not None  # the update above found it
                start_failover(
                    s,
                    group,
                    FailoverKind.AUTOMATIC,
                    f"the primary's lease lapsed at {until:%Y-%m-%d %H:%M:%S.%f} UTC",
                    now,
                )
        except _NotStarted:
            continue
        LOG.warning("the lease of primary %s lapsed; failing over", primary_id)
        started.append(primary_id)
    return started


class _NotStarted(Exception):
    """Rolls back a coordinator's transaction whose task could not be moved."""


def rejoins_due(tc: TaskContext) -> list[str]:
    """Set REJOINING on every replica of this driver that has yet to follow its replica
    source (an old primary after an eject, a follower whose agent was silent or whose follow
    failed) and whose agent reported after its ``rejoin_after``; the instances to run the
    rejoin on."""
    now = utcnow()
    with tc.db.session() as s:
        rows = s.scalars(
            select(Instance.id)
            .join(GuestState, GuestState.instance_id == Instance.id)
            .where(
                Instance.rejoin_after.is_not(None),
                GuestState.heartbeat_at > Instance.rejoin_after,
                Instance.task == Task.NONE.value,
                Instance.replica_of_id.is_not(None),
                Instance.deleted.is_(False),
                Instance.compute_driver == tc.driver.name,
            )
        ).all()
    due = []
    for instance_id in rows:
        with tc.db.session() as s:
            if transition(s, instance_id, {Task.NONE}, Task.REJOINING, now):
                due.append(instance_id)
    return due
