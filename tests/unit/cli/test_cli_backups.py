"""``cove backup`` and ``cove backup schedule``, against a fake Cove."""

from __future__ import annotations

import json
from typing import Any

from fake_cove import FakeCove, reply, run

BACKUP = {
    "id": "b-1",
    "name": "nightly",
    "description": None,
    "locationRef": None,
    "instance_id": "i-1",
    "created": "2026-12-05T12:00:00",
    "updated": "2026-12-05T12:00:00",
    "size": None,
    "status": "NEW",
    "parent_id": None,
    "project_id": "p",
    "datastore": {"type": "postgresql", "version": "15", "version_id": "v-1"},
    "storage_driver": "filesystem",
}

SCHEDULE = {
    "id": "s-1",
    "name": "nightly",
    "instance_id": "i-1",
    "project_id": "p",
    "cron": "0 3 * * *",
    "incremental": False,
    "keep_count": 7,
    "keep_days": None,
    "enabled": True,
    "next_run": "2026-12-06T03:00:00",
    "last_run": None,
    "last_backup_id": None,
    "last_error": None,
    "created": "2026-12-05T12:00:00",
    "updated": "2026-12-05T12:00:00",
    "links": [],
}


def backup(**extra: Any) -> dict[str, Any]:
    return {**BACKUP, **extra}


# -- backups -------------------------------------------------------------------------------------


def test_create_sends_trove_s_body_and_shows_the_backup(cove: FakeCove) -> None:
    cove.on("POST", "backups", reply(202, {"backup": backup()}))
    result = run("backup", "create", "i-1", "nightly", "--description", "before the upgrade")
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [
        {"backup": {"name": "nightly", "instance": "i-1", "description": "before the upgrade"}}
    ]
    lines = result.stdout.splitlines()
    assert "status                NEW" in lines
    assert "datastore.type        postgresql" in lines


def test_create_incremental_and_on_a_parent(cove: FakeCove) -> None:
    cove.on("POST", "backups", reply(202, {"backup": backup()}))
    assert run("backup", "create", "i-1", "n", "--incremental").exit_code == 0
    assert run("backup", "create", "i-1", "n", "--parent", "b-0").exit_code == 0
    first, second = (b["backup"] for b in cove.bodies("POST"))
    assert first["incremental"] == 1 and "parent_id" not in first
    assert second["parent_id"] == "b-0" and "incremental" not in second


def test_create_wait_until_completed(cove: FakeCove) -> None:
    cove.on("POST", "backups", reply(202, {"backup": backup()}))
    cove.on(
        "GET",
        "backups/b-1",
        reply(200, {"backup": backup(status="BUILDING")}),
        reply(200, {"backup": backup(status="COMPLETED", size=0.5)}),
    )
    result = run("backup", "create", "i-1", "nightly", "--wait")
    assert result.exit_code == 0, result.output
    assert "BUILDING (" in result.stderr and "COMPLETED (" in result.stderr
    assert "size (GB)             0.5000" in result.stdout.splitlines()


def test_create_wait_until_failed(cove: FakeCove) -> None:
    cove.on("POST", "backups", reply(202, {"backup": backup()}))
    failed = backup(status="FAILED", fault={"message": "the store is full"})
    cove.on("GET", "backups/b-1", reply(200, {"backup": failed}))
    result = run("backup", "create", "i-1", "nightly", "--wait")
    assert result.exit_code == 1
    assert "backup b-1 is FAILED: the store is full" in result.stderr


def test_create_refused(cove: FakeCove) -> None:
    refusal = {"unprocessableEntity": {"code": 422, "message": "Instance i-1 is not ready."}}
    cove.on("POST", "backups", reply(422, refusal))
    result = run("backup", "create", "i-1", "nightly")
    assert result.exit_code == 1
    assert "Error (422 unprocessableEntity): Instance i-1 is not ready." in result.stderr


def test_list_show_and_delete(cove: FakeCove) -> None:
    done = backup(status="COMPLETED", size=0.0042)
    cove.on("GET", "backups", reply(200, {"backups": [done]}))
    cove.on("GET", "instances/i-1/backups", reply(200, {"backups": [done]}))
    cove.on("GET", "backups/b-1", reply(200, {"backup": done}))
    cove.on("DELETE", "backups/b-1", reply(202))
    listed = run("backup", "list")
    assert listed.exit_code == 0, listed.output
    header, first = listed.stdout.splitlines()
    assert header.split()[:4] == ["ID", "Name", "Instance", "Status"]
    assert first.split() == ["b-1", "nightly", "i-1", "COMPLETED", "0.0042", "2026-12-05T12:00:00"]
    by_instance = run("--json", "backup", "list", "--instance", "i-1")
    assert json.loads(by_instance.stdout)["backups"][0]["id"] == "b-1"
    assert run("--json", "backup", "show", "b-1").exit_code == 0
    deleted = run("backup", "delete", "b-1")
    assert deleted.exit_code == 0 and "Backup b-1 deleted" in deleted.stdout
    paths = [(r.method, r.url.path.split("/", 3)[-1]) for r in cove.requests]
    assert ("GET", "instances/i-1/backups") in paths and ("DELETE", "backups/b-1") in paths


def test_list_all_projects(cove: FakeCove) -> None:
    cove.on("GET", "backups", reply(200, {"backups": []}))
    assert run("backup", "list", "--all-projects").exit_code == 0
    assert cove.requests[-1].url.params.get("all_projects") == "true"


def test_an_unknown_backup(cove: FakeCove) -> None:
    result = run("backup", "show", "nope")
    assert result.stderr == "Error: no backup has the id or name 'nope' (see 'cove backup list')\n"
    assert result.exit_code == 1
    gone = run("backup", "show", "0b" * 16)  # an id is asked of the API, which has none
    assert gone.exit_code == 1 and "Error (404 itemNotFound)" in gone.stderr


# -- schedules -----------------------------------------------------------------------------------


def test_schedule_create_sends_the_body_and_shows_it(cove: FakeCove) -> None:
    cove.on("POST", "backup_schedules", reply(200, {"backup_schedule": SCHEDULE}))
    result = run(
        *("backup", "schedule", "create", "i-1", "--cron", "0 3 * * *"),
        *("--name", "nightly", "--keep-count", "7", "--keep-days", "30", "--incremental"),
    )
    assert result.exit_code == 0, result.output
    assert cove.bodies("POST") == [
        {
            "backup_schedule": {
                "instance_id": "i-1",
                "cron": "0 3 * * *",
                "incremental": True,
                "name": "nightly",
                "keep_count": 7,
                "keep_days": 30,
            }
        }
    ]
    lines = result.stdout.splitlines()
    assert "next_run     2026-12-06T03:00:00" in lines
    assert "keep_count   7" in lines


def test_schedule_create_disabled_and_checked_locally(cove: FakeCove) -> None:
    cove.on("POST", "backup_schedules", reply(200, {"backup_schedule": SCHEDULE}))
    assert (
        run("backup", "schedule", "create", "i-1", "--cron", "* * * * *", "--disabled").exit_code
        == 0
    )
    assert cove.bodies("POST")[0]["backup_schedule"]["enabled"] is False
    bad = run("backup", "schedule", "create", "i-1", "--cron", "0 3 * * *", "--keep-count", "0")
    assert bad.exit_code == 2
    assert run("backup", "schedule", "create", "i-1").exit_code == 2  # --cron is required
    assert len(cove.bodies("POST")) == 1


def test_schedule_create_refused(cove: FakeCove) -> None:
    refusal = {"badRequest": {"code": 400, "message": "Invalid cron expression: ..."}}
    cove.on("POST", "backup_schedules", reply(400, refusal))
    result = run("backup", "schedule", "create", "i-1", "--cron", "0 3 * *")
    assert result.exit_code == 1
    assert "Error (400 badRequest): Invalid cron expression" in result.stderr


def test_schedule_update_sends_only_what_changes(cove: FakeCove) -> None:
    cove.on("PUT", "backup_schedules/s-1", reply(200, {"backup_schedule": SCHEDULE}))
    result = run(
        *("backup", "schedule", "update", "s-1", "--keep-count", "14", "--keep-days", "0"),
        *("--disable", "--full"),
    )
    assert result.exit_code == 0, result.output
    assert cove.bodies("PUT") == [
        {
            "backup_schedule": {
                "incremental": False,
                "enabled": False,
                "keep_count": 14,
                "keep_days": None,
            }
        }
    ]
    assert "cron         0 3 * * *" in result.stdout.splitlines()
    assert run("backup", "schedule", "update", "s-1", "--cron", "5 4 * * *").exit_code == 0
    assert cove.bodies("PUT")[-1] == {"backup_schedule": {"cron": "5 4 * * *"}}


def test_schedule_update_needs_a_change(cove: FakeCove) -> None:
    result = run("backup", "schedule", "update", "s-1")
    assert result.exit_code == 2 and "Nothing to change" in result.output
    assert cove.bodies("PUT") == []


def test_schedule_list_show_and_delete(cove: FakeCove) -> None:
    off = {**SCHEDULE, "id": "s-2", "enabled": False, "keep_count": None, "name": None}
    cove.on("GET", "backup_schedules", reply(200, {"backup_schedules": [SCHEDULE, off]}))
    cove.on("GET", "backup_schedules/s-1", reply(200, {"backup_schedule": SCHEDULE}))
    cove.on("DELETE", "backup_schedules/s-1", reply(202))
    listed = run("backup", "schedule", "list", "--instance", "i-1")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "Name", "Instance", "Cron"]
    assert "7 newest" in lines[1] and "2026-12-06T03:00:00" in lines[1]
    assert "keep all" in lines[2] and "disabled" in lines[2]
    assert cove.requests[-1].url.params.get("instance_id") == "i-1"
    shown = run("--json", "backup", "schedule", "show", "s-1")
    assert json.loads(shown.stdout)["backup_schedule"]["cron"] == "0 3 * * *"
    deleted = run("backup", "schedule", "delete", "s-1")
    assert deleted.exit_code == 0 and "its backups stay" in deleted.stdout
