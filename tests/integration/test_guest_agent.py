"""A real guest agent, started by the local driver as the service user, driven over the bus
without the rest of the control plane: the datastore manager contract for PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from guesthost import Host

from cove.common.errors import BadRequest, DatabaseAlreadyExists, DatabaseNotFound, UserNotFound
from cove.compute.discovery import find_postgresql
from cove.domain.status import ComputeState
from cove.rpc import topics

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries"),
]


class Guest:
    """One instance on the test host, with the calls the contract test makes."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.driver = host.driver
        self.bus = host.bus
        self.spec = host.spec()
        self.topic = topics.guest(self.spec.instance_id)
        self.dir = self.driver.instance_dir(self.spec.instance_id)

    def call(self, method: str, **args: Any) -> Any:
        return self.host.call(self.spec.instance_id, method, **args)

    def wait_event(self, timeout: float, **match: Any) -> dict[str, Any]:
        return self.host.wait_event(timeout, instance_id=self.spec.instance_id, **match)

    def server_pid(self) -> int:
        return self.host.server_pid(self.spec.instance_id)

    def agent_pid(self) -> int:
        return int((self.dir / "run" / "guestagent.lock").read_text().strip())


@pytest.fixture
def guest(host: Host) -> Guest:
    return Guest(host)


def test_guest_agent_contract(guest: Guest) -> None:
    guest.host.create(guest.spec)
    # Sent before the agent consumes: the queue declared first keeps it.
    guest.bus.cast(
        guest.topic,
        "prepare",
        {
            "databases": [{"name": "a"}, {"name": "b", "character_set": "UTF8", "collate": "C"}],
            "users": [{"name": "u1", "password": "pw-1", "host": "%", "databases": ["a"]}],
        },
    )
    report = guest.wait_event(60, method="report", operation="prepare")
    assert report["outcome"] == "success", report
    assert guest.call("get_status") == "healthy"
    assert "pw-1" not in (guest.dir / "log" / "guestagent.log").read_text()
    assert "pw-1" not in (guest.dir / "log" / "postgresql.log").read_text()

    # Databases: the user's mistakes come back as the right Cove errors.
    names = [d["name"] for d in guest.call("list_databases")]
    assert names == ["a", "b"]
    with pytest.raises(DatabaseAlreadyExists):
        guest.call("create_databases", databases=[{"name": "a"}])
    with pytest.raises(DatabaseNotFound):
        guest.call("delete_database", name="nope")
    with pytest.raises(BadRequest):
        guest.call("create_databases", databases=[{"name": "c", "character_set": "NOPE"}])

    # Users and access.
    with pytest.raises(DatabaseNotFound):
        guest.call("create_users", users=[{"name": "u2", "password": "x", "databases": ["zz"]}])
    assert [u["name"] for u in guest.call("list_users")] == ["u1"]
    guest.call("update_user", name="u1", host="%", new_name="u9", new_password="pw-9")
    assert guest.call("get_user", name="u9", host="%")["databases"] == ["a"]
    with pytest.raises(UserNotFound):
        guest.call("get_user", name="u1", host="%")
    with pytest.raises(DatabaseNotFound):
        guest.call("revoke_access", name="u9", host="%", database="b")
    guest.call("grant_access", name="u9", host="%", databases=["b"])
    assert guest.call("list_access", name="u9", host="%") == ["a", "b"]
    # Several items: a mistake in one leaves the server as it was.
    with pytest.raises(DatabaseAlreadyExists):
        guest.call("create_databases", databases=[{"name": "fresh"}, {"name": "a"}])
    with pytest.raises(DatabaseNotFound):
        guest.call(
            "create_users",
            users=[
                {"name": "ok1", "password": "x"},
                {"name": "bad", "password": "x", "databases": ["zz"]},
            ],
        )
    assert [d["name"] for d in guest.call("list_databases")] == ["a", "b"]
    assert [u["name"] for u in guest.call("list_users")] == ["u9"]

    # Passwords are normalised the way clients normalise them.
    guest.call("create_users", users=[{"name": "nb", "password": "a\u00a0b", "databases": ["a"]}])
    psycopg.connect(host=guest.spec.address, user="nb", password="a\u00a0b", dbname="a").close()

    assert guest.call("is_root_enabled") is False
    assert guest.call("enable_root", password="r00t-pw") == {"name": "root"}
    assert guest.call("is_root_enabled") is True
    with psycopg.connect(
        host=guest.spec.address, user="root", password="r00t-pw", dbname="b", autocommit=True
    ) as conn:
        conn.execute("CREATE DATABASE made_by_root")
        # Root is not a superuser: nothing reaches past the instance into the host.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file('/etc/passwd')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER SYSTEM SET work_mem = '1GB'")
    # What a deleted user leaves behind never runs with the superuser's rights.
    with psycopg.connect(
        host=guest.spec.address, user="nb", password="a\u00a0b", dbname="a", autocommit=True
    ) as conn:
        conn.execute(
            "CREATE FUNCTION public.lift() RETURNS void LANGUAGE plpgsql "
            "SECURITY DEFINER AS $$BEGIN EXECUTE 'ALTER ROLE root SUPERUSER'; END$$"
        )
        conn.execute("CREATE TABLE kept (x int)")
    guest.call("delete_user", name="nb", host="%")
    with psycopg.connect(
        host=guest.spec.address, user="root", password="r00t-pw", dbname="a", autocommit=True
    ) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT public.lift()")
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)  # data is kept
    guest.call("disable_root")
    assert guest.call("is_root_enabled") is False

    # The agent is the server's parent: a crash is reported at once, not at the next beat, and
    # the server is started again (tests/integration/test_server_recovery.py has the rest).
    server = guest.server_pid()
    os.kill(server, signal.SIGKILL)
    started = time.monotonic()
    crashed = guest.wait_event(3, method="report", operation="server")
    assert crashed["outcome"] == "crashed"
    assert time.monotonic() - started < 2.0
    assert guest.wait_event(60, method="report", operation="server")["outcome"] == "recovered"
    guest.call("restart")
    assert guest.call("get_status") == "healthy"

    # A new agent adopts the running server instead of restarting it.
    server = guest.server_pid()
    agent = guest.agent_pid()
    os.kill(agent, signal.SIGKILL)
    deadline = time.monotonic() + 5
    # The driver sees the agent gone once its lock is free and the process has exited.
    while guest.driver.state(guest.spec.instance_id) is not ComputeState.SHUTDOWN:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert guest.driver.ensure_running(guest.spec.instance_id)
    assert guest.call("get_status") == "healthy"
    assert guest.agent_pid() != agent
    assert guest.server_pid() == server
    assert [u["name"] for u in guest.call("list_users")] == ["u9"]

    # Destroy leaves nothing.
    guest.driver.destroy(guest.spec.instance_id)
    assert not guest.dir.exists()
    for pid in (server, guest.agent_pid() if guest.dir.exists() else agent):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
