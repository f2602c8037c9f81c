"""What only MariaDB shows through the API, checked with PyMySQL: databases with a character set
and a collation, the server refusing ones it does not know with a clear 400, grants that reach
exactly the granted database, and root seeing every database; the version registered from the
binaries found on the machine."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from harness import ControlPlane, wait_for

from cove.compute.discovery import find_mariadb

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not find_mariadb(), reason="needs mariadbd and mariadb-install-db"),
]


def login(inst: dict[str, Any], user: str, password: str, db: str | None = None) -> Any:
    return pymysql.connect(
        host=inst["ip"][0],
        port=3306,
        user=user,
        password=password,
        database=db,
        connect_timeout=5,
        autocommit=True,
    )


def rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_mariadb_flow(cove_up: ControlPlane) -> None:
    plane = cove_up
    api = plane.http
    versions = api.get("/datastores/mariadb/versions").json()["versions"]
    assert [v["name"] for v in versions] == [v.name for v in find_mariadb()]

    created = plane.create(
        name="shop",
        datastore={"type": "mariadb"},
        databases=[
            {"name": "orders"},
            {"name": "legacy", "character_set": "latin1", "collate": "latin1_swedish_ci"},
        ],
        users=[{"name": "app", "password": "app-Pw:9", "databases": [{"name": "orders"}]}],
    )
    iid = created["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    assert inst["datastore"]["type"] == "mariadb"

    # The databases carry the character sets and collations asked for, as the server has them.
    listed = api.get(f"/instances/{iid}/databases").json()["databases"]
    assert listed == [{"name": "legacy"}, {"name": "orders"}]  # Trove lists names only
    password = api.post(f"/instances/{iid}/root").json()["user"]["password"]
    with login(inst, "root", password) as conn:
        assert rows(
            conn,
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('legacy', 'orders') "
            "ORDER BY 1",
        ) == [
            ("legacy", "latin1", "latin1_swedish_ci"),
            ("orders", "utf8mb4", "utf8mb4_general_ci"),
        ]
    bad = {"databases": [{"name": "x", "character_set": "klingon"}]}
    resp = api.post(f"/instances/{iid}/databases", json=bad)
    assert resp.status_code == 400
    assert "klingon" in resp.text
    bad = {"databases": [{"name": "x", "character_set": "latin1", "collate": "utf8mb4_bin"}]}
    assert api.post(f"/instances/{iid}/databases", json=bad).status_code == 400
    assert (
        api.post(f"/instances/{iid}/databases", json={"databases": [{"name": "mysql"}]}).status_code
        == 400
    )

    # The user sees its database only, over TCP on the instance's own address.
    with login(inst, "app", "app-Pw:9", "orders") as conn:
        rows(conn, "CREATE TABLE t (v VARCHAR(10))")
        rows(conn, "INSERT INTO t VALUES ('kept')")
        assert [r[0] for r in rows(conn, "SHOW DATABASES")] == ["information_schema", "orders"]
        with pytest.raises(pymysql.err.OperationalError):
            rows(conn, "CREATE TABLE legacy.t (v INT)")
    grant = {"databases": [{"name": "legacy"}]}
    assert api.put(f"/instances/{iid}/users/app/databases", json=grant).status_code == 202
    with login(inst, "app", "app-Pw:9", "legacy") as conn:
        rows(conn, "CREATE TABLE t (v INT)")
    users = api.get(f"/instances/{iid}/users").json()["users"]
    assert users == [
        {"name": "app", "host": "%", "databases": [{"name": "legacy"}, {"name": "orders"}]}
    ]

    # Root reads every database; the agent's own account stays out of sight.
    with login(inst, "root", password) as conn:
        assert rows(conn, "SELECT v FROM orders.t") == [("kept",)]
    assert "cove_admin" not in str(api.get(f"/instances/{iid}/users").json())
    assert api.delete(f"/instances/{iid}/users/cove_admin").status_code in (400, 404)

    # Users have hosts: an account of one host is refused from another. A client on this
    # machine reaches the instance's loopback address from 127.0.0.1.
    users = {
        "users": [
            {"name": "near", "password": "near-1", "host": "127.0.0.1"},
            {"name": "far", "password": "far-1", "host": "10.9.9.9"},
        ]
    }
    assert api.post(f"/instances/{iid}/users", json=users).status_code == 202
    listed = {(u["name"], u["host"]) for u in api.get(f"/instances/{iid}/users").json()["users"]}
    assert {("near", "127.0.0.1"), ("far", "10.9.9.9")} <= listed
    login(inst, "near", "near-1").close()
    with pytest.raises(pymysql.err.OperationalError):
        login(inst, "far", "far-1")
    assert api.get(f"/instances/{iid}/users/far@10.9.9.9").status_code == 200
    assert api.get(f"/instances/{iid}/users/far").status_code == 404  # far@% does not exist
    moved = {"user": {"host": "127.0.0.1"}}
    assert api.put(f"/instances/{iid}/users/far%4010.9.9.9", json=moved).status_code == 202
    login(inst, "far", "far-1").close()
    assert api.delete(f"/instances/{iid}/users/far@127.0.0.1").status_code == 202
    with pytest.raises(pymysql.err.OperationalError):
        login(inst, "far", "far-1")
    bad = {"users": [{"name": "x", "password": "x-1", "host": "bad host!"}]}
    assert api.post(f"/instances/{iid}/users", json=bad).status_code == 400

    assert api.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
