"""Replication groups in the control database (cove.db.replication) and the failover
coordinator's passes over them (cove.taskmanager.failover.start_failovers and rejoins_due),
against a migrated SQLite control database; no guest and no task manager answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from cove.common.ids import new_id, utcnow
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import DatastoreVersion, Failover, GuestState, Instance, ReplicationGroup
from cove.db.replication import (
    FailoverKind,
    FailoverState,
    drop_if_alone,
    ensure_group,
    failovers_of,
    group_of,
    members,
    name_primary,
    renew_lease,
    start_failover,
)
from cove.domain.failover import LEASE_TTL, LeaseAnswer
from cove.domain.status import ComputeState, GuestStatus, Task
from cove.taskmanager.context import TaskContext
from cove.taskmanager.failover import REJOIN_RETRY, rejoins_due, start_failovers
from fakes import FakeBus, FakeDriver

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def seed(db: Database, settings: Any) -> None:
    """The catalogue: the flavors and one PostgreSQL version."""
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/x"))


@pytest.fixture
def tc(tmp_path: Any, seeded_db: Any) -> Any:
    settings = load_settings(data_dir=tmp_path)
    seeded_db(settings, seed)
    db = Database(settings.database_url)
    yield TaskContext(settings, db, FakeBus(), FakeDriver())  # type: ignore[arg-type]
    db.dispose()


@pytest.fixture
def db(tc: TaskContext) -> Database:
    return tc.db


def add(db: Database, replica_of: str | None = None, age: float = 0.0, **values: Any) -> str:
    """A serving instance (task NONE) of the local driver, created ``age`` seconds ago."""
    iid = new_id()
    created = utcnow() - timedelta(seconds=age)
    with db.session() as s:
        version = s.scalar(select(DatastoreVersion.id))
        assert version is not None
        s.add(
            Instance(
                id=iid,
                project_id="p",
                name="n",
                flavor_id="1",
                datastore_version_id=version,
                volume_size=1,
                compute_driver="local",
                task=Task.NONE.value,
                task_started_at=created,
                compute_state=ComputeState.ACTIVE.value,
                port=5432,
                created=created,
                updated=created,
                replica_of_id=replica_of,
                **values,
            )
        )
    return iid


def set_row(db: Database, iid: str, **values: Any) -> None:
    with db.session() as s:
        s.execute(update(Instance).where(Instance.id == iid).values(**values))


def row(db: Database, iid: str) -> Instance:
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        return inst


def set_guest(db: Database, iid: str, **values: Any) -> None:
    with db.session() as s:
        s.execute(update(GuestState).where(GuestState.instance_id == iid).values(**values))


def group(db: Database, primary_id: str) -> ReplicationGroup | None:
    with db.session() as s:
        return s.scalars(
            select(ReplicationGroup).where(ReplicationGroup.primary_id == primary_id)
        ).first()


def set_group(db: Database, primary_id: str, **values: Any) -> None:
    with db.session() as s:
        s.execute(
            update(ReplicationGroup)
            .where(ReplicationGroup.primary_id == primary_id)
            .values(**values)
        )


def formed(db: Database, replicas: int = 2) -> tuple[str, list[str]]:
    """A primary and ``replicas`` replicas (created after it, oldest first), with its group."""
    primary = add(db, age=100)
    followers = [add(db, replica_of=primary, age=50 - i) for i in range(replicas)]
    with db.session() as s:
        ensure_group(s, primary, utcnow())
    return primary, followers


def failovers(db: Database) -> list[Failover]:
    with db.session() as s:
        return list(s.scalars(select(Failover).order_by(Failover.started_at)))


# -- groups -------------------------------------------------------------------------------------


def test_ensure_group_makes_one_group_per_primary(db: Database) -> None:
    primary = add(db)
    with db.session() as s:
        first = ensure_group(s, primary, T0)
        again = ensure_group(s, primary, T0 + timedelta(hours=1))
        assert again.id == first.id
    with db.session() as s:
        groups = list(s.scalars(select(ReplicationGroup)))
    assert len(groups) == 1
    made = groups[0]
    assert (made.primary_id, made.epoch, made.lease_until) == (primary, 1, None)
    assert made.auto_failover and not made.synchronous and made.created == T0


def test_group_of_finds_the_group_from_its_primary_or_a_replica(db: Database) -> None:
    primary, (replica, _) = formed(db)
    alone = add(db)
    with db.session() as s:
        led = group_of(s, primary)
        assert led is not None
        followed = group_of(s, replica)
        assert followed is not None and followed.id == led.id
        assert group_of(s, alone) is None
        assert group_of(s, "no-such-instance") is None


def test_members_are_the_live_replicas_oldest_first(db: Database) -> None:
    primary = add(db, age=100)
    young = add(db, replica_of=primary, age=1)
    old = add(db, replica_of=primary, age=10)
    add(db, replica_of=primary, age=5, deleted=True)
    add(db)  # another instance
    with db.session() as s:
        assert [m.id for m in members(s, primary)] == [old, young]


def test_name_primary_moves_the_epoch_the_primary_and_every_member(db: Database) -> None:
    old, (chosen, other) = formed(db)
    gone = add(db, replica_of=old, deleted=True)
    set_group(db, old, lease_until=utcnow() + timedelta(seconds=LEASE_TTL))
    with db.session() as s:
        current = group_of(s, old)
        assert current is not None
        epoch, followers = name_primary(s, current, chosen, T0)
    assert epoch == 2
    assert sorted(followers) == sorted([other, old])
    named = group(db, chosen)
    assert named is not None
    assert (named.epoch, named.lease_until, named.updated) == (2, None, T0)
    assert group(db, old) is None
    assert row(db, chosen).replica_of_id is None
    assert row(db, other).replica_of_id == chosen
    assert row(db, old).replica_of_id == chosen  # the old primary follows too
    assert row(db, gone).replica_of_id == old  # a deleted replica is left as it was
    with db.session() as s:
        assert {m.id for m in members(s, chosen)} == {other, old}


def test_naming_the_same_primary_again_changes_nothing(db: Database) -> None:
    old, (chosen, other) = formed(db)
    with db.session() as s:
        current = group_of(s, old)
        assert current is not None
        name_primary(s, current, chosen, T0)
    with db.session() as s:
        current = group_of(s, chosen)
        assert current is not None
        epoch, followers = name_primary(s, current, chosen, T0 + timedelta(hours=1))
    assert epoch == 2 and sorted(followers) == sorted([other, old])
    named = group(db, chosen)
    assert named is not None and (named.epoch, named.updated) == (2, T0)


def test_drop_if_alone_keeps_a_group_with_replicas_and_its_history(db: Database) -> None:
    primary, replicas = formed(db)
    with db.session() as s:
        current = group_of(s, primary)
        assert current is not None
        start_failover(s, current, FailoverKind.EJECT, "asked", T0)
    with db.session() as s:
        drop_if_alone(s, primary)
    assert group(db, primary) is not None
    for replica in replicas:
        set_row(db, replica, deleted=True)
    with db.session() as s:
        drop_if_alone(s, primary)
    assert group(db, primary) is None
    assert [f.old_primary_id for f in failovers(db)] == [primary]
    with db.session() as s:
        drop_if_alone(s, primary)  # nothing left to drop
        drop_if_alone(s, add(db))  # in no group


# -- the lease ----------------------------------------------------------------------------------


def lease_until(db: Database, primary_id: str) -> datetime | None:
    current = group(db, primary_id)
    assert current is not None
    return current.lease_until


def renew(db: Database, instance_id: str, epoch: int | None) -> Any:
    with db.session() as s:
        return renew_lease(s, instance_id, epoch, LEASE_TTL)


def test_renew_lease_grants_the_primary_and_extends_its_lease(db: Database) -> None:
    primary, _ = formed(db)
    before = utcnow()
    first = renew(db, primary, None)
    after = utcnow()
    assert (first.answer, first.epoch) == (LeaseAnswer.GRANTED, 1)
    until = lease_until(db, primary)
    assert until is not None
    ttl = timedelta(seconds=LEASE_TTL)
    assert before + ttl <= until <= after + ttl
    second = renew(db, primary, 1)
    assert (second.answer, second.epoch) == (LeaseAnswer.GRANTED, 1)
    extended = lease_until(db, primary)
    assert extended is not None and extended > until


def test_renew_lease_refuses_a_stale_epoch(db: Database) -> None:
    primary, _ = formed(db)
    set_group(db, primary, epoch=5, lease_until=T0)
    refused = renew(db, primary, 4)
    assert (refused.answer, refused.epoch) == (LeaseAnswer.REPLICA, 5)
    assert lease_until(db, primary) == T0


def test_renew_lease_refuses_the_old_primary_once_another_is_named(db: Database) -> None:
    old, (chosen, _) = formed(db)
    assert renew(db, old, None).answer is LeaseAnswer.GRANTED
    with db.session() as s:
        current = group_of(s, old)
        assert current is not None
        name_primary(s, current, chosen, utcnow())
    for epoch in (1, None):
        assert renew(db, old, epoch).answer is LeaseAnswer.REPLICA
    assert lease_until(db, chosen) is None  # the refusals extended nothing
    granted = renew(db, chosen, None)
    assert (granted.answer, granted.epoch) == (LeaseAnswer.GRANTED, 2)
    assert renew(db, chosen, 1).answer is LeaseAnswer.REPLICA  # the old epoch, even for it


def test_renew_lease_tells_a_replica_and_a_standalone_instance(db: Database) -> None:
    _, (replica, _) = formed(db)
    alone = add(db)
    answered = renew(db, replica, None)
    assert (answered.answer, answered.epoch) == (LeaseAnswer.REPLICA, None)
    for instance_id in (alone, "no-such-instance"):
        answered = renew(db, instance_id, 3)
        assert (answered.answer, answered.epoch) == (LeaseAnswer.STANDALONE, None)


def test_renewals_record_the_primary_s_position_until_another_is_named(db: Database) -> None:
    primary, (replica, _) = formed(db)
    with db.session() as s:
        assert renew_lease(s, primary, None, LEASE_TTL, 5000).answer is LeaseAnswer.GRANTED
    with db.session() as s:
        renew_lease(s, primary, None, LEASE_TTL, None)  # it could not tell: the last stays
    found = group(db, primary)
    assert found is not None and found.primary_position == 5000
    with db.session() as s:
        name_primary(s, s.get(ReplicationGroup, found.id), replica, utcnow())
    renamed = group(db, replica)
    assert renamed is not None and renamed.primary_position is None


def test_a_replica_being_detached_is_not_told_to_fence(db: Database) -> None:
    # Its guest promotes it before the row stops naming its source.
    _, (replica, _) = formed(db)
    set_row(db, replica, task=Task.DETACHING.value)
    assert renew(db, replica, None).answer is LeaseAnswer.STANDALONE


# -- the failovers' history ---------------------------------------------------------------------


def test_failovers_of_lists_the_group_s_newest_first(db: Database) -> None:
    primary, (replica, _) = formed(db)
    elsewhere, _ = formed(db, replicas=1)
    alone = add(db)
    with db.session() as s:
        led = group_of(s, primary)
        other = group_of(s, elsewhere)
        assert led is not None and other is not None
        ids = [
            start_failover(s, led, FailoverKind.SWITCHOVER, "n", T0 + timedelta(seconds=n)).id
            for n in (1, 3, 2)
        ]
        start_failover(s, other, FailoverKind.AUTOMATIC, "x", T0 + timedelta(seconds=9))
    newest_first = [ids[1], ids[2], ids[0]]
    with db.session() as s:
        assert [f.id for f in failovers_of(s, primary)] == newest_first
        assert [f.id for f in failovers_of(s, replica)] == newest_first
        assert [f.id for f in failovers_of(s, primary, limit=2)] == newest_first[:2]
        assert [f.kind for f in failovers_of(s, elsewhere)] == ["automatic"]
        assert failovers_of(s, alone) == []


def test_failovers_at_the_same_moment_are_ordered_by_id(db: Database) -> None:
    primary, _ = formed(db)
    with db.session() as s:
        led = group_of(s, primary)
        assert led is not None
        ids = [start_failover(s, led, FailoverKind.EJECT, "r", T0).id for _ in range(4)]
    with db.session() as s:
        assert [f.id for f in failovers_of(s, primary)] == sorted(ids)


def test_an_old_primary_keeps_its_failovers_once_its_group_is_gone(db: Database) -> None:
    primary, replicas = formed(db, replicas=1)
    with db.session() as s:
        led = group_of(s, primary)
        assert led is not None
        made = start_failover(s, led, FailoverKind.EJECT, "r", T0).id
    for replica in replicas:
        set_row(db, replica, deleted=True)
    with db.session() as s:
        drop_if_alone(s, primary)
    with db.session() as s:
        assert [f.id for f in failovers_of(s, primary)] == [made]


# -- the coordinator: automatic failovers -------------------------------------------------------


def lapsed(db: Database, **group_values: Any) -> str:
    """A group whose primary's lease ended a second ago; its primary."""
    primary, _ = formed(db, replicas=1)
    values = {"lease_until": utcnow() - timedelta(seconds=1), **group_values}
    set_group(db, primary, **values)
    return primary


def test_start_failovers_ejects_each_primary_whose_lease_lapsed_once(tc: TaskContext) -> None:
    due = lapsed(tc.db)
    assert start_failovers(tc) == [due]
    inst = row(tc.db, due)
    assert inst.task == Task.EJECTING.value and inst.task_started_at is not None
    assert lease_until(tc.db, due) is None
    (recorded,) = failovers(tc.db)
    current = group(tc.db, due)
    assert current is not None
    assert (recorded.kind, recorded.state, recorded.group_id) == (
        FailoverKind.AUTOMATIC.value,
        FailoverState.RUNNING.value,
        current.id,
    )
    assert (recorded.old_primary_id, recorded.new_primary_id, recorded.epoch) == (due, None, 1)
    assert "lease lapsed" in recorded.reason
    # Another pass, even once the lease reads lapsed again, starts nothing more.
    set_group(tc.db, due, lease_until=utcnow() - timedelta(seconds=1))
    assert start_failovers(tc) == []
    assert len(failovers(tc.db)) == 1


def test_the_old_primary_is_not_granted_once_its_failover_started(tc: TaskContext) -> None:
    due = lapsed(tc.db)
    assert start_failovers(tc) == [due]
    late = renew(tc.db, due, 1)  # the agent's renewal, delayed past the lease's end
    assert late.answer is not LeaseAnswer.GRANTED
    assert lease_until(tc.db, due) is None


@pytest.mark.parametrize(
    "case",
    [
        "lease held",
        "never leased",
        "failover off",
        "replicas deleted",
        "primary busy",
        "another driver",
        "primary deleted",
    ],
)
def test_start_failovers_leaves_groups_it_must_not_touch(tc: TaskContext, case: str) -> None:
    db = tc.db
    primary, (replica,) = formed(db, replicas=1)
    set_group(db, primary, lease_until=utcnow() - timedelta(seconds=1))
    if case == "lease held":
        set_group(db, primary, lease_until=utcnow() + timedelta(seconds=LEASE_TTL))
    elif case == "never leased":
        set_group(db, primary, lease_until=None)
    elif case == "failover off":
        set_group(db, primary, auto_failover=False)
    elif case == "replicas deleted":
        set_row(db, replica, deleted=True)
    elif case == "primary busy":
        set_row(db, primary, task=Task.RESIZING.value)
    elif case == "another driver":
        set_row(db, primary, compute_driver="elsewhere")
    elif case == "primary deleted":
        set_row(db, primary, deleted=True)
    task_before = row(db, primary).task
    assert start_failovers(tc) == []
    assert row(db, primary).task == task_before
    assert failovers(db) == []


def test_start_failovers_picks_only_the_lapsed_group_among_others(tc: TaskContext) -> None:
    db = tc.db
    held, _ = formed(db, replicas=1)
    set_group(db, held, lease_until=utcnow() + timedelta(seconds=LEASE_TTL))
    off = lapsed(db, auto_failover=False)
    due = lapsed(db)
    assert start_failovers(tc) == [due]
    assert [row(db, i).task for i in (held, off)] == [Task.NONE.value] * 2
    assert [f.old_primary_id for f in failovers(db)] == [due]


# -- the coordinator: rejoins -------------------------------------------------------------------


def replaced(tc: TaskContext, heard_after: float = 1.0, must_rejoin: bool = True) -> str:
    """An old primary that follows its group's new primary in the control database, promoted
    a minute ago, left to the rejoin pass from then unless ``must_rejoin`` is False, and whose
    agent last reported ``heard_after`` seconds after that promotion."""
    db = tc.db
    old, (chosen, _) = formed(db)
    when = utcnow() - timedelta(minutes=1)
    with db.session() as s:
        current = group_of(s, old)
        assert current is not None
        record = start_failover(s, current, FailoverKind.AUTOMATIC, "lapsed", when)
        name_primary(s, current, chosen, when)
        record.state = FailoverState.PROMOTED.value
        record.new_primary_id = chosen
        record.promoted_at = when
        s.add(
            GuestState(
                instance_id=old,
                status=GuestStatus.SHUTDOWN.value,
                heartbeat_at=when + timedelta(seconds=heard_after),
            )
        )
    if must_rejoin:
        set_row(db, old, rejoin_after=when)
    return old


def test_rejoins_due_picks_an_old_primary_that_reported_since_its_promotion(
    tc: TaskContext,
) -> None:
    old = replaced(tc)
    assert rejoins_due(tc) == [old]
    assert row(tc.db, old).task == Task.REJOINING.value
    assert rejoins_due(tc) == []  # already rejoining


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("silent since the promotion", {"heard_after": -1.0}),
        ("nothing to rejoin (followed already, or never replaced)", {"must_rejoin": False}),
    ],
)
def test_rejoins_due_waits_for_a_report_after_rejoin_after(
    tc: TaskContext, case: str, kwargs: dict[str, Any]
) -> None:
    old = replaced(tc, **kwargs)
    assert rejoins_due(tc) == [], case
    assert row(tc.db, old).task == Task.NONE.value


@pytest.mark.parametrize(
    "values",
    [
        {"task": Task.RESIZING.value},
        {"replica_of_id": None},
        {"deleted": True},
        {"compute_driver": "elsewhere"},
    ],
)
def test_rejoins_due_leaves_instances_it_must_not_touch(
    tc: TaskContext, values: dict[str, Any]
) -> None:
    old = replaced(tc)
    set_row(tc.db, old, **values)
    assert rejoins_due(tc) == []


def test_rejoins_due_needs_a_report_at_all(tc: TaskContext) -> None:
    old = replaced(tc)
    with tc.db.session() as s:
        s.execute(GuestState.__table__.delete().where(GuestState.instance_id == old))
    assert rejoins_due(tc) == []


def test_a_failed_rejoin_is_tried_again_after_rejoin_retry(tc: TaskContext) -> None:
    old = replaced(tc)
    # What a failed attempt leaves: asked again once the agent reports after the wait.
    set_row(tc.db, old, rejoin_after=utcnow() + REJOIN_RETRY)
    set_guest(tc.db, old, heartbeat_at=utcnow())
    assert rejoins_due(tc) == []
    assert row(tc.db, old).task == Task.NONE.value
    set_guest(tc.db, old, heartbeat_at=utcnow() + REJOIN_RETRY + timedelta(seconds=1))
    assert rejoins_due(tc) == [old]


def test_a_fault_does_not_hold_a_rejoin_back(tc: TaskContext) -> None:
    old = replaced(tc)
    set_row(tc.db, old, fault_message="The database server stopped unexpectedly", fault_at=utcnow())
    assert rejoins_due(tc) == [old]


def test_a_replica_named_primary_has_nothing_to_rejoin(tc: TaskContext) -> None:
    old = replaced(tc)
    with tc.db.session() as s:
        group = s.scalars(select(ReplicationGroup)).one()
        name_primary(s, group, old, utcnow())
    assert row(tc.db, old).rejoin_after is None
    assert rejoins_due(tc) == []


def test_only_one_pass_moves_an_old_primary_with_two_promoted_failovers(tc: TaskContext) -> None:
    old = replaced(tc)
    with tc.db.session() as s:
        (first,) = s.scalars(select(Failover))
        copy = {c.key: getattr(first, c.key) for c in Failover.__table__.columns}
        s.add(Failover(**{**copy, "id": new_id()}))
    with tc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Failover)) == 2
    assert rejoins_due(tc) == [old]


def test_a_switchover_under_way_is_left_to_itself(tc: TaskContext) -> None:
    due = lapsed(tc.db)
    (replica,) = [m for m in _members(tc.db, due)]
    set_row(tc.db, replica, task=Task.PROMOTING.value)
    assert start_failovers(tc) == []
    set_row(tc.db, replica, task=Task.NONE.value)
    assert start_failovers(tc) == [due]


def test_a_renewal_after_the_look_wins_over_the_coordinator(tc: TaskContext) -> None:
    due = lapsed(tc.db)
    set_group(tc.db, due, lease_until=utcnow() + timedelta(seconds=1))
    assert start_failovers(tc) == []
    assert row(tc.db, due).task == Task.NONE.value and failovers(tc.db) == []


def test_a_grant_tells_whether_the_group_fails_over_by_itself(db: Database) -> None:
    primary, _ = formed(db, replicas=1)
    assert renew(db, primary, None).auto_failover is True
    set_group(db, primary, auto_failover=False)
    assert renew(db, primary, None).auto_failover is False


def _members(db: Database, primary: str) -> list[str]:
    with db.session() as s:
        return [m.id for m in members(s, primary)]
