"""Backups through the Trove API on a running Cove, for every datastore and both stores (a
directory, an S3 server): write, back up, change the data, restore into a new instance and read
exactly the data of the backup's moment with a real client; a damaged artifact is refused; a
deleted backup leaves nothing in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from datastores import DATASTORES, Datastore
from harness import ControlPlane, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "backup-Pw-2291"


def pg(inst: dict[str, Any], db: str = "shop") -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=inst["ip"][0], user="app", password=PASSWORD, dbname=db, autocommit=True
    )


def wait_backup(plane: ControlPlane, backup_id: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        backup: dict[str, Any] = plane.http.get(f"/backups/{backup_id}").json()["backup"]
        if backup["status"] == status:
            return backup
        assert backup["status"] in ("NEW", "BUILDING"), (backup, plane.logs()[-3000:])
        return None

    result: dict[str, Any] = wait_for(check, 120, 0.2, f"backup {status}")
    return result


def artifact_files(plane: ControlPlane) -> list[Path]:
    return sorted(p for p in (plane.data_dir / "backups").rglob("*") if p.is_file())


def stored(plane: ControlPlane, s3: Any) -> list[str]:
    """The artifacts in the plane's store."""
    if s3 is None:
        return [str(p) for p in artifact_files(plane)]
    client = s3.client()
    try:
        listing = client.list_objects_v2(Bucket="cove-e2e")
    except client.exceptions.NoSuchBucket:
        return []
    return [o["Key"] for o in listing.get("Contents", [])]


def forget(ds: Datastore, conn: Any) -> None:
    """Undo what ``ds.write`` stored, on the source after its backup."""
    if ds.name == "redis":
        conn.delete("kept")
    elif ds.name == "mariadb":
        with conn.cursor() as cur:
            cur.execute("DROP TABLE kept")
    else:
        conn.execute("DROP TABLE kept")


@pytest.mark.parametrize("name", sorted(DATASTORES))
def test_a_backup_restores_exactly_its_moment(
    store_plane: tuple[ControlPlane, Any], name: str
) -> None:
    plane, s3 = store_plane
    ds = DATASTORES[name]
    db = "shop" if ds.has_databases else ""
    spec: dict[str, Any] = {"users": [{"name": "app", "password": PASSWORD}]}
    if ds.has_databases:
        spec["databases"] = [{"name": "shop"}]
        spec["users"][0]["databases"] = [{"name": "shop"}]
    source = plane.create(name=f"bk-{name}", datastore={"type": name}, **spec)["id"]
    inst = plane.wait_status(source, "ACTIVE")
    with ds.login(inst, "app", PASSWORD, db) as conn:
        ds.write(conn, "in the backup")

    resp = plane.http.post("/backups", json={"backup": {"name": "nightly", "instance": source}})
    assert resp.status_code == 202, resp.text
    created = resp.json()["backup"]
    assert created["status"] == "NEW" and created["size"] is None
    assert created["datastore"]["type"] == name
    done = wait_backup(plane, created["id"], "COMPLETED")
    assert done["size"] > 0 and done["locationRef"]
    assert done["storage_driver"] == ("s3" if s3 else "filesystem")
    assert plane.wait_status(source, "ACTIVE")
    listed = plane.http.get(f"/instances/{source}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [created["id"]]

    # After the backup: gone from the source, still in the restore.
    with ds.login(inst, "app", PASSWORD, db) as conn:
        forget(ds, conn)
        assert ds.read(conn) is None

    restored = plane.create(
        name=f"bk-{name}-restored",
        datastore={"type": name},
        volume={"size": 1},
        restorePoint={"backupRef": created["id"]},
    )["id"]
    copy = plane.wait_status(restored, "ACTIVE", timeout=180)
    assert copy["datastore"]["type"] == name
    with ds.login(copy, "app", PASSWORD, db) as conn:
        assert ds.read(conn) == "in the backup"
    users = plane.http.get(f"/instances/{restored}/users").json()["users"]
    assert [u["name"] for u in users] == ["app"]

    # A backup outlives its instance.
    assert plane.http.delete(f"/instances/{source}").status_code == 202
    wait_for(lambda: plane.http.get(f"/instances/{source}").status_code == 404, 60, 0.2, "gone")
    assert plane.http.get(f"/backups/{created['id']}").status_code == 200

    # Deleting the backup removes its artifact from the store.
    assert [a for a in stored(plane, s3) if created["id"] in a]
    assert plane.http.delete(f"/backups/{created['id']}").status_code == 202
    assert plane.http.get(f"/backups/{created['id']}").status_code == 404
    wait_for(
        lambda: not [a for a in stored(plane, s3) if created["id"] in a],
        30,
        0.2,
        "the artifact removed",
    )
    assert plane.http.delete(f"/instances/{restored}").status_code == 202


def test_a_damaged_backup_never_becomes_an_active_instance(cove_up: ControlPlane) -> None:
    plane = cove_up
    source = plane.create(
        name="bk-damaged",
        datastore={"type": "postgresql"},
        databases=[{"name": "shop"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
    )["id"]
    plane.wait_status(source, "ACTIVE")
    backup = plane.http.post("/backups", json={"backup": {"name": "b", "instance": source}})
    backup_id = backup.json()["backup"]["id"]
    wait_backup(plane, backup_id, "COMPLETED")
    (artifact,) = [p for p in artifact_files(plane) if backup_id in p.name]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x01
    artifact.write_bytes(bytes(data))

    restored = plane.create(
        name="bk-from-damaged", volume={"size": 1}, restorePoint={"backupRef": backup_id}
    )["id"]
    inst = plane.wait_status(restored, "ERROR", timeout=180)
    assert "damaged" in inst["fault"]["message"] or "changed" in inst["fault"]["message"]
    for iid in (restored, source):
        assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_backup_requests_are_checked(cove_up: ControlPlane) -> None:
    plane = cove_up
    no_instance = plane.http.post("/backups", json={"backup": {"name": "x"}})
    assert no_instance.status_code == 400
    assert no_instance.json()["badRequest"]["message"] == "instance is missing."
    unknown = plane.http.post("/backups", json={"backup": {"name": "x", "instance": "0" * 32}})
    assert unknown.status_code == 404
    missing = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": "r",
                "flavorRef": "1",
                "volume": {"size": 1},
                "restorePoint": {"backupRef": "00000000-0000-0000-0000-000000000000"},
            }
        },
    )
    assert missing.status_code == 404, missing.text
    imported = plane.http.post(
        "/backups", json={"backup": {"name": "x", "restore_from": {"remote_location": "x"}}}
    )
    assert imported.status_code == 501, imported.text
    bad_container = plane.http.post(
        "/backups",
        json={"backup": {"name": "x", "instance": "0" * 32, "swift_container": "../etc"}},
    )
    assert bad_container.status_code == 400, bad_container.text
    source = plane.create(name="bk-container", datastore={"type": "redis"})["id"]
    plane.wait_status(source, "ACTIVE")
    foreign = plane.http.post(
        "/backups",
        json={"backup": {"name": "x", "instance": source, "swift_container": "someone-elses"}},
    )
    assert foreign.status_code == 400, foreign.text
    assert "not one this deployment stores backups in" in foreign.json()["badRequest"]["message"]
    plane.http.delete(f"/instances/{source}")
