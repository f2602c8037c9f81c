"""PostgreSQL incrementals and point-in-time restores on a running Cove: a full backup starts
the instance's WAL archive, an incremental closes a WAL file and records where it ended, and a
restore replays the archived WAL to exactly that position or to a moment between two writes,
checked with a real client; the API shows the window of moments and refuses one outside it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from harness import ControlPlane, wait_for
from test_backups import stored

pytestmark = pytest.mark.e2e

PASSWORD = "pitr-Pw-5521"


def connect(inst: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=inst["ip"][0], user="app", password=PASSWORD, dbname="shop", autocommit=True
    )


def rows(inst: dict[str, Any]) -> list[str]:
    with connect(inst) as conn:
        return [r[0] for r in conn.execute("SELECT v FROM kept ORDER BY v").fetchall()]


def insert(inst: dict[str, Any], value: str) -> datetime:
    """Insert ``value`` and return the server's clock just after its commit."""
    with connect(inst) as conn:
        conn.execute("INSERT INTO kept VALUES (%s)", (value,))
        moment = conn.execute("SELECT clock_timestamp()").fetchone()
    assert moment is not None
    stamp: datetime = moment[0]
    return stamp


def backup(plane: ControlPlane, source: str, **extra: Any) -> dict[str, Any]:
    resp = plane.http.post("/backups", json={"backup": {"name": "b", "instance": source, **extra}})
    assert resp.status_code == 202, resp.text
    backup_id = resp.json()["backup"]["id"]

    def done() -> dict[str, Any] | None:
        found: dict[str, Any] = plane.http.get(f"/backups/{backup_id}").json()["backup"]
        if found["status"] == "COMPLETED":
            return found
        assert found["status"] in ("NEW", "BUILDING"), found.get("fault") or str(found)
        return None

    result: dict[str, Any] = wait_for(done, 180, 0.2, "the backup completed")
    plane.wait_status(source, "ACTIVE")
    return result


def restore(plane: ControlPlane, name: str, point: dict[str, Any]) -> dict[str, Any]:
    iid = plane.create(name=name, volume={"size": 1}, restorePoint=point)["id"]
    return plane.wait_status(iid, "ACTIVE", timeout=240)


def archived(plane: ControlPlane, s3: Any, instance_id: str) -> list[str]:
    """The archived WAL files of ``instance_id`` in the plane's store."""
    return [a for a in stored(plane, s3) if f"wal/{instance_id}/" in a]


def zulu(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def source(store_plane: tuple[ControlPlane, Any]) -> Iterator[dict[str, Any]]:
    plane, _ = store_plane
    iid = plane.create(
        name="pitr-source",
        datastore={"type": "postgresql"},
        databases=[{"name": "shop"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
    )["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    with connect(inst) as conn:
        conn.execute("CREATE TABLE kept (v text)")
    yield inst
    plane.http.delete(f"/instances/{iid}")


def test_postgresql_incrementals_and_moments_restore_exactly(
    store_plane: tuple[ControlPlane, Any], source: dict[str, Any]
) -> None:
    plane, s3 = store_plane
    sid = source["id"]
    before_any = insert(source, "a")
    window = plane.http.get(f"/instances/{sid}/restore_window").json()["restore_window"]
    assert window == {"instance_id": sid, "earliest": None, "latest": None}

    full = backup(plane, sid)
    assert full["parent_id"] is None
    after_b = insert(source, "b")
    insert(source, "c")
    inc = backup(plane, sid, incremental=1)
    assert inc["parent_id"] == full["id"]
    insert(source, "d")
    inc2 = backup(plane, sid, parent_id=inc["id"])
    assert inc2["parent_id"] == inc["id"]
    # Nothing written since inc2 switched WAL files: the server sits at the start of an empty
    # file, and this incremental still ends at a position a replay reaches.
    idle = backup(plane, sid, incremental=1)
    assert idle["parent_id"] == inc2["id"]

    window = plane.http.get(f"/instances/{sid}/restore_window").json()["restore_window"]
    earliest = datetime.fromisoformat(window["earliest"].replace("Z", "+00:00"))
    latest = datetime.fromisoformat(window["latest"].replace("Z", "+00:00"))
    assert earliest < after_b < latest, window

    # The incrementals restore their own moments; a moment between two writes restores
    # exactly the writes before it.
    assert rows(restore(plane, "pitr-inc", {"backupRef": inc["id"]})) == ["a", "b", "c"]
    assert rows(restore(plane, "pitr-inc2", {"backupRef": inc2["id"]})) == ["a", "b", "c", "d"]
    assert rows(restore(plane, "pitr-idle", {"backupRef": idle["id"]})) == ["a", "b", "c", "d"]
    moment = {"backupRef": full["id"], "restore_time": zulu(after_b)}
    copy = restore(plane, "pitr-moment", moment)
    assert rows(copy) == ["a", "b"]
    with connect(copy) as conn:  # out of recovery: it takes writes
        conn.execute("INSERT INTO kept VALUES ('e')")

    # Outside the window: before the first backup ended, or after the newest archived commit.
    for outside in (before_any - timedelta(hours=1), latest + timedelta(hours=1)):
        resp = plane.http.post(
            "/instances",
            json={
                "instance": {
                    "name": "pitr-outside",
                    "flavorRef": "1",
                    "volume": {"size": 1},
                    "restorePoint": {"backupRef": full["id"], "restore_time": zulu(outside)},
                }
            },
        )
        assert resp.status_code == 400, resp.text
        assert "outside what the backups" in resp.json()["badRequest"]["message"]
    bad = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": "pitr-bad",
                "flavorRef": "1",
                "volume": {"size": 1},
                "restorePoint": {"backupRef": full["id"], "restore_time": "yesterday"},
            }
        },
    )
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["badRequest"]["message"]

    # Deleting the full backup deletes the chain built on it, and the archive it needed.
    assert archived(plane, s3, sid)
    assert plane.http.delete(f"/backups/{full['id']}").status_code == 202
    for gone in (full, inc, inc2, idle):
        assert plane.http.get(f"/backups/{gone['id']}").status_code == 404
    wait_for(lambda: not archived(plane, s3, sid), 60, 0.2, "the WAL archive pruned")
    for name in ("pitr-inc", "pitr-inc2", "pitr-idle", "pitr-moment"):
        for inst in plane.http.get("/instances").json()["instances"]:
            if inst["name"] == name:
                plane.http.delete(f"/instances/{inst['id']}")


def test_a_moment_on_a_datastore_without_wal_is_refused(cove_up: ControlPlane) -> None:
    plane = cove_up
    iid = plane.create(name="pitr-redis", datastore={"type": "redis"})["id"]
    plane.wait_status(iid, "ACTIVE")
    done = backup(plane, iid)
    resp = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": "pitr-redis-copy",
                "flavorRef": "1",
                "volume": {"size": 1},
                "restorePoint": {"backupRef": done["id"], "restore_time": "2026-01-01T00:00:00Z"},
            }
        },
    )
    assert resp.status_code == 501, resp.text
    assert "restore_time" in resp.json()["notImplemented"]["message"]
    plane.http.delete(f"/instances/{iid}")
    plane.http.delete(f"/backups/{done['id']}")
