"""Backup schedules on a running Cove: a schedule with retention runs several times on a fast
clock, its backups are made by the real guest agent and task manager, and retention deletes
the oldest (their artifacts leave the store); several task managers passing over a due
schedule at once make one backup of it; deleting the instance deletes its schedules, not its
backups.

The schedulers here are the task manager's own (cove.taskmanager.scheduler) on the control
plane's database and bus, with a clock that jumps from one run to the next. The schedules run
on Feb 29 at 04:30 UTC, so the control plane's task manager, on the real clock, never finds
them due while a test runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness import ControlPlane, wait_for

from cove.common.ids import parse_iso
from cove.common.settings import load_settings
from cove.db.engine import Database
from cove.rpc import RequestContext, RpcClient
from cove.rpc.taskmanager import TaskManagerClient
from cove.taskmanager.scheduler import Scheduler

pytestmark = pytest.mark.e2e

LEAP_DAYS = "30 4 29 2 *"


class FastClock:
    """The schedulers' clock: it stands still until a test moves it on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def schedulers(plane: ControlPlane, clock: FastClock, count: int = 1) -> Iterator[list[Scheduler]]:
    """``count`` schedulers as ``count`` task managers run them: each with its own database
    engine, all casting the backups they record to the plane's task managers."""
    settings = load_settings(
        data_dir=plane.data_dir, heartbeat_interval=float(plane.env["COVE_HEARTBEAT_INTERVAL"])
    )
    bus = RpcClient(settings.transport_url)
    client = TaskManagerClient(bus)
    databases = [Database(plane.database_url) for _ in range(count)]

    def start(backup_id: str) -> None:
        client.create_backup(RequestContext(), backup_id)

    try:
        yield [Scheduler(settings, db, start, clock) for db in databases]
    finally:
        for db in databases:
            db.dispose()
        bus.close()


def schedule_view(plane: ControlPlane, schedule_id: str) -> dict[str, Any]:
    resp = plane.http.get(f"/backup_schedules/{schedule_id}")
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()["backup_schedule"]
    return view


def next_run(plane: ControlPlane, schedule_id: str) -> datetime:
    return parse_iso(schedule_view(plane, schedule_id)["next_run"])


def completed(plane: ControlPlane, backup_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        backup: dict[str, Any] = plane.http.get(f"/backups/{backup_id}").json()["backup"]
        if backup["status"] == "COMPLETED":
            return backup
        assert backup["status"] in ("NEW", "BUILDING"), (backup, plane.logs()[-3000:])
        return None

    found: dict[str, Any] = wait_for(check, 120, 0.1, f"backup {backup_id} to complete")
    return found


def live_backups(plane: ControlPlane, instance_id: str) -> set[str]:
    listed = plane.http.get(f"/instances/{instance_id}/backups").json()["backups"]
    return {b["id"] for b in listed}


def artifacts(plane: ControlPlane, backup_id: str) -> list[Path]:
    return [p for p in (plane.data_dir / "backups").rglob(f"*{backup_id}*") if p.is_file()]


def new_instance(plane: ControlPlane, name: str) -> str:
    iid: str = plane.create(name=name, datastore={"type": "redis"})["id"]
    plane.wait_status(iid, "ACTIVE")
    return iid


def new_schedule(plane: ControlPlane, instance_id: str, **fields: Any) -> str:
    spec = {"instance_id": instance_id, "cron": LEAP_DAYS, **fields}
    resp = plane.http.post("/backup_schedules", json={"backup_schedule": spec})
    assert resp.status_code == 200, resp.text
    schedule_id: str = resp.json()["backup_schedule"]["id"]
    return schedule_id


def forget_backups(plane: ControlPlane, backup_ids: set[str]) -> None:
    for backup_id in backup_ids:
        plane.http.delete(f"/backups/{backup_id}")


def test_a_schedule_runs_on_a_fast_clock_and_keeps_its_newest_backups(
    cove_up: ControlPlane,
) -> None:
    plane = cove_up
    iid = new_instance(plane, "scheduled")
    sid = new_schedule(plane, iid, name="leap", keep_count=2)
    clock = FastClock(next_run(plane, sid))
    made: list[str] = []
    with schedulers(plane, clock) as (tm,):
        for run in range(4):
            clock.now = next_run(plane, sid)
            started = tm.run_due()
            assert len(started) == 1, schedule_view(plane, sid)
            made += started
            done = completed(plane, started[0])
            assert done["name"] == f"leap {clock.now:%Y-%m-%d %H:%M}"
            tm.apply_retention()
            assert live_backups(plane, iid) == set(made[-2:]), f"after run {run + 1}"
            view = schedule_view(plane, sid)
            assert view["last_backup_id"] == started[0] and view["last_error"] is None
            assert parse_iso(view["last_run"]) == clock.now
            assert parse_iso(view["next_run"]) > clock.now
    # Pruned as DELETE /backups deletes: gone from the API, then from the store.
    for pruned in made[:2]:
        assert plane.http.get(f"/backups/{pruned}").status_code == 404
        wait_for(lambda p=pruned: not artifacts(plane, p), 60, 0.2, f"artifact of {pruned}")
    assert all(artifacts(plane, kept) for kept in made[2:])

    # Deleting the instance deletes its schedule; its backups stay.
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: plane.http.get(f"/instances/{iid}").status_code == 404, 60, 0.2, "gone")
    wait_for(
        lambda: plane.http.get(f"/backup_schedules/{sid}").status_code == 404,
        30,
        0.2,
        "the schedule to go with its instance",
    )
    assert {b for b in made[2:] if plane.http.get(f"/backups/{b}").status_code == 200} == set(
        made[2:]
    )
    forget_backups(plane, set(made[2:]))


def test_task_managers_passing_at_once_make_one_backup_per_run(cove_up: ControlPlane) -> None:
    plane = cove_up
    iid = new_instance(plane, "contended")
    sid = new_schedule(plane, iid)
    clock = FastClock(next_run(plane, sid))
    started: list[str] = []
    lock = threading.Lock()
    with schedulers(plane, clock, count=3) as managers:
        for _ in range(3):
            clock.now = next_run(plane, sid)
            gate = threading.Barrier(len(managers))

            def run(tm: Scheduler, gate: threading.Barrier = gate) -> None:
                gate.wait()
                ids = tm.run_due()
                with lock:
                    started.extend(ids)

            threads = [threading.Thread(target=run, args=(tm,)) for tm in managers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            completed(plane, started[-1])
    assert len(started) == 3 == len(set(started))
    assert live_backups(plane, iid) == set(started)
    assert plane.http.delete(f"/backup_schedules/{sid}").status_code == 202
    assert live_backups(plane, iid) == set(started)  # a schedule's backups outlive it
    forget_backups(plane, set(started))
