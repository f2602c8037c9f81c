"""Changing a group's primary on a running Cove, for each datastore: a switchover asked through
the API loses nothing and the old primary follows the new one; when the primary's server is
killed, or its whole host pauses (agent and server under SIGSTOP), a replica takes its place
within seconds by itself, the old primary never takes a write again, and it rejoins as a
replica. Every change is recorded and listed."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest
import redis
from datastores import DATASTORES, Datastore
from harness import ControlPlane, wait_for
from procs import parent_pid, pids
from test_crash_recovery import server_pid

pytestmark = pytest.mark.e2e

PASSWORD = "failover-Pw-7781"
#: What a client sees of a server that refuses a write or is gone.
CLIENT_ERRORS = (psycopg.Error, pymysql.err.MySQLError, redis.exceptions.RedisError, OSError)


@pytest.fixture(params=sorted(DATASTORES))
def ds(request: pytest.FixtureRequest) -> Datastore:
    return DATASTORES[request.param]


@pytest.fixture(autouse=True)
def no_group_left(cove_up: ControlPlane) -> Iterator[None]:
    """Every instance a test leaves (a failed one leaves whole groups) is deleted after it, so
    the project's quota is free for the next tests: a source goes once its replicas have."""
    yield

    def gone() -> bool:
        left = cove_up.http.get("/instances").json().get("instances") or []
        for inst in left:
            cove_up.http.delete(f"/instances/{inst['id']}")
        return not left

    wait_for(gone, 240, 1.0, "the test's instances deleted")


def login(ds: Datastore, inst: dict[str, Any]) -> Any:
    return ds.login(inst, "app", PASSWORD, "shop" if ds.has_databases else "")


def make_group(
    plane: ControlPlane, ds: Datastore, name: str, replicas: int
) -> tuple[str, list[str]]:
    """A serving primary holding the value 'a', and its serving replicas."""
    spec: dict[str, Any] = {"users": [{"name": "app", "password": PASSWORD}]}
    if ds.has_databases:
        spec["databases"] = [{"name": "shop"}]
        spec["users"][0]["databases"] = [{"name": "shop"}]
    primary = plane.wait_status(
        plane.create(name=name, datastore={"type": ds.name}, **spec)["id"], "ACTIVE"
    )
    with login(ds, primary) as conn:
        ds.add(conn, "a")
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
        wait_for(lambda i=iid: "a" in values(ds, plane.instance(i)), 60, 0.1, f"'a' on {iid}")
    return primary["id"], ids


def values(ds: Datastore, inst: dict[str, Any]) -> set[str]:
    try:
        with login(ds, inst) as conn:
            return ds.values(conn)
    except CLIENT_ERRORS:
        return set()


def takes_writes(ds: Datastore, inst: dict[str, Any], value: str) -> bool:
    try:
        with login(ds, inst) as conn:
            ds.add(conn, value)
    except CLIENT_ERRORS:
        return False
    return True


def endpoints(plane: ControlPlane, iid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group's read-write and read-only endpoints, as instances a client logs in to."""
    view = wait_for(
        lambda: plane.instance(iid) if "endpoints" in plane.instance(iid) else None,
        30,
        0.1,
        "the group's endpoints",
    )
    pair = view["endpoints"]
    rw, ro = (pair[k].rsplit(":", 1)[0] for k in ("read_write", "read_only"))
    return {"ip": [rw]}, {"ip": [ro]}


def primary_of(plane: ControlPlane, iid: str) -> str | None:
    view = plane.instance(iid)
    return view["replica_of"]["id"] if "replica_of" in view else None


def event_types(plane: ControlPlane, iid: str) -> list[str]:
    resp = plane.http.get(f"/instances/{iid}/events")
    assert resp.status_code == 200, resp.text
    return [e["event_type"] for e in resp.json()["events"]]


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


def test_a_switchover_loses_nothing_and_the_old_primary_follows(
    cove_up: ControlPlane, ds: Datastore
) -> None:
    plane = cove_up
    old, (new, other) = make_group(plane, ds, f"swo-{ds.name}", 2)
    # Not a replica / no arguments / still reporting: refused clearly.
    bad = plane.http.post(f"/instances/{old}/action", json={"promote_to_replica_source": {}})
    assert bad.status_code == 400 and "is not a replica" in bad.text
    bad = plane.http.post(f"/instances/{new}/action", json={"eject_replica_source": {}})
    assert bad.status_code == 400 and "not a replica source" in bad.text
    bad = plane.http.post(f"/instances/{old}/action", json={"eject_replica_source": {}})
    assert bad.status_code == 400 and "current heartbeat" in bad.text
    bad = plane.http.post(f"/instances/{new}/action", json={"promote_to_replica_source": {"x": 1}})
    assert bad.status_code == 400

    written = {f"w{n}" for n in range(200)}
    with login(ds, plane.instance(old)) as conn:
        for value in written:
            ds.add(conn, value)
    resp = plane.http.post(f"/instances/{new}/action", json={"promote_to_replica_source": {}})
    assert resp.status_code == 202, resp.text
    promoted = plane.wait_status(new, "ACTIVE", timeout=240)
    assert "replica_of" not in promoted, promoted.get("fault")
    assert sorted(r["id"] for r in promoted["replicas"]) == sorted([old, other])
    assert primary_of(plane, old) == new and primary_of(plane, other) == new
    assert written <= values(ds, promoted)  # nothing lost

    assert takes_writes(ds, promoted, "after")
    for iid in (old, other):
        inst = plane.wait_status(iid, "ACTIVE", timeout=240)
        wait_for(lambda i=inst: "after" in values(ds, i), 120, 0.1, f"the new write on {iid}")
        assert not takes_writes(ds, inst, "refused")
    (record,) = failovers(plane, new)
    assert record["kind"] == "switchover" and record["state"] == "done", record
    assert (record["old_primary"], record["new_primary"], record["lost_bytes"]) == (old, new, 0)
    assert failovers(plane, old) == [record]
    delete_group(plane, new, [old, other])


def test_a_follower_whose_agent_is_silent_follows_once_it_reports(cove_up: ControlPlane) -> None:
    """A switchover does not wait for a replica whose agent is paused: it ends, and that
    replica follows the new primary once its agent answers again."""
    plane, ds = cove_up, DATASTORES["postgresql"]
    old, (new, silent) = make_group(plane, ds, "silent-follower", 2)
    place = str(plane.data_dir / "instances" / silent)
    PAUSED[:] = pids(lambda argv, _pid: any(place in a for a in argv))
    assert PAUSED, "the replica's guest agent"
    for pid in PAUSED:
        os.kill(pid, signal.SIGSTOP)
    try:
        resp = plane.http.post(f"/instances/{new}/action", json={"promote_to_replica_source": {}})
        assert resp.status_code == 202, resp.text
        promoted = plane.wait_status(new, "ACTIVE", timeout=120)
        assert "replica_of" not in promoted, promoted.get("fault")
        assert takes_writes(ds, promoted, "after")
        assert primary_of(plane, silent) == new
        fault = plane.instance(silent).get("fault") or {}
        assert "waits for its guest agent" in fault.get("message", ""), fault
    finally:
        resume_host()
    inst = plane.instance(silent)
    wait_for(lambda: "after" in values(ds, inst), 120, 0.2, "the new primary's write on it")
    wait_for(lambda: "fault" not in plane.instance(silent), 30, 0.2, "its fault cleared")
    assert not takes_writes(ds, inst, "refused")
    delete_group(plane, new, [old, silent])


def kill_server(plane: ControlPlane, ds: Datastore, iid: str) -> float:
    pid = wait_for(lambda: server_pid(plane, iid, ds.name), 30, what="the server's pid")
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def pause_host(plane: ControlPlane, ds: Datastore, iid: str) -> float:
    """SIGSTOP the instance's guest agent and every process of its server."""
    server = wait_for(lambda: server_pid(plane, iid, ds.name), 30, what="the server's pid")
    place = str(plane.data_dir / "instances" / iid)
    agents = pids(lambda argv, _pid: any(place in a for a in argv))
    children = pids(lambda _argv, pid: parent_pid(pid) == server)
    PAUSED[:] = [*agents, server, *children]
    for pid in PAUSED:
        with contextlib.suppress(ProcessLookupError):  # a child that ended since the listing
            os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


#: What :func:`pause_host` stopped last.
PAUSED: list[int] = []


def resume_host() -> None:
    """SIGCONT to what :func:`pause_host` stopped and is still there."""
    for pid in PAUSED:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    PAUSED.clear()


@pytest.mark.parametrize("how", ["kill the server", "pause the host"])
def test_a_replica_takes_the_place_of_a_lost_primary(
    cove_up: ControlPlane, ds: Datastore, how: str
) -> None:
    plane = cove_up
    old, replicas = make_group(plane, ds, f"fo-{ds.name}-{how.split()[0]}", 2)
    old_view = plane.instance(old)
    # Clients use the group's endpoints: every member shows the same.
    rw, ro = endpoints(plane, old)
    assert all(endpoints(plane, i) == (rw, ro) for i in replicas)
    assert rw["ip"] != old_view["ip"]
    with login(ds, rw) as conn:
        ds.add(conn, "before")
    for iid in replicas:
        wait_for(lambda i=iid: "before" in values(ds, plane.instance(i)), 60, 0.1, "replicated")
    wait_for(lambda: "before" in values(ds, ro), 60, 0.1, "a read through the read-only endpoint")
    assert not takes_writes(ds, ro, "on a replica")

    lost_at = (
        kill_server(plane, ds, old) if how == "kill the server" else pause_host(plane, ds, old)
    )
    new = wait_for(
        lambda: next((i for i in replicas if primary_of(plane, i) is None), None),
        60,
        0.05,
        "a replica named the primary",
    )
    # The same endpoint reaches the new primary.
    wait_for(lambda: takes_writes(ds, rw, "after"), 60, 0.05, "writes through the endpoint")
    took = time.monotonic() - lost_at
    assert "after" in values(ds, plane.instance(new))
    assert took < 30, f"the failover took {took:.1f} s"
    (record,) = failovers(plane, new)
    assert record["kind"] == "automatic" and record["old_primary"] == old, record
    assert "lease lapsed" in record["reason"]
    # Told as Trove's eject event, on the old primary (and to the operator's consumers).
    told = "dbaas.instance_eject.end"
    wait_for(lambda: told in event_types(plane, old), 60, 0.2, "the failover's event")
    # What asynchronous mode may have lost: the old primary's last reported position less
    # the promoted replica's.
    assert isinstance(record["lost_bytes"], int) and record["lost_bytes"] >= 0, record

    # The old primary never takes a write again, not even once a paused host wakes up, and
    # rejoins as a replica of the new one.
    if how == "pause the host":
        resume_host()
    assert not takes_writes(ds, old_view, "split brain")
    wait_for(lambda: failovers(plane, new)[0]["state"] == "done", 240, 0.2, "the rejoin")
    assert primary_of(plane, old) == new
    rejoined = plane.wait_status(old, "ACTIVE", timeout=120)
    wait_for(lambda: "after" in values(ds, rejoined), 60, 0.1, "the new write on the old one")
    assert "split brain" not in values(ds, rejoined)
    assert not takes_writes(ds, rejoined, "refused")
    other = next(i for i in replicas if i != new)
    assert primary_of(plane, other) == new
    wait_for(lambda: "after" in values(ds, plane.instance(other)), 60, 0.1, "the other follows")
    delete_group(plane, new, [old, other])


def test_replicas_agree_grow_and_an_eject_by_hand(cove_up: ControlPlane, ds: Datastore) -> None:
    plane = cove_up
    old, (light, heavy) = make_group(plane, ds, f"ej-{ds.name}", 2)
    # A Cove extension: no automatic failover for this group, and a preferred replica.
    for iid, body in (
        (old, {"auto_failover": False}),
        (heavy, {"weight": 500}),
    ):
        resp = plane.http.put(f"/instances/{iid}", json={"instance": {"replication": body}})
        assert resp.status_code == 202, resp.text
    assert plane.instance(light)["replication"] == {
        "synchronous": False,
        "auto_failover": False,
        "weight": 100,
    }
    assert plane.instance(heavy)["replication"]["weight"] == 500
    bad = plane.http.put(f"/instances/{old}", json={"instance": {"replication": {"weight": -1}}})
    assert bad.status_code == 400

    # The users (and databases) a client sees are the primary's on every member.
    for what in ("users", *(["databases"] if ds.has_databases else [])):
        on_primary = plane.http.get(f"/instances/{old}/{what}").json()[what]
        for iid in (light, heavy):
            wait_for(
                lambda i=iid, w=what, p=on_primary: (
                    plane.http.get(f"/instances/{i}/{w}").json()[w] == p
                ),
                60,
                0.2,
                f"the {what} of {iid}",
            )
    # A larger volume for the primary is a larger volume for its replicas.
    grow = plane.http.post(f"/instances/{old}/action", json={"resize": {"volume": {"size": 2}}})
    assert grow.status_code == 202, grow.text
    for iid in (old, light, heavy):
        assert plane.wait_status(iid, "ACTIVE", timeout=120)["volume"]["size"] == 2

    # The primary's host stops answering; nothing moves until eject_replica_source is asked.
    pause_host(plane, ds, old)
    wait_for(
        lambda: (
            plane.http.post(
                f"/instances/{old}/action", json={"eject_replica_source": {}}
            ).status_code
            == 202
        ),
        60,
        0.5,
        "the eject accepted once the heartbeat is stale",
    )
    new = wait_for(
        lambda: next((i for i in (light, heavy) if primary_of(plane, i) is None), None),
        60,
        0.1,
        "a replica named the primary",
    )
    assert new == heavy  # as advanced as the other, and heavier
    (record,) = failovers(plane, new)
    assert (record["kind"], record["old_primary"]) == ("eject", old)
    rw, _ro = endpoints(plane, new)
    wait_for(lambda: takes_writes(ds, rw, "after"), 120, 0.1, "writes through the endpoint")
    wait_for(lambda: failovers(plane, new)[0]["state"] == "done", 240, 0.2, "the rejoin")
    assert primary_of(plane, old) == new and primary_of(plane, light) == new

    # Detached, a replica takes writes of its own.
    detach = plane.http.put(f"/instances/{light}", json={"instance": {"replica_of": None}})
    assert detach.status_code == 202, detach.text
    alone = plane.wait_status(light, "ACTIVE", timeout=120)
    assert "replica_of" not in alone and "endpoints" not in alone
    wait_for(lambda: takes_writes(ds, alone, "its own"), 60, 0.1, "a write on the detached one")
    assert "its own" not in values(ds, plane.instance(new))
    assert plane.http.delete(f"/instances/{light}").status_code == 202
    delete_group(plane, new, [old])


class Writer:
    """Writes numbered values through an endpoint as fast as it can, from a thread, and
    records those acknowledged; a refused or broken write is tried again with the next."""

    def __init__(self, ds: Datastore, endpoint: dict[str, Any]) -> None:
        self.ds, self.endpoint = ds, endpoint
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                with login(self.ds, self.endpoint) as conn:
                    while not self._stop.is_set():
                        n += 1
                        self.ds.add(conn, f"s{n}")
                        self.acknowledged.append(f"s{n}")
            except CLIENT_ERRORS:
                time.sleep(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("name", ["postgresql", "mariadb"])
def test_in_synchronous_mode_a_failover_loses_no_acknowledged_write(
    cove_up: ControlPlane, name: str
) -> None:
    plane, ds = cove_up, DATASTORES[name]
    old, replicas = make_group(plane, ds, f"sync-{name}", 2)
    resp = plane.http.put(
        f"/instances/{old}", json={"instance": {"replication": {"synchronous": True}}}
    )
    assert resp.status_code == 202, resp.text
    assert all(plane.instance(i)["replication"]["synchronous"] for i in (old, *replicas))
    rw, _ro = endpoints(plane, old)
    with Writer(ds, rw) as writer:
        wait_for(lambda: len(writer.acknowledged) > 200, 60, 0.05, "writes before the kill")
        kill_server(plane, ds, old)
        new = wait_for(
            lambda: next((i for i in replicas if primary_of(plane, i) is None), None),
            60,
            0.05,
            "a replica named the primary",
        )
        before = len(writer.acknowledged)
        wait_for(lambda: len(writer.acknowledged) > before + 50, 60, 0.05, "writes after it")
    held = values(ds, plane.instance(new))
    lost = [v for v in writer.acknowledged if v not in held]
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert plane.instance(new)["replication"]["synchronous"]
    wait_for(lambda: failovers(plane, new)[0]["state"] == "done", 240, 0.2, "the rejoin")
    # The other replica follows the new primary too (a follow that failed under load is
    # asked again later): until it does, the old primary is still its source.
    other = next(i for i in replicas if i != new)
    wait_for(lambda: primary_of(plane, other) == new, 240, 0.2, "the other replica following")
    delete_group(plane, new, [old, other])
