"""PostgreSQL replicas on a running Cove: two replicas of a primary serve its data read-only
with a real client and follow its writes; the views link them; the API refuses writes on a
replica and the deletion of a source with replicas; detaching makes a replica a standalone,
writable instance; replicas count against the quota."""

from __future__ import annotations

import psycopg
import pytest
from harness import ControlPlane, wait_for
from test_point_in_time import PASSWORD, connect, rows  # a table 'kept' of text rows

pytestmark = pytest.mark.e2e


def test_postgresql_replicas_follow_their_primary_and_detach(cove_up: ControlPlane) -> None:
    plane = cove_up
    primary = plane.wait_status(
        plane.create(
            name="repl-primary",
            databases=[{"name": "shop"}],
            users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
        )["id"],
        "ACTIVE",
    )
    with connect(primary) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('a')")

    resp = plane.http.post(
        "/instances",
        json={"instance": {"name": "repl-ro", "replica_of": primary["id"], "replica_count": 2}},
    )
    assert resp.status_code == 200, resp.text
    source_view = plane.instance(primary["id"])
    replica_ids = [r["id"] for r in source_view["replicas"]]
    assert len(replica_ids) == 2
    replicas = [plane.wait_status(r, "ACTIVE", timeout=240) for r in replica_ids]
    assert all(r["replica_of"]["id"] == primary["id"] for r in replicas)
    assert [r["name"] for r in replicas] == ["repl-ro-1", "repl-ro-2"]

    # The data, the users and the databases are the primary's, and writes follow.
    for replica in replicas:
        assert rows(replica) == ["a"]
    with connect(primary) as conn:
        conn.execute("INSERT INTO kept VALUES ('b')")
    for replica in replicas:
        wait_for(lambda r=replica: rows(r) == ["a", "b"], 60, 0.1, "the write replicated")
        with connect(replica) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO kept VALUES ('x')")
    for what in ("databases", "users"):
        on_primary = plane.http.get(f"/instances/{primary['id']}/{what}").json()[what]
        on_replica = plane.http.get(f"/instances/{replica_ids[0]}/{what}").json()[what]
        assert on_replica == on_primary
    refused = plane.http.post(
        f"/instances/{replica_ids[0]}/databases", json={"databases": [{"name": "other"}]}
    )
    assert refused.status_code == 422 and "read-only replica" in refused.text
    assert plane.http.delete(f"/instances/{primary['id']}").status_code == 403

    # A larger volume for the primary is a larger volume for its replicas.
    grow = {"resize": {"volume": {"size": 2}}}
    resized = plane.http.post(f"/instances/{primary['id']}/action", json=grow)
    assert resized.status_code == 202, resized.text
    for iid in (primary["id"], *replica_ids):
        assert plane.wait_status(iid, "ACTIVE", timeout=120)["volume"]["size"] == 2

    # Detached, a replica keeps its data and takes writes of its own.
    detach = plane.http.put(f"/instances/{replica_ids[1]}", json={"instance": {"replica_of": None}})
    assert detach.status_code == 202, detach.text
    alone = plane.wait_status(replica_ids[1], "ACTIVE", timeout=120)
    assert "replica_of" not in alone
    with connect(alone) as conn:
        conn.execute("INSERT INTO kept VALUES ('c')")
    assert rows(alone) == ["a", "b", "c"]
    assert rows(replicas[0]) == ["a", "b"]
    assert [r["id"] for r in plane.instance(primary["id"])["replicas"]] == [replica_ids[0]]

    for iid in (*replica_ids, primary["id"]):
        wait_for(
            lambda i=iid: plane.http.delete(f"/instances/{i}").status_code == 202,
            60,
            0.2,
            "the deletion accepted",
        )
