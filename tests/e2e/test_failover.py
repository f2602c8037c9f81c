"""Changing a PostgreSQL group's primary on a running Cove: a switchover asked through the API
loses nothing and the old primary follows the new one; when the primary's server is killed, or
its whole host pauses (agent and server under SIGSTOP), a replica takes its place within
seconds by itself, the old primary never takes a write again, and it rejoins as a replica.
Every change is recorded and listed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg
import pytest
from harness import ControlPlane, wait_for
from procs import parent_pid, pids
from test_crash_recovery import server_pid
from test_point_in_time import PASSWORD, connect, rows  # a table 'kept' of text rows

pytestmark = pytest.mark.e2e


def make_group(plane: ControlPlane, name: str, replicas: int) -> tuple[str, list[str]]:
    """A serving primary with a 'kept' table holding 'a', and its serving replicas."""
    primary = plane.wait_status(
        plane.create(
            name=name,
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
        json={
            "instance": {
                "name": f"{name}-r",
                "replica_of": primary["id"],
                "replica_count": replicas,
            }
        },
    )
    assert resp.status_code == 200, resp.text
    ids = [r["id"] for r in plane.instance(primary["id"])["replicas"]]
    for iid in ids:
        plane.wait_status(iid, "ACTIVE", timeout=240)
    return primary["id"], ids


def takes_writes(inst: dict[str, Any], value: str) -> bool:
    try:
        with connect(inst) as conn:
            conn.execute("INSERT INTO kept VALUES (%s)", (value,))
    except psycopg.Error:
        return False
    return True


def primary_of(plane: ControlPlane, iid: str) -> str | None:
    view = plane.instance(iid)
    return view["replica_of"]["id"] if "replica_of" in view else None


def failovers(plane: ControlPlane, iid: str) -> list[dict[str, Any]]:
    resp = plane.http.get(f"/instances/{iid}/failovers")
    assert resp.status_code == 200, resp.text
    return resp.json()["failovers"]  # type: ignore[no-any-return]


def delete_group(plane: ControlPlane, primary: str, replicas: list[str]) -> None:
    for iid in replicas:
        assert plane.http.delete(f"/instances/{iid}").status_code == 202
    for iid in replicas:
        wait_for(lambda i=iid: plane.http.get(f"/instances/{i}").status_code == 404, 120, 0.2)
    assert plane.http.delete(f"/instances/{primary}").status_code == 202


def test_a_switchover_loses_nothing_and_the_old_primary_follows(cove_up: ControlPlane) -> None:
    plane = cove_up
    old, (new, other) = make_group(plane, "swo", 2)
    # Not a replica / no arguments / still reporting: refused clearly.
    bad = plane.http.post(f"/instances/{old}/action", json={"promote_to_replica_source": {}})
    assert bad.status_code == 400 and "is not a replica" in bad.text
    bad = plane.http.post(f"/instances/{new}/action", json={"eject_replica_source": {}})
    assert bad.status_code == 400 and "not a replica source" in bad.text
    bad = plane.http.post(f"/instances/{old}/action", json={"eject_replica_source": {}})
    assert bad.status_code == 400 and "current heartbeat" in bad.text
    bad = plane.http.post(f"/instances/{new}/action", json={"promote_to_replica_source": {"x": 1}})
    assert bad.status_code == 400

    with connect(plane.instance(old)) as conn:
        conn.execute("INSERT INTO kept SELECT 'w' || g FROM generate_series(1, 500) g")
    resp = plane.http.post(f"/instances/{new}/action", json={"promote_to_replica_source": {}})
    assert resp.status_code == 202, resp.text
    assert plane.instance(new)["status"] in ("PROMOTE", "ACTIVE")
    promoted = plane.wait_status(new, "ACTIVE", timeout=180)
    assert "replica_of" not in promoted, promoted.get("fault")
    assert sorted(r["id"] for r in promoted["replicas"]) == sorted([old, other])
    assert primary_of(plane, old) == new and primary_of(plane, other) == new
    assert len(rows(promoted)) == 501  # nothing lost

    assert takes_writes(promoted, "after")
    for iid in (old, other):
        inst = plane.wait_status(iid, "ACTIVE", timeout=120)
        wait_for(lambda i=inst: "after" in rows(i), 60, 0.1, f"the new primary's write on {iid}")
        assert not takes_writes(inst, "refused")
    (record,) = failovers(plane, new)
    assert record["kind"] == "switchover" and record["state"] == "done", record
    assert (record["old_primary"], record["new_primary"], record["lost_bytes"]) == (old, new, 0)
    assert failovers(plane, old) == [record]
    delete_group(plane, new, [old, other])


def kill_server(plane: ControlPlane, iid: str) -> float:
    pid = wait_for(lambda: server_pid(plane, iid, "postgresql"), 30, what="the server's pid")
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def pause_host(plane: ControlPlane, iid: str) -> float:
    """SIGSTOP the instance's guest agent and every process of its server."""
    config = str(plane.data_dir / "instances" / iid)
    for pid in pids(lambda argv, _pid: any(config in a for a in argv)):
        os.kill(pid, signal.SIGSTOP)
    server = wait_for(lambda: server_pid(plane, iid, "postgresql"), 30, what="the server's pid")
    for pid in [*pids(lambda _argv, pid: parent_pid(pid) == server), server]:
        os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


@pytest.mark.parametrize("how", ["kill the server", "pause the host"])
def test_a_replica_takes_the_place_of_a_lost_primary(cove_up: ControlPlane, how: str) -> None:
    plane = cove_up
    old, replicas = make_group(plane, f"fo-{how.split()[0]}", 2)
    old_view = plane.instance(old)
    with connect(old_view) as conn:
        conn.execute("INSERT INTO kept VALUES ('before')")
    for iid in replicas:
        wait_for(lambda i=iid: "before" in rows(plane.instance(i)), 60, 0.1, "replicated")

    lost_at = kill_server(plane, old) if how == "kill the server" else pause_host(plane, old)
    new = wait_for(
        lambda: next((i for i in replicas if primary_of(plane, i) is None), None),
        60,
        0.05,
        "a replica named the primary",
    )
    new_view = plane.instance(new)
    wait_for(lambda: takes_writes(new_view, "after"), 60, 0.05, "the new primary taking writes")
    took = time.monotonic() - lost_at
    assert took < 30, f"the failover took {took:.1f} s"
    (record,) = failovers(plane, new)
    assert record["kind"] == "automatic" and record["old_primary"] == old, record
    assert "lease lapsed" in record["reason"]

    # The old primary never takes a write again, and rejoins as a replica of the new one.
    assert not takes_writes(old_view, "split brain")
    wait_for(
        lambda: failovers(plane, new)[0]["state"] == "done", 180, 0.2, "the old primary's rejoin"
    )
    assert primary_of(plane, old) == new
    rejoined = plane.wait_status(old, "ACTIVE", timeout=120)
    wait_for(lambda: "after" in rows(rejoined), 60, 0.1, "the new primary's write on the old one")
    assert "split brain" not in rows(rejoined)
    assert not takes_writes(rejoined, "refused")
    other = next(i for i in replicas if i != new)
    assert primary_of(plane, other) == new
    wait_for(lambda: "after" in rows(plane.instance(other)), 60, 0.1, "the other replica follows")
    delete_group(plane, new, [old, other])
