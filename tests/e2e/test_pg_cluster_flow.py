"""A PostgreSQL active-passive cluster with weighted members: a primary and two replicas
built by the replication machinery, the cluster's read-write endpoint reaching the primary,
and, when the primary's server is killed, the heaviest up-to-date replica promoted and the
endpoint following it."""

from __future__ import annotations

import os
import signal
from typing import Any

import psycopg
import pytest
from harness import ControlPlane, delete_clusters, wait_for
from test_crash_recovery import server_pid

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 300.0


def connect(where: str, password: str, dbname: str = "shop") -> psycopg.Connection[Any]:
    host, port = where.rsplit(":", 1)
    return psycopg.connect(
        host=host,
        port=int(port),
        user="root",
        password=password,
        dbname=dbname,
        connect_timeout=3,
        autocommit=True,
    )


def write(where: str, password: str, value: str) -> bool:
    """Whether a row could be written through ``where``."""
    try:
        with connect(where, password) as conn:
            conn.execute("INSERT INTO marks (v) VALUES (%s)", (value,))
    except psycopg.Error:
        return False
    return True


def test_the_heaviest_replica_takes_over(cove_up: ControlPlane) -> None:
    api = cove_up.account("pg-clusters", "pg-cluster-user", "member").http
    try:
        weighted_failover(cove_up, api)
    except BaseException:
        delete_clusters(api)
        raise


def weighted_failover(plane: ControlPlane, api: Any) -> None:
    # The heaviest replica is not the last member: the promotion follows the weight.
    weights = [100, 50, 10]
    body = {
        "cluster": {
            "name": "ha",
            "datastore": {"type": "postgresql"},
            "instances": [{"flavorRef": "2", "volume": {"size": 1}, "weight": w} for w in weights],
        }
    }
    body["cluster"]["datastore"]["version"] = api.get("/datastores/postgresql").json()["datastore"][
        "versions"
    ][0]["name"]
    made = api.post("/clusters", json=body)
    assert made.status_code == 200, made.text
    cid = made.json()["cluster"]["id"]

    def ready() -> dict[str, Any] | None:
        shown: dict[str, Any] = api.get(f"/clusters/{cid}").json()["cluster"]
        statuses = [m["status"] for m in shown["instances"]]
        assert "ERROR" not in statuses, shown
        done = shown["task"]["name"] == "NONE" and statuses == ["ACTIVE"] * 3
        return shown if done and "endpoints" in shown else None

    cluster = wait_for(ready, READY_TIMEOUT, interval=0.5, what="the cluster and its endpoints")
    members = cluster["instances"]
    assert [m["type"] for m in members] == ["primary", "replica", "replica"]
    assert [m["weight"] for m in members] == weights
    rw = cluster["endpoints"]["read_write"]
    assert cluster["ip"] == [rw.rsplit(":", 1)[0]]
    password = api.post(f"/clusters/{cid}/root").json()["user"]["password"]
    with connect(rw, password, "postgres") as conn:
        conn.execute("CREATE DATABASE shop")
    with connect(rw, password) as conn:
        conn.execute("CREATE TABLE marks (v text)")
    assert write(rw, password, "before")

    # Kill the primary's server once both replicas replayed its last write: the replica of
    # weight 50 (as far along as the one of weight 10) is promoted, and the read-write
    # endpoint follows it.
    primary, heavy, light = (m["id"] for m in members)
    with connect(rw, password) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    written = row[0]

    def replayed(member: dict[str, Any]) -> bool:
        where = f"{member['ip'][0]}:5432"
        with connect(where, password, "postgres") as conn:
            row = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (written,)
            ).fetchone()
        return row == (True,)

    for member in members[1:]:
        wait_for(lambda m=member: replayed(m), 30, what="the replicas to replay the write")

    # Each replica's heartbeat says it streams, and the view how far it is behind.
    def streaming() -> bool:
        shown = api.get(f"/clusters/{cid}").json()["cluster"]["instances"]
        return all(
            m.get("health", {}).get("state") == "streaming" and "lag_bytes" in m["health"]
            for m in shown[1:]
        )

    wait_for(streaming, 30, interval=0.5, what="the replicas' health in the view")
    pid = server_pid(plane, primary, "postgresql")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def promoted() -> bool:
        shown = {
            m["id"]: m["type"] for m in api.get(f"/clusters/{cid}").json()["cluster"]["instances"]
        }
        return shown.get(heavy) == "primary"

    wait_for(promoted, 60, interval=0.2, what="the heaviest replica promoted")
    wait_for(lambda: write(rw, password, "after"), 30, interval=0.2, what="a write through rw")
    with connect(rw, password) as conn:
        rows = conn.execute("SELECT v FROM marks ORDER BY v").fetchall()
        assert rows == [("after",), ("before",)]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    light_view = api.get(f"/instances/{light}").json()["instance"]
    assert light_view["replica_of"]["id"] == heavy

    assert api.delete(f"/clusters/{cid}").status_code == 202
    wait_for(lambda: api.get(f"/clusters/{cid}").status_code == 404, 120, what="cluster gone")
    for member in members:
        assert not (plane.data_dir / "instances" / member["id"]).exists()
