"""The backup endpoints' checks, views and bookkeeping, against a real SQLite control database
(no task manager serves here: a backup stays as the API recorded it)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update
from test_instance_admin import Cloud, cloud

from cove.db.models import Backup
from cove.domain.backups import BackupStatus

__all__ = ["cloud"]


def backup(c: Cloud, iid: str, who: str = "member", **fields: Any) -> Any:
    return c.request(who, "POST", "backups", {"backup": {"name": "b", "instance": iid, **fields}})


def ready_instance(c: Cloud) -> str:
    iid = c.create()
    c.ready(iid)
    return iid


def set_backup(c: Cloud, backup_id: str, **values: Any) -> None:
    with c.db.session() as s:
        s.execute(update(Backup).where(Backup.id == backup_id).values(**values))


def test_a_backup_is_recorded_new_with_trove_s_fields(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    resp = backup(cloud, iid, description="before the upgrade")
    assert resp.status_code == 202, resp.text
    view = resp.json()["backup"]
    assert set(view) == {
        "id",
        "name",
        "description",
        "locationRef",
        "instance_id",
        "created",
        "updated",
        "size",
        "status",
        "parent_id",
        "project_id",
        "datastore",
        "storage_driver",
    }
    assert (view["status"], view["size"], view["locationRef"]) == ("NEW", None, None)
    assert view["datastore"]["type"] == "postgresql" and view["datastore"]["version"] == "15"
    assert view["datastore"]["version_id"]
    # The instance reads BACKUP while one runs, and takes no second one.
    assert cloud.show("member", iid)["status"] == "BACKUP"
    again = backup(cloud, iid)
    assert again.status_code == 422, again.text
    restart = cloud.request("member", "POST", f"instances/{iid}/action", {"restart": {}})
    assert restart.status_code == 422
    assert cloud.request("member", "GET", f"backups/{view['id']}").json()["backup"] == view
    listed = cloud.request("member", "GET", f"instances/{iid}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [view["id"]]


def test_bad_requests_are_refused_before_anything_is_recorded(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    for fields, status, fault in (
        ({"instance": None}, 400, "badRequest"),
        ({"name": ""}, 400, "badRequest"),
        ({"swift_container": "../etc"}, 400, "badRequest"),
        ({"swift_container": "UPPER"}, 400, "badRequest"),
        ({"storage_driver": "swift"}, 400, "badRequest"),
        ({"incremental": 2}, 400, "badRequest"),
        ({"description": "x" * 256}, 400, "badRequest"),
        ({"restore_from": {"remote_location": "x"}}, 501, "notImplemented"),
    ):
        resp = backup(cloud, iid, **fields)
        assert resp.status_code == status, (fields, resp.text)
        assert list(resp.json()) == [fault]
    unknown = backup(cloud, "0" * 32)
    assert unknown.status_code == 404
    with cloud.db.session() as s:
        assert s.query(Backup).count() == 0


def test_incrementals_follow_the_datastore_s_capabilities(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    first = backup(cloud, iid).json()["backup"]["id"]
    # incremental: 1 with no completed backup makes a full one.
    set_backup(cloud, first, status=BackupStatus.FAILED.value)
    full = backup(cloud, iid, incremental=1)
    assert full.status_code == 202 and full.json()["backup"]["parent_id"] is None
    set_backup(cloud, full.json()["backup"]["id"], status=BackupStatus.COMPLETED.value)
    # PostgreSQL's incrementals build on the newest completed backup, or the one named (the
    # refusal where a datastore has none is in tests/e2e/test_backup_chains.py).
    resp = backup(cloud, iid, incremental=1)
    assert resp.status_code == 202, resp.text
    assert resp.json()["backup"]["parent_id"] == full.json()["backup"]["id"]
    set_backup(cloud, resp.json()["backup"]["id"], status=BackupStatus.COMPLETED.value)
    named = backup(cloud, iid, parent_id=full.json()["backup"]["id"])
    assert named.status_code == 202, named.text
    assert named.json()["backup"]["parent_id"] == full.json()["backup"]["id"]


def test_a_parent_of_another_project_is_not_found(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    ours = backup(cloud, iid).json()["backup"]["id"]
    set_backup(cloud, ours, status=BackupStatus.COMPLETED.value, project_id="elsewhere")
    resp = backup(cloud, iid, parent_id=ours)
    assert resp.status_code == 404, resp.text


def test_the_backups_quota_counts_live_backups(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    shop = cloud.projects["member"]
    quota = cloud.request("cloud", "PUT", f"mgmt/quotas/{shop}", {"quotas": {"backups": 1}})
    assert quota.status_code == 200, quota.text
    first = backup(cloud, iid).json()["backup"]["id"]
    set_backup(cloud, first, status=BackupStatus.COMPLETED.value)
    over = backup(cloud, iid)
    assert over.status_code == 413, over.text
    assert "backups" in over.json()["overLimit"]["message"]
    assert cloud.request("member", "DELETE", f"backups/{first}").status_code == 202
    assert backup(cloud, iid).status_code == 202


def test_delete_takes_the_chain_and_waits_for_running_ones(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    full = backup(cloud, iid).json()["backup"]["id"]
    running = cloud.request("member", "DELETE", f"backups/{full}")
    assert running.status_code == 422, running.text
    set_backup(cloud, full, status=BackupStatus.COMPLETED.value)
    child = backup(cloud, iid).json()["backup"]["id"]
    set_backup(cloud, child, status=BackupStatus.COMPLETED.value, parent_id=full)
    assert cloud.request("member", "DELETE", f"backups/{full}").status_code == 202
    for gone in (full, child):
        assert cloud.request("member", "GET", f"backups/{gone}").status_code == 404
    assert cloud.request("member", "DELETE", f"backups/{full}").status_code == 404


def test_lists_are_per_project_unless_an_administrator_asks(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    mine = backup(cloud, iid).json()["backup"]["id"]
    assert cloud.request("stranger", "GET", f"backups/{mine}").status_code == 404
    assert cloud.request("stranger", "GET", "backups").json()["backups"] == []
    denied = cloud.request("member", "GET", "backups?all_projects=1")
    assert denied.status_code == 403
    everything = cloud.request("cloud", "GET", "backups?all_projects=true").json()["backups"]
    assert [b["id"] for b in everything] == [mine]
    by_store = cloud.request("member", "GET", "backups?datastore=postgresql").json()["backups"]
    assert [b["id"] for b in by_store] == [mine]
    assert cloud.request("member", "GET", "backups?datastore=redis").json()["backups"] == []
    by_instance = cloud.request("member", "GET", f"backups?instance_id={iid}").json()
    assert [b["id"] for b in by_instance["backups"]] == [mine]


def test_a_restore_is_checked_against_the_backup(cloud: Cloud) -> None:
    iid = ready_instance(cloud)
    bid = backup(cloud, iid).json()["backup"]["id"]

    def restore(**fields: Any) -> Any:
        spec = {"name": "r", "flavorRef": "1", "volume": {"size": 1}, **fields}
        return cloud.request("member", "POST", "instances", {"instance": spec})

    running = restore(restorePoint={"backupRef": bid})
    assert running.status_code == 409, running.text
    set_backup(cloud, bid, status=BackupStatus.COMPLETED.value, size=3 * 1024**3)
    too_small = restore(restorePoint={"backupRef": bid})
    assert too_small.status_code == 403, too_small.text
    # What counts is the data once unsealed and decompressed, not the stored artifact.
    set_backup(cloud, bid, size=1024, meta=json.dumps({"raw_size": str(2 * 1024**3)}))
    compressed = restore(restorePoint={"backupRef": bid})
    assert compressed.status_code == 403, compressed.text
    assert "2 GB" in compressed.json()["forbidden"]["message"]
    set_backup(cloud, bid, meta=json.dumps({"raw_size": "4096"}))
    assert restore(restorePoint={"backupRef": "not-a-uuid"}).status_code == 400
    assert restore(restorePoint={"backupRef": bid, "extra": 1}).status_code == 400
    for edge in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        out_of_range = restore(restorePoint={"backupRef": bid, "restore_time": edge})
        assert out_of_range.status_code == 400, out_of_range.text
        assert "out of range" in out_of_range.json()["badRequest"]["message"]
    assert restore(restorePoint={}).status_code == 400
    other = restore(restorePoint={"backupRef": bid}, datastore={"type": "redis"})
    assert other.status_code in (400, 404), other.text
    ok = restore(restorePoint={"backupRef": bid})
    assert ok.status_code == 200, ok.text
    assert ok.json()["instance"]["datastore"]["type"] == "postgresql"
