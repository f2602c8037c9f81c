"""The whole life of an instance of each datastore, through the HTTP API and the datastore's
own client library; then what only needs showing once (PostgreSQL): a killed guest agent is
brought back, and instances outlive the control plane."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from datastores import DATASTORES, LOGIN_ERRORS, Datastore
from harness import ControlPlane, processes_mentioning, wait_for

pytestmark = pytest.mark.e2e


def connect(inst: dict, user: str, password: str, dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=inst["ip"][0],
        port=inst.get("port", 5432),
        user=user,
        password=password,
        dbname=dbname,
        connect_timeout=5,
        autocommit=True,
    )


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


@pytest.fixture(params=sorted(DATASTORES))
def datastore(request: pytest.FixtureRequest) -> Datastore:
    return DATASTORES[request.param]


def test_instance_lifecycle(plane: ControlPlane, datastore: Datastore) -> None:
    """Create with databases and users, log in with the datastore's own client, manage
    databases, users, access and root, restart, rename and delete; no secret leaks anywhere."""
    ds = datastore
    api = plane.http
    dbs = ds.has_databases
    orders = "orders" if dbs else ""
    spec: dict[str, Any] = {
        "users": [{"name": "app", "password": "app-Pass:1"}],
    }
    if dbs:
        spec["databases"] = [{"name": "orders"}, {"name": "secret_stuff"}]
        spec["users"][0]["databases"] = [{"name": "orders"}]
    created = plane.create(name="orders", datastore={"type": ds.name}, **spec)
    assert created["status"] == "BUILD"
    iid = created["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    assert inst["operating_status"] == "HEALTHY"
    assert inst["datastore"]["type"] == ds.name
    address = inst["ip"][0]
    assert address.startswith("127.") and address != "127.0.0.1"
    assert "port" not in inst  # every instance has its own address and the standard port

    # The user reaches the granted database and nothing else.
    with ds.login(inst, "app", "app-Pass:1", orders) as conn:
        ds.write(conn, "kept")
        if ds.name == "redis":
            # Tenants' users cannot reconfigure the server the instances share a host with.
            with pytest.raises(redis.exceptions.NoPermissionError):
                conn.config_get("dir")
    assert ds.refused(inst, "app", "wrong", orders)
    if dbs:
        assert ds.refused(inst, "app", "app-Pass:1", "secret_stuff")

    # Databases.
    if dbs:
        listed = api.get(f"/instances/{iid}/databases").json()["databases"]
        assert [d["name"] for d in listed] == ["orders", "secret_stuff"]
        extra = {"databases": [{"name": "extra"}]}
        assert api.post(f"/instances/{iid}/databases", json=extra).status_code == 202
        assert api.post(f"/instances/{iid}/databases", json=extra).status_code == 400
        assert api.delete(f"/instances/{iid}/databases/extra").status_code == 202
        assert api.delete(f"/instances/{iid}/databases/extra").status_code == 404
        assert api.get(f"/instances/{iid}/databases/orders").status_code == 501
    else:
        # Not a concept of this datastore: Trove's "not supported" answer, up front.
        assert api.get(f"/instances/{iid}/databases").status_code == 501
        extra = {"databases": [{"name": "extra"}]}
        assert api.post(f"/instances/{iid}/databases", json=extra).status_code == 501

    # Users, passwords, access.
    users = api.get(f"/instances/{iid}/users").json()["users"]
    assert [u["name"] for u in users] == ["app"]
    if dbs:
        assert users == [{"name": "app", "host": "%", "databases": [{"name": "orders"}]}]
    bob = {"users": [{"name": "bob", "password": "bob-1"}]}
    assert api.post(f"/instances/{iid}/users", json=bob).status_code == 202
    assert api.get(f"/instances/{iid}/users/bob").status_code == 200
    bob_db = ""
    if dbs:
        bob_db = "secret_stuff"
        assert api.get(f"/instances/{iid}/users/bob").json()["user"]["databases"] == []
        grant = {"databases": [{"name": "secret_stuff"}]}
        assert api.put(f"/instances/{iid}/users/bob/databases", json=grant).status_code == 202
        assert api.get(f"/instances/{iid}/users/bob%40%25/databases").json() == {
            "databases": [{"name": "secret_stuff"}]
        }
    with ds.login(inst, "bob", "bob-1", bob_db) as conn:
        ds.write(conn, "bob's")
    change = {"user": {"password": "bob-2"}}
    assert api.put(f"/instances/{iid}/users/bob", json=change).status_code == 202
    assert ds.refused(inst, "bob", "bob-1", bob_db)
    assert not ds.refused(inst, "bob", "bob-2", bob_db)
    if dbs:
        resp = api.delete(f"/instances/{iid}/users/bob/databases/secret_stuff")
        assert resp.status_code == 202
        assert ds.refused(inst, "bob", "bob-2", "secret_stuff")
    assert api.delete(f"/instances/{iid}/users/bob").status_code == 202
    assert api.get(f"/instances/{iid}/users/bob").status_code == 404
    assert ds.refused(inst, "bob", "bob-2", bob_db)

    # Root.
    assert api.get(f"/instances/{iid}/root").json() == {"rootEnabled": False}
    root = api.post(f"/instances/{iid}/root").json()["user"]
    assert len(root["password"]) >= 20
    assert api.get(f"/instances/{iid}/root").json() == {"rootEnabled": True}
    with ds.login(inst, ds.root_user, root["password"], orders) as conn:
        assert ds.read(conn) == "kept"
        run_id = ds.server_run_id(conn)

    # The flavor (tiny: 512 MB) sized the server's memory, as the server itself reports.
    instance_dir = plane.data_dir / "instances" / iid
    conn = ds.settings_session(instance_dir, inst, root["password"])
    try:
        assert ds.setting(conn, ds.memory_setting) == ds.memory_value(512)
    finally:
        conn.close()

    # Restart really restarts the server, and keeps the data.
    def restarted() -> bool:
        try:
            with ds.login(inst, ds.root_user, root["password"], orders) as conn:
                return bool(ds.server_run_id(conn) != run_id)
        except (*LOGIN_ERRORS, OSError, redis.exceptions.ConnectionError):
            return False

    assert api.post(f"/instances/{iid}/action", json={"restart": {}}).status_code == 202
    assert plane.instance(iid)["status"] in ("REBOOT", "ACTIVE")
    wait_for(
        lambda: plane.instance(iid)["status"] == "ACTIVE" and restarted(),
        60,
        0.1,
        "the restarted server",
    )
    with ds.login(inst, "app", "app-Pass:1", orders) as conn:
        assert ds.read(conn) == "kept"

    # Rename.
    assert api.put(f"/instances/{iid}", json={"instance": {"name": "renamed"}}).status_code == 202
    assert plane.instance(iid)["name"] == "renamed"

    # No password is on any command line, nor in any log: the control plane's, the agent's or
    # the server's.
    secrets = ("app-Pass:1", "bob-1", "bob-2", root["password"])
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert not any(s in cmdline for s in secrets), f"a password is in {proc}/cmdline"
    logs = list(plane.base.glob("*.log")) + list((plane.data_dir / "log").glob("*.log"))
    logs += list((instance_dir / "log").glob("*.log"))
    assert len(logs) >= 4
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {path}"
    # Nor the token or the password of the caller, in the services' logs.
    member = plane.accounts[0]
    for path in (plane.data_dir / "log").glob("*.log"):
        text = path.read_text(errors="replace")
        assert member.token not in text and member.password not in text, path
    # Without the token, nothing of this is reachable.
    anonymous = httpx.get(f"{plane.url}/v1.0/{member.project_id}/instances/{iid}", timeout=10)
    assert anonymous.status_code == 401

    # Delete leaves nothing behind.
    assert instance_dir.is_dir()
    assert api.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
    assert not instance_dir.exists()
    assert processes_mentioning(iid) == []
    assert not listening(address, ds.port)
    assert iid not in [i["id"] for i in api.get("/instances").json()["instances"]]
    with sqlite3.connect(plane.data_dir / "cove.sqlite") as db:
        held = db.execute("SELECT address FROM address_allocations WHERE instance_id = ?", (iid,))
        assert held.fetchall() == []


def _serving(started: Callable[[], object], before: object) -> bool:
    try:
        return started() != before
    except psycopg.OperationalError:
        return False


def test_killed_guest_agent_is_noticed_and_brought_back(plane: ControlPlane) -> None:
    iid = plane.create(
        name="phoenix",
        databases=[{"name": "d"}],
        users=[{"name": "u", "password": "pw-1", "databases": [{"name": "d"}]}],
    )["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    with connect(inst, "u", "pw-1", "d") as conn:
        conn.execute("CREATE TABLE survives (x int)")
        conn.execute("INSERT INTO survives VALUES (42)")
    lock = plane.data_dir / "instances" / iid / "run" / "guestagent.lock"
    old_pid = int(Path(lock).read_text().strip())
    os.kill(old_pid, signal.SIGKILL)
    # Heartbeats are 1 s apart here: the instance must leave ACTIVE within 3 intervals.
    left = wait_for(
        lambda: plane.instance(iid)["status"] != "ACTIVE", 4.0, 0.02, "the instance to leave ACTIVE"
    )
    assert left
    plane.wait_status(iid, "ACTIVE", timeout=60)
    new_pid = int(Path(lock).read_text().strip())
    assert new_pid != old_pid
    with connect(inst, "u", "pw-1", "d") as conn:
        assert conn.execute("SELECT x FROM survives").fetchall() == [(42,)]
    # The database server kept running under the adopted agent and still restarts cleanly.
    assert plane.http.post(f"/instances/{iid}/action", json={"restart": {}}).status_code == 202
    plane.wait_status(iid, "ACTIVE")
    with connect(inst, "u", "pw-1", "d") as conn:
        assert conn.execute("SELECT x FROM survives").fetchall() == [(42,)]
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: plane.http.get(f"/instances/{iid}").status_code == 404, 60, 0.1, "deletion")
    assert processes_mentioning(iid) == []


def test_instances_outlive_the_control_plane(tmp_path: Path) -> None:
    """Ctrl-C stops Cove but not the databases; the next start re-attaches them."""
    plane = ControlPlane().start()
    try:
        user = {"name": "u", "password": "pw-2", "databases": [{"name": "d"}]}
        iid = plane.create(name="keeper", databases=[{"name": "d"}], users=[user])["id"]
        inst = plane.wait_status(iid, "ACTIVE")
        agent_pid = int(
            (plane.data_dir / "instances" / iid / "run" / "guestagent.lock").read_text().strip()
        )
        for proc in plane.procs:
            proc.send_signal(signal.SIGINT)
        for proc in plane.procs:
            assert proc.wait(30) == 0
        plane.procs.clear()
        # The database still serves while the control plane is down.
        with connect(inst, "u", "pw-2", "d") as conn:
            conn.execute("CREATE TABLE during_outage (x int)")
        plane.start()
        plane.wait_status(iid, "ACTIVE")
        assert (
            int(
                (plane.data_dir / "instances" / iid / "run" / "guestagent.lock").read_text().strip()
            )
            == agent_pid
        )
        # The same agent answers over the restarted bus, to a token issued before the restart.
        users = plane.http.get(f"/instances/{iid}/users")
        assert users.status_code == 200, users.text
        assert [u["name"] for u in users.json()["users"]] == ["u"]
    finally:
        plane.stop()
