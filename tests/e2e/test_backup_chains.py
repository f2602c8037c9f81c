"""Chains of backups through the Trove API on a running Cove, on both stores (a directory, an S3
server): a full backup and incrementals on top of it (``incremental: 1``, which builds on the
instance's newest completed backup, and an explicit ``parent_id``), each restored into a new
instance that holds exactly the rows of its own moment, read with a real client; deleting the
full backup deletes the whole chain and leaves nothing of it in the store. A datastore without
incremental backups refuses them before anything is recorded."""

from __future__ import annotations

from typing import Any

import pytest
from datastores import DATASTORES
from harness import ControlPlane, wait_for
from test_backups import stored, wait_backup

pytestmark = pytest.mark.e2e

PASSWORD = "chain-Pw-5820"


def back_up(plane: ControlPlane, instance_id: str, name: str, **fields: Any) -> dict[str, Any]:
    """Ask for a backup of ``instance_id`` and wait until it completes."""
    resp = plane.http.post(
        "/backups", json={"backup": {"name": name, "instance": instance_id, **fields}}
    )
    assert resp.status_code == 202, resp.text
    return wait_backup(plane, resp.json()["backup"]["id"], "COMPLETED")


def restore(plane: ControlPlane, backup: dict[str, Any], name: str) -> dict[str, Any]:
    """A new instance from ``backup``, once it is ACTIVE."""
    created = plane.create(
        name=name,
        datastore={"type": backup["datastore"]["type"]},
        volume={"size": 1},
        restorePoint={"backupRef": backup["id"]},
    )
    return plane.wait_status(created["id"], "ACTIVE", timeout=180)


def recorded_meta(plane: ControlPlane, backup_id: str) -> dict[str, str]:
    """What the engine recorded for the backup (not shown by the API), from the control
    database."""
    from cove.db.backups import get_backup, meta_of
    from cove.db.engine import Database

    db = Database(plane.database_url)
    try:
        with db.session() as s:
            return meta_of(get_backup(s, backup_id))
    finally:
        db.dispose()


def delete_instances(plane: ControlPlane, *instance_ids: str) -> None:
    for iid in instance_ids:
        assert plane.http.delete(f"/instances/{iid}").status_code == 202
    for iid in instance_ids:
        wait_for(lambda i=iid: plane.http.get(f"/instances/{i}").status_code == 404, 120, 0.2)


# -- MariaDB ---------------------------------------------------------------------------------

MARIADB = DATASTORES["mariadb"]


def maria_write(inst: dict[str, Any], value: str) -> None:
    with MARIADB.login(inst, "app", PASSWORD, "shop") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS rows_seen (v varchar(20))")
        cur.execute("INSERT INTO rows_seen VALUES (%s)", (value,))


def maria_rows(inst: dict[str, Any]) -> list[str]:
    with MARIADB.login(inst, "app", PASSWORD, "shop") as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM rows_seen ORDER BY v")
        return [row[0] for row in cur.fetchall()]


def test_mariadb_incrementals_restore_exactly_their_moment(
    store_plane: tuple[ControlPlane, Any],
) -> None:
    plane, s3 = store_plane
    source = plane.create(
        name="chain-mariadb",
        datastore={"type": "mariadb"},
        databases=[{"name": "shop"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
    )["id"]
    inst = plane.wait_status(source, "ACTIVE")

    maria_write(inst, "A")
    full = back_up(plane, source, "full")
    assert full["parent_id"] is None
    maria_write(inst, "B")
    # incremental: 1 builds on the newest completed backup, parent_id on the one named.
    first = back_up(plane, source, "inc-1", incremental=1)
    assert first["parent_id"] == full["id"]
    sibling = back_up(plane, source, "inc-1b", parent_id=full["id"])
    assert sibling["parent_id"] == full["id"]
    maria_write(inst, "C")
    second = back_up(plane, source, "inc-2", incremental=1)
    assert second["parent_id"] == sibling["id"]
    chain = [full, first, sibling, second]
    assert all(b["storage_driver"] == ("s3" if s3 else "filesystem") for b in chain)
    listed = plane.http.get(f"/instances/{source}/backups").json()["backups"]
    assert sorted(b["id"] for b in listed) == sorted(b["id"] for b in chain)
    # Each incremental starts where its parent ends.
    metas = {b["id"]: recorded_meta(plane, b["id"]) for b in chain}
    assert metas[full["id"]]["type"] == "full" and "from_lsn" not in metas[full["id"]]
    for backup in (first, sibling, second):
        meta, parent = metas[backup["id"]], metas[backup["parent_id"]]
        assert meta["type"] == "incremental", meta
        assert meta["from_lsn"] == parent["to_lsn"] and meta["to_lsn"].isdigit(), (meta, parent)

    # Each restore holds exactly its own moment: full + inc-1, then full + inc-1b + inc-2.
    copy_first = restore(plane, first, "chain-mariadb-inc-1")
    assert maria_rows(copy_first) == ["A", "B"]
    copy_second = restore(plane, second, "chain-mariadb-inc-2")
    assert maria_rows(copy_second) == ["A", "B", "C"]
    users = plane.http.get(f"/instances/{copy_second['id']}/users").json()["users"]
    assert [u["name"] for u in users] == ["app"]
    assert plane.wait_status(source, "ACTIVE")
    maria_write(copy_second, "D")  # the restored server takes writes
    assert maria_rows(copy_second) == ["A", "B", "C", "D"]

    # Deleting the full backup deletes every backup built on it, artifacts and all.
    for backup in chain:
        assert [a for a in stored(plane, s3) if backup["id"] in a], backup["id"]
    assert plane.http.delete(f"/backups/{full['id']}").status_code == 202
    for backup in chain:
        assert plane.http.get(f"/backups/{backup['id']}").status_code == 404
    assert plane.http.get(f"/instances/{source}/backups").json()["backups"] == []
    wait_for(
        lambda: not [a for a in stored(plane, s3) if any(b["id"] in a for b in chain)],
        60,
        0.2,
        "the chain's artifacts removed",
    )
    delete_instances(plane, copy_first["id"], copy_second["id"], source)


# -- datastores without incremental backups --------------------------------------------------


def test_redis_refuses_incremental_backups_up_front(cove_up: ControlPlane) -> None:
    plane = cove_up
    source = plane.create(
        name="chain-redis",
        datastore={"type": "redis"},
        users=[{"name": "app", "password": PASSWORD}],
    )["id"]
    plane.wait_status(source, "ACTIVE")
    full = back_up(plane, source, "full")
    for fields in ({"incremental": 1}, {"parent_id": full["id"]}):
        resp = plane.http.post(
            "/backups", json={"backup": {"name": "inc", "instance": source, **fields}}
        )
        assert resp.status_code == 501, resp.text
        assert resp.json() == {
            "notImplemented": {
                "code": 501,
                "message": "Operation 'incremental backups' is not supported for datastore redis.",
            }
        }
    listed = plane.http.get(f"/instances/{source}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [full["id"]]
    assert plane.http.delete(f"/backups/{full['id']}").status_code == 202
    delete_instances(plane, source)
