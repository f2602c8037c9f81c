"""Backup schedules: the ``/backup_schedules`` endpoints, and the task managers' scheduler run
on a clock of the test's own against a real SQLite control database (no guest: a test moves a
backup to its end itself)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from test_instance_admin import Cloud, cloud

from cove.api import guest as api_guest
from cove.db.models import Backup, BackupSchedule, Instance
from cove.domain.backups import BackupStatus
from cove.domain.capabilities import Capability
from cove.domain.status import Task
from cove.taskmanager.scheduler import Scheduler

__all__ = ["cloud"]

DAILY = "0 3 * * *"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ready_instance(c: Cloud) -> str:
    iid = c.create()
    c.ready(iid)
    return iid


def schedule(c: Cloud, iid: str, who: str = "member", **fields: Any) -> Any:
    body = {"backup_schedule": {"instance_id": iid, "cron": DAILY, **fields}}
    return c.request(who, "POST", "backup_schedules", body)


def created(c: Cloud, iid: str, **fields: Any) -> dict[str, Any]:
    resp = schedule(c, iid, **fields)
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()["backup_schedule"]
    return view


def row(c: Cloud, schedule_id: str) -> BackupSchedule:
    with c.db.session() as s:
        found = s.get(BackupSchedule, schedule_id)
        assert found is not None
        return found


def backups(c: Cloud, iid: str) -> list[Backup]:
    """The instance's live backups, oldest first."""
    with c.db.session() as s:
        query = select(Backup).where(Backup.instance_id == iid, Backup.deleted.is_(False))
        return list(s.scalars(query.order_by(Backup.created, Backup.id)))


def finish(c: Cloud, backup_id: str, status: BackupStatus = BackupStatus.COMPLETED) -> None:
    """The backup ends as a task manager would record it."""
    with c.db.session() as s:
        s.execute(update(Backup).where(Backup.id == backup_id).values(status=status.value))


def scheduler(c: Cloud, clock: FakeClock, started: list[str] | None = None) -> Scheduler:
    sink = started if started is not None else []
    return Scheduler(c.context.settings, c.db, sink.append, clock)


def run_passes(c: Cloud, schedule_id: str, passes: int) -> list[str]:
    """Run the schedule ``passes`` times on a clock that jumps to each due run, every backup
    completing before the next pass; returns the ids of the backups it started, in order."""
    clock = FakeClock(row(c, schedule_id).next_run)
    started: list[str] = []
    tm = scheduler(c, clock, started)
    for _ in range(passes):
        clock.now = row(c, schedule_id).next_run
        tm.tick()
        finish(c, started[-1])
        tm.tick()
    return started


# -- the endpoints -------------------------------------------------------------------------------


def test_a_schedule_is_created_shown_listed_changed_and_deleted(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    view = created(cloud, iid, name="nightly", keep_count=7, keep_days=30)
    assert set(view) == {
        "id",
        "name",
        "instance_id",
        "project_id",
        "cron",
        "incremental",
        "keep_count",
        "keep_days",
        "enabled",
        "next_run",
        "last_run",
        "last_backup_id",
        "last_error",
        "created",
        "updated",
        "links",
    }
    assert (view["name"], view["cron"], view["keep_count"], view["keep_days"]) == (
        "nightly",
        DAILY,
        7,
        30,
    )
    assert view["enabled"] is True and view["incremental"] is False
    assert view["next_run"].endswith("T03:00:00") and view["last_run"] is None
    sid = view["id"]
    assert cloud.request("member", "GET", f"backup_schedules/{sid}").json() == {
        "backup_schedule": view
    }
    other = ready_instance(cloud)
    created(cloud, other, cron="15 * * * *")
    every = cloud.request("member", "GET", "backup_schedules").json()["backup_schedules"]
    assert len(every) == 2
    only = cloud.request("member", "GET", f"backup_schedules?instance_id={iid}").json()
    assert [s["id"] for s in only["backup_schedules"]] == [sid]

    change = {"backup_schedule": {"cron": "30  4 * * *", "keep_days": None, "name": None}}
    resp = cloud.request("member", "PUT", f"backup_schedules/{sid}", change)
    assert resp.status_code == 200, resp.text
    changed = resp.json()["backup_schedule"]
    assert (changed["cron"], changed["keep_days"], changed["keep_count"]) == ("30 4 * * *", None, 7)
    assert changed["name"] is None and changed["next_run"].endswith("T04:30:00")
    off = cloud.request(
        "member", "PUT", f"backup_schedules/{sid}", {"backup_schedule": {"enabled": False}}
    )
    assert off.json()["backup_schedule"]["next_run"] is None

    assert cloud.request("member", "DELETE", f"backup_schedules/{sid}").status_code == 202
    assert cloud.request("member", "GET", f"backup_schedules/{sid}").status_code == 404
    assert cloud.request("member", "DELETE", f"backup_schedules/{sid}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cron": "0 3 * *"}, "Invalid cron expression"),
        ({"cron": "61 * * * *"}, "Invalid cron expression"),
        ({"cron": "0 0 30 2 *"}, "never names a time"),
        ({"keep_count": 0}, "Invalid retention: keep_count"),
        ({"keep_days": -3}, "Invalid retention: keep_days"),
        ({"name": "\n"}, "name"),
        ({"keep_count": "3"}, "keep_count"),
        ({"when": "daily"}, "when"),
    ],
)
def test_bad_schedules_are_refused(cloud: Cloud, fields: dict[str, Any], says: str) -> None:
    iid = ready_instance(cloud)
    resp = schedule(cloud, iid, **fields)
    assert resp.status_code == 400, resp.text
    assert says in resp.json()["badRequest"]["message"]
    with cloud.db.session() as s:
        assert s.scalars(select(BackupSchedule)).first() is None


def test_bad_changes_are_refused(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid, keep_count=3)["id"]
    for change in ({"cron": None}, {"enabled": None}, {"keep_count": 0}, {"instance_id": iid}):
        resp = cloud.request(
            "member", "PUT", f"backup_schedules/{sid}", {"backup_schedule": change}
        )
        assert resp.status_code == 400, (change, resp.text)
    assert row(cloud, sid).keep_count == 3


def test_other_projects_see_nothing(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    theirs = schedule(cloud, iid, who="stranger")
    assert theirs.status_code == 404, theirs.text
    assert "Instance" in theirs.json()["itemNotFound"]["message"]
    sid = created(cloud, iid)["id"]
    for method, body in (
        ("GET", None),
        ("PUT", {"backup_schedule": {"enabled": False}}),
        ("DELETE", None),
    ):
        resp = cloud.request("stranger", method, f"backup_schedules/{sid}", body)
        assert resp.status_code == 404, (method, resp.text)
    assert cloud.request("stranger", "GET", "backup_schedules").json()["backup_schedules"] == []
    assert row(cloud, sid).enabled


def test_capabilities_are_checked_up_front(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    iid = ready_instance(cloud)
    monkeypatch.setattr(api_guest, "capabilities", lambda _ds: frozenset({Capability.BACKUPS}))
    resp = schedule(cloud, iid, incremental=True)
    assert resp.status_code == 501, resp.text
    sid = created(cloud, iid)["id"]
    turn_on = {"backup_schedule": {"incremental": True}}
    assert cloud.request("member", "PUT", f"backup_schedules/{sid}", turn_on).status_code == 501
    monkeypatch.setattr(api_guest, "capabilities", lambda _ds: frozenset())
    assert schedule(cloud, iid).status_code == 501


# -- the scheduler -------------------------------------------------------------------------------


def test_due_runs_record_backups_and_retention_keeps_the_newest(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid, name="nightly", keep_count=2)["id"]
    clock = FakeClock(row(cloud, sid).next_run - timedelta(minutes=1))
    started: list[str] = []
    tm = scheduler(cloud, clock, started)
    tm.tick()
    assert started == [] and backups(cloud, iid) == []  # not yet due

    made = []
    for run in range(4):
        clock.now = row(cloud, sid).next_run
        tm.tick()
        assert len(started) == run + 1, row(cloud, sid).last_error
        bid = started[-1]
        made.append(bid)
        sched = row(cloud, sid)
        assert (sched.last_backup_id, sched.last_run, sched.last_error) == (bid, clock.now, None)
        assert sched.next_run == clock.now + timedelta(days=1)
        tm.tick()  # nothing more is due; the backup runs, so retention waits
        assert len(started) == run + 1
        finish(cloud, bid)
        tm.tick()
    live = backups(cloud, iid)
    assert [b.id for b in live] == made[2:]
    assert all(b.name.startswith("nightly 20") for b in live)
    assert live[0].description == f"Made by backup schedule {sid}."
    with cloud.db.session() as s:
        gone = [s.get(Backup, b) for b in made[:2]]
    assert all(b is not None and b.deleted for b in gone)
    # The views show the schedule's runs.
    view = cloud.request("member", "GET", f"backup_schedules/{sid}").json()["backup_schedule"]
    assert view["last_backup_id"] == made[-1]


def test_keep_days_follows_the_scheduler_s_clock(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid, keep_days=2)["id"]
    started = run_passes(cloud, sid, 5)
    # Runs a day apart; the newest three are at most two days old by the scheduler's clock.
    assert [b.id for b in backups(cloud, iid)] == started[2:]


def test_a_run_that_cannot_start_stays_due(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid)["id"]
    due = row(cloud, sid).next_run
    clock = FakeClock(due)
    started: list[str] = []
    tm = scheduler(cloud, clock, started)
    # A backup asked for by hand is running.
    manual = cloud.request("member", "POST", "backups", {"backup": {"name": "m", "instance": iid}})
    assert manual.status_code == 202, manual.text
    tm.tick()
    sched = row(cloud, sid)
    assert started == [] and sched.next_run == due
    assert "A backup of it is running" in (sched.last_error or "")
    view = cloud.request("member", "GET", f"backup_schedules/{sid}").json()["backup_schedule"]
    assert "A backup of it is running" in view["last_error"]
    finish(cloud, manual.json()["backup"]["id"])
    # The instance restarts: still not ready.
    cloud.set_row(iid, task=Task.REBOOTING.value)
    clock.now = due + timedelta(hours=5)
    tm.tick()
    assert started == [] and "Status is REBOOT" in (row(cloud, sid).last_error or "")
    cloud.set_row(iid, task=Task.NONE.value)
    tm.tick()
    sched = row(cloud, sid)
    assert len(started) == 1 and sched.last_error is None
    # Runs missed meanwhile are not made up: the next is after now.
    assert sched.next_run == due + timedelta(days=1)


def test_two_task_managers_never_both_take_a_run(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid)["id"]
    clock = FakeClock(row(cloud, sid).next_run)
    started: list[str] = []
    managers = [scheduler(cloud, clock, started) for _ in range(4)]
    for _ in range(5):
        clock.now = row(cloud, sid).next_run
        gate = threading.Barrier(len(managers))

        def run(tm: Scheduler, gate: threading.Barrier = gate) -> None:
            gate.wait()
            tm.run_due()

        threads = [threading.Thread(target=run, args=(tm,)) for tm in managers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        finish(cloud, started[-1])
    assert len(started) == 5 == len(set(started))
    assert [b.id for b in backups(cloud, iid)] == started


def test_an_incremental_schedule_builds_on_its_latest_backup(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = frozenset(Capability)
    monkeypatch.setattr(api_guest, "capabilities", lambda _ds: everything)
    monkeypatch.setattr("cove.db.backup_records.capabilities", lambda _ds: everything)
    iid = ready_instance(cloud)
    sid = created(cloud, iid, incremental=True, keep_count=3)["id"]
    started = run_passes(cloud, sid, 4)
    parents = {b.id: b.parent_id for b in backups(cloud, iid)}
    # The first is full, the next build on it; once the chain holds keep_count backups a new
    # full one starts the next chain, and the old chain stays while a kept backup needs it.
    a, b, c, d = started
    assert parents == {a: None, b: a, c: b, d: None}


def test_changing_the_retention_applies_it_again(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid)["id"]
    started = run_passes(cloud, sid, 3)
    assert len(backups(cloud, iid)) == 3  # no retention: all kept
    keep_one = {"backup_schedule": {"keep_count": 1}}
    assert cloud.request("member", "PUT", f"backup_schedules/{sid}", keep_one).status_code == 200
    # A pass just before the next run: nothing is due, the new retention is applied.
    scheduler(cloud, FakeClock(row(cloud, sid).next_run - timedelta(seconds=1))).tick()
    assert [b.id for b in backups(cloud, iid)] == started[2:]


def test_deleting_the_instance_deletes_its_schedules_not_its_backups(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid)["id"]
    clock = FakeClock(row(cloud, sid).next_run)
    started: list[str] = []
    scheduler(cloud, clock, started).tick()
    finish(cloud, started[0])
    cloud.serve_taskmanager()
    assert cloud.request("member", "DELETE", f"instances/{iid}").status_code == 202
    cloud.gone(iid)
    assert cloud.request("member", "GET", f"backup_schedules/{sid}").status_code == 404
    assert cloud.request("member", "GET", f"backups/{started[0]}").status_code == 200


def test_a_schedule_of_a_vanished_instance_is_forgotten(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    sid = created(cloud, iid)["id"]
    with cloud.db.session() as s:
        s.execute(update(Instance).where(Instance.id == iid).values(deleted=True))
    clock = FakeClock(row(cloud, sid).next_run)
    started: list[str] = []
    scheduler(cloud, clock, started).tick()
    assert started == []
    assert cloud.request("member", "GET", f"backup_schedules/{sid}").status_code == 404
