"""A database server that dies is brought back by its guest agent: real agents started by the
local driver as the service user, real servers killed with SIGKILL, real clients reading back what
was committed before the kill, and the reports a stand-in conductor receives."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql
import pytest
import redis
from guesthost import Host
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common.procfs import alive
from cove.domain.datastores import DATASTORES
from cove.domain.guest import GuestSettings
from cove.guestagent.recovery import RESTART_DELAYS
from cove.rpc import topics

pytestmark = pytest.mark.integration

PASSWORD = "app-Pw-7731"
#: Rows (keys) written before each kill; every one was acknowledged, so every one must be back.
ROWS = 200


class Client:
    """The tenant's view of one instance through the datastore's own client library."""

    def __init__(self, name: str, spec: GuestSettings) -> None:
        self.name, self.spec = name, spec

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        host, port = self.spec.address, self.spec.port
        if self.name == "postgresql":
            with psycopg.connect(
                host=host,
                port=port,
                user="app",
                password=PASSWORD,
                dbname="app",
                autocommit=True,
                connect_timeout=5,
            ) as conn:
                yield conn
        elif self.name == "mariadb":
            conn = pymysql.connect(
                host=host,
                port=port,
                user="app",
                password=PASSWORD,
                database="app",
                autocommit=True,
                connect_timeout=5,
            )
            try:
                yield conn
            finally:
                conn.close()
        else:
            client = redis.Redis(
                host=host,
                port=port,
                username="app",
                password=PASSWORD,
                socket_timeout=5,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                yield client
            finally:
                client.close()

    def execute(self, conn: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.name == "postgresql":
            cur = conn.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def write(self, first: int, count: int) -> None:
        """Commit ``count`` rows (keys) numbered from ``first``, one transaction each."""
        with self.session() as conn:
            if self.name == "redis":
                for n in range(first, first + count):
                    conn.set(f"row:{n}", n)
                return
            self.execute(conn, "CREATE TABLE IF NOT EXISTS kept (n int PRIMARY KEY)")
            for n in range(first, first + count):
                self.execute(conn, "INSERT INTO kept VALUES (%s)", n)

    def rows(self, below: int = 1000) -> set[int]:
        """The rows (keys) numbered below ``below`` that the server has."""
        with self.session() as conn:
            if self.name == "redis":
                return {int(v) for v in conn.mget([f"row:{n}" for n in range(below)]) if v}
            return {row[0] for row in self.execute(conn, "SELECT n FROM kept")}

    def answers(self) -> bool:
        try:
            self.rows(1)
            return True
        except (psycopg.Error, pymysql.MySQLError, redis.RedisError):
            return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def settle(host: Host, name: str, iid: str, last: int) -> None:
    """Wait until the rows up to ``last`` are in the server's own files. A commit is there
    when it is answered, but for Redis, whose ``appendfsync everysec`` may hold the append-only
    file's write back for up to two seconds while an fsync of the disk is slow (and answers
    the client meanwhile): what Redis promises, a write a second or two may lose."""
    if name != "redis":
        return
    data = host.driver.instance_dir(iid) / "data"

    def written() -> bool:
        key = f"row:{last}".encode()
        return any(key in aof.read_bytes() for aof in data.rglob("*.aof"))

    wait_until(written, 30, f"row {last} in the append-only file")


def prepared(host: Host, name: str) -> tuple[GuestSettings, Client]:
    """A running instance of ``name`` with a user ``app`` (and a database ``app`` where the
    datastore has databases)."""
    spec = host.spec_of(name)
    host.create(spec)
    with_db = name != "redis"
    host.call(
        spec.instance_id,
        "prepare",
        databases=[{"name": "app"}] if with_db else [],
        users=[{"name": "app", "password": PASSWORD, "databases": ["app"] if with_db else []}],
    )
    report = host.wait_event(300, method="report", instance_id=spec.instance_id)
    assert report["operation"] == "prepare" and report["outcome"] == "success", report
    return spec, Client(name, spec)


def server_reports(host: Host, instance_id: str) -> list[dict[str, Any]]:
    """The ``server`` reports of the instance that reached the conductor so far (the events
    are used up). A marker sent last to the conductor's queue comes out after everything sent
    before it, so nothing already on its way is missed."""
    marker = f"marker-{time.monotonic_ns()}"
    host.bus.cast(topics.CONDUCTOR, "report", {"instance_id": marker})
    found = []
    deadline = time.monotonic() + 30
    while True:
        event = host.events.get(timeout=max(0.1, deadline - time.monotonic()))
        if event.get("instance_id") == marker:
            return found
        if event.get("operation") == "server" and event.get("instance_id") == instance_id:
            found.append(event)


def busy_backend(client: Client) -> None:
    """Start a PostgreSQL backend computing for minutes: it outlives a killed postmaster and
    holds the old shared memory, so no new postmaster starts until it is killed too."""
    query = "SELECT count(*) FROM generate_series(1, 2000000000)"

    def run() -> None:
        with contextlib.suppress(psycopg.Error), client.session() as conn:
            conn.execute(query)

    threading.Thread(target=run, daemon=True).start()

    def running() -> bool:
        with client.session() as conn:
            seen = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                (query,),
            ).fetchone()
            return bool(seen and seen[0])

    wait_until(running, 30, "the long query runs")


@pytest.mark.parametrize("name", sorted(DATASTORES))
def test_a_killed_server_is_brought_back_with_its_committed_data(host: Host, name: str) -> None:
    spec, client = prepared(host, name)
    iid = spec.instance_id
    client.write(0, ROWS)
    settle(host, name, iid, ROWS - 1)
    if name == "postgresql":
        busy_backend(client)
    server = host.server_pid(iid, name)

    os.kill(server, signal.SIGKILL)
    crashed = host.wait_event(10, method="report", instance_id=iid, operation="server")
    assert crashed["outcome"] == "crashed", crashed
    assert "SIGKILL" in crashed["details"], crashed
    recovered = host.wait_event(60, method="report", instance_id=iid, operation="server")
    assert recovered["outcome"] == "recovered", recovered["details"]
    # One restart was enough: nothing the dead server left behind stood in the way.
    assert "after 1 restart" in recovered["details"], recovered
    wait_until(client.answers, 30, "the client's queries are answered")

    assert client.rows() == set(range(ROWS))
    assert host.server_pid(iid, name) != server
    assert not alive(server)
    assert host.call(iid, "get_status") == "healthy"
    # Back to normal: it keeps serving writes, and a later crash is dealt with the same way.
    client.write(ROWS, 10)
    settle(host, name, iid, ROWS + 9)
    os.kill(host.server_pid(iid, name), signal.SIGKILL)
    again = host.wait_event(10, method="report", instance_id=iid, operation="server")
    assert again["outcome"] == "crashed", again
    again = host.wait_event(60, method="report", instance_id=iid, operation="server")
    assert again["outcome"] == "recovered", again
    wait_until(client.answers, 30, "the client's queries are answered again")
    assert client.rows() == set(range(ROWS + 10))


def test_intended_restarts_and_stops_are_no_crashes(host: Host) -> None:
    spec, client = prepared(host, "postgresql")
    iid = spec.instance_id
    client.write(0, 5)
    # More restarts than the agent ever makes after crashes: none counts against the allowance.
    for _ in range(len(RESTART_DELAYS) + 1):
        host.call(iid, "restart")
        assert client.rows() == set(range(5))
    assert server_reports(host, iid) == []

    # A crash after all those restarts still gets an immediate restart.
    os.kill(host.server_pid(iid), signal.SIGKILL)
    crashed = host.wait_event(10, method="report", instance_id=iid, operation="server")
    assert crashed["outcome"] == "crashed", crashed
    recovered = host.wait_event(30, method="report", instance_id=iid, operation="server")
    assert recovered["outcome"] == "recovered" and "after 1 restart" in recovered["details"]

    # Deleting the instance stops the agent and its server: no crash is reported, nothing is
    # started again.
    server = host.server_pid(iid)
    host.driver.destroy(iid)
    host.created.remove(iid)
    assert not alive(server)
    assert server_reports(host, iid) == []


def test_a_server_that_cannot_start_again_is_given_up_and_a_restart_brings_it_back(
    host: Host,
) -> None:
    spec, client = prepared(host, "postgresql")
    iid = spec.instance_id
    client.write(0, 5)
    data = host.driver.instance_dir(iid) / "data"
    server = host.server_pid(iid)
    # The service user can no longer enter its data directory: every start fails.
    data.chmod(0o000)
    try:
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):  # it may have failed by itself already
            os.kill(server, signal.SIGKILL)
        crashed = host.wait_event(10, method="report", instance_id=iid, operation="server")
        assert crashed["outcome"] == "crashed", crashed
        gave_up = host.wait_event(
            sum(RESTART_DELAYS) + 60, method="report", instance_id=iid, operation="server"
        )
        assert gave_up["outcome"] == "gave_up", gave_up
        assert "Permission denied" in gave_up["details"], gave_up
        # Every pause was taken: the agent did not give up early, nor restart in a loop.
        assert time.monotonic() - started >= sum(RESTART_DELAYS)
        assert host.call(iid, "get_status") == "crashed"
        beat = host.wait_event(30, method="heartbeat", instance_id=iid)
        assert beat["service_status"] == "crashed"
        assert server_reports(host, iid) == []  # given up: nothing more is tried
    finally:
        data.chmod(0o700)
    # An intended restart brings it back, with its data, and ends the give-up.
    host.call(iid, "restart")
    recovered = host.wait_event(10, method="report", instance_id=iid, operation="server")
    assert recovered["outcome"] == "recovered", recovered["details"]
    assert client.rows() == set(range(5))
    assert host.call(iid, "get_status") == "healthy"
