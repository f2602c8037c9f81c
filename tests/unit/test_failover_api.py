"""Changing a group's primary through the API (cove.api.failover): the checks of
``promote_to_replica_source`` and ``eject_replica_source``, what they record, and the
failovers listing, against a real SQLite control database (no task manager serves here: a
task stays as the API recorded it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from test_instance_admin import Cloud, cloud
from test_replica_api import ready_instance, replicate

from cove.common.ids import utcnow
from cove.db.models import Failover, GuestState
from cove.db.replication import FailoverKind, group_of, start_failover
from cove.domain.status import Task

__all__ = ["cloud"]

PROMOTE = {"promote_to_replica_source": {}}
EJECT = {"eject_replica_source": {}}
RECORD_KEYS = {
    "id",
    "kind",
    "reason",
    "state",
    "message",
    "old_primary",
    "new_primary",
    "epoch",
    "old_position",
    "new_position",
    "lost_bytes",
    "started",
    "promoted",
    "rejoined",
}


def pair(c: Cloud) -> tuple[str, str]:
    """A serving source and a serving replica of it."""
    source = ready_instance(c)
    resp = replicate(c, source)
    assert resp.status_code == 200, resp.text
    replica: str = resp.json()["instance"]["id"]
    c.ready(replica)
    return source, replica


def act(c: Cloud, iid: str, body: dict[str, Any], who: str = "member") -> Any:
    return c.request(who, "POST", f"instances/{iid}/action", body)


def silent(c: Cloud, iid: str) -> None:
    """The instance's agent last reported an hour ago."""
    with c.db.session() as s:
        s.execute(
            update(GuestState)
            .where(GuestState.instance_id == iid)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )


def casts(c: Cloud, method: str) -> list[Any]:
    return [args["instance_id"] for _, m, args in c.bus.casts if m == method]


def failover_rows(c: Cloud) -> list[Failover]:
    with c.db.session() as s:
        return list(s.scalars(select(Failover)))


def bad_request(resp: Any) -> str:
    assert resp.status_code == 400, resp.text
    message: str = resp.json()["badRequest"]["message"]
    return message


def not_ready(resp: Any) -> str:
    assert resp.status_code == 422, resp.text
    message: str = resp.json()["unprocessableEntity"]["message"]
    return message


# -- promote_to_replica_source ------------------------------------------------------------------


def test_promoting_a_replica_records_the_task_and_tells_the_task_managers(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    resp = act(cloud, replica, {"promote_to_replica_source": None})
    assert resp.status_code == 202, resp.text
    assert cloud.row(replica).task == Task.PROMOTING.value
    assert cloud.row(source).task == Task.NONE.value
    assert cloud.show("member", replica)["status"] == "PROMOTE"
    assert casts(cloud, "promote_replica") == [replica]
    again = act(cloud, replica, PROMOTE)
    assert "not ready" in not_ready(again)
    assert casts(cloud, "promote_replica") == [replica]


def test_only_a_replica_is_promoted(cloud: Cloud) -> None:
    source, _ = pair(cloud)
    alone = ready_instance(cloud)
    for iid in (source, alone):
        assert bad_request(act(cloud, iid, PROMOTE)) == f"Instance {iid} is not a replica."
        assert cloud.row(iid).task == Task.NONE.value
    assert casts(cloud, "promote_replica") == []


def test_a_busy_replica_is_not_promoted(cloud: Cloud) -> None:
    _, replica = pair(cloud)
    cloud.set_row(replica, task=Task.RESIZING.value)
    assert f"Instance {replica} is not ready" in not_ready(act(cloud, replica, PROMOTE))
    assert cloud.row(replica).task == Task.RESIZING.value


def test_a_replica_of_a_busy_or_silent_source_is_not_promoted(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    cloud.set_row(source, task=Task.RESIZING.value)
    assert f"Instance {source} is not ready" in not_ready(act(cloud, replica, PROMOTE))
    cloud.set_row(source, task=Task.NONE.value)
    silent(cloud, source)  # gone: that is what eject_replica_source is for
    assert f"Instance {source} is not ready" in not_ready(act(cloud, replica, PROMOTE))
    assert cloud.row(replica).task == Task.NONE.value
    assert casts(cloud, "promote_replica") == []


# -- eject_replica_source -----------------------------------------------------------------------


def test_ejecting_a_silent_source_records_the_task_and_the_failover(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    silent(cloud, source)
    resp = act(cloud, source, EJECT)
    assert resp.status_code == 202, resp.text
    assert cloud.row(source).task == Task.EJECTING.value
    assert cloud.row(replica).task == Task.NONE.value
    assert cloud.show("member", source)["status"] == "EJECT"
    assert casts(cloud, "eject_primary") == [source]
    (row,) = failover_rows(cloud)
    with cloud.db.session() as s:
        group = group_of(s, source)
        assert group is not None and group.primary_id == source
        assert row.group_id == group.id
    assert (row.kind, row.state, row.old_primary_id, row.new_primary_id, row.epoch) == (
        "eject",
        "running",
        source,
        None,
        1,
    )
    again = act(cloud, source, {"eject_replica_source": None})
    assert "not ready" in not_ready(again)
    assert len(failover_rows(cloud)) == 1


def test_a_source_whose_agent_never_reported_may_be_ejected(cloud: Cloud) -> None:
    source, _ = pair(cloud)
    with cloud.db.session() as s:
        s.execute(GuestState.__table__.delete().where(GuestState.instance_id == source))
    assert act(cloud, source, EJECT).status_code == 202
    assert cloud.row(source).task == Task.EJECTING.value


def test_a_source_with_a_current_heartbeat_is_not_ejected(cloud: Cloud) -> None:
    source, _ = pair(cloud)
    message = bad_request(act(cloud, source, EJECT))
    assert message == (
        f"Replica source {source} cannot be ejected as it has a current heartbeat; "
        "promote one of its replicas instead."
    )
    assert cloud.row(source).task == Task.NONE.value
    assert failover_rows(cloud) == [] and casts(cloud, "eject_primary") == []


def test_only_a_replica_source_is_ejected(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    alone = ready_instance(cloud)
    for iid in (replica, alone):
        silent(cloud, iid)
        assert bad_request(act(cloud, iid, EJECT)) == f"Instance {iid} is not a replica source."
    # A source whose replicas are all deleted is one no more.
    cloud.set_row(replica, deleted=True)
    silent(cloud, source)
    assert "not a replica source" in bad_request(act(cloud, source, EJECT))
    assert failover_rows(cloud) == []


def test_a_busy_source_is_not_ejected(cloud: Cloud) -> None:
    source, _ = pair(cloud)
    silent(cloud, source)
    cloud.set_row(source, task=Task.RESIZING.value)
    assert f"Instance {source} is not ready" in not_ready(act(cloud, source, EJECT))
    assert cloud.row(source).task == Task.RESIZING.value
    assert failover_rows(cloud) == []


# -- both ---------------------------------------------------------------------------------------


def test_the_actions_take_no_arguments(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    silent(cloud, source)  # else the eject would be refused for its heartbeat
    for args in ({"force": True}, [], ["x"], "now", 1):
        for iid, action in (
            (replica, "promote_to_replica_source"),
            (source, "eject_replica_source"),
        ):
            message = bad_request(act(cloud, iid, {action: args}))
            assert message == f"The action '{action}' takes no arguments.", args
    assert [cloud.row(i).task for i in (source, replica)] == [Task.NONE.value] * 2
    assert failover_rows(cloud) == []


def test_another_project_can_neither_promote_nor_eject(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    silent(cloud, source)
    assert act(cloud, replica, PROMOTE, who="stranger").status_code == 404
    assert act(cloud, source, EJECT, who="stranger").status_code == 404
    assert [cloud.row(i).task for i in (source, replica)] == [Task.NONE.value] * 2
    assert failover_rows(cloud) == []


# -- the failovers listing ----------------------------------------------------------------------


def listed(c: Cloud, iid: str, who: str = "member") -> list[dict[str, Any]]:
    resp = c.request(who, "GET", f"instances/{iid}/failovers")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert list(body) == ["failovers"]
    records: list[dict[str, Any]] = body["failovers"]
    return records


def test_the_failovers_listing_shows_the_group_s_newest_first(cloud: Cloud) -> None:
    source, replica = pair(cloud)
    silent(cloud, source)
    assert act(cloud, source, EJECT).status_code == 202
    start = datetime(2020, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with cloud.db.session() as s:
        group = group_of(s, source)
        assert group is not None
        older = start_failover(s, group, FailoverKind.SWITCHOVER, "asked", start)
        older.state, older.new_primary_id = "done", replica
        older.old_position, older.new_position, older.lost_bytes = 100, 100, 0
        older.promoted_at = start + timedelta(seconds=1)
        older.rejoined_at = start + timedelta(seconds=2)
        older_id = older.id
    records = listed(cloud, source)
    assert [r["kind"] for r in records] == ["eject", "switchover"]
    for record in records:
        assert set(record) == RECORD_KEYS
    ejected, switched = records
    assert (ejected["state"], ejected["old_primary"], ejected["new_primary"]) == (
        "running",
        source,
        None,
    )
    assert ejected["reason"] == "eject_replica_source was asked"
    assert ejected["promoted"] is None and ejected["rejoined"] is None
    assert switched == {
        "id": older_id,
        "kind": "switchover",
        "reason": "asked",
        "state": "done",
        "message": None,
        "old_primary": source,
        "new_primary": replica,
        "epoch": 1,
        "old_position": 100,
        "new_position": 100,
        "lost_bytes": 0,
        "started": "2020-05-06T07:08:09.123456",
        "promoted": "2020-05-06T07:08:10.123456",
        "rejoined": "2020-05-06T07:08:11.123456",
    }
    assert listed(cloud, replica) == records  # the same history, from a member of the group


def test_an_instance_in_no_group_lists_no_failovers(cloud: Cloud) -> None:
    alone = ready_instance(cloud)
    assert listed(cloud, alone) == []


def test_only_the_instance_s_project_sees_its_failovers(cloud: Cloud) -> None:
    source, _ = pair(cloud)
    resp = cloud.request("stranger", "GET", f"instances/{source}/failovers")
    assert resp.status_code == 404
    assert cloud.request("member", "GET", "instances/nowhere/failovers").status_code == 404
