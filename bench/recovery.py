"""Crash recovery benchmark: the time from SIGKILL of an instance's database server to the first
successful client query, with the guest agent restarting the server on its own, against the floor
measured in the same run on the same data directory:

* Cove: a real guest agent (started by the local driver as the service user, on a private bus)
  runs the server; after an intended restart (which also gives the crash an immediate restart:
  restarts after crashes count against an allowance, see cove.guestagent.recovery) the server
  is killed and a tenant's client queries over TCP until one is answered.
* Floor: the agent is killed, the same server (same argv, same user, same data directory and
  configuration) is stopped cleanly and started by hand, then killed and started again by hand
  the moment it is seen dead, the same client querying until answered. The agent is started
  again afterwards.

The two alternate, round after round, so a load that comes and goes weighs on both alike.

Usage: python bench/recovery.py [--n 5] [--datastore NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from guesthost import Host, private_host

from cove.common import procfs
from cove.common.service_user import service_user
from cove.domain.datastores import DATASTORES
from cove.guestagent.config import load_settings
from cove.guestagent.datastores import load_manager

PASSWORD = "bench-Pass-1"
#: Pause between two failed client attempts: a client retrying about as fast as it can.
POLL = 0.005


def query(name: str, address: str, port: int) -> bool:
    """One client attempt: log in as the tenant's user and read the row written before the
    kills; True when it was answered."""
    try:
        if name == "postgresql":
            with psycopg.connect(
                host=address,
                port=port,
                user="app",
                password=PASSWORD,
                dbname="app",
                connect_timeout=2,
            ) as conn:
                return conn.execute("SELECT v FROM kept").fetchone() == ("row",)
        if name == "mariadb":
            conn = pymysql.connect(
                host=address,
                port=port,
                user="app",
                password=PASSWORD,
                database="app",
                connect_timeout=2,
            )
            with conn, conn.cursor() as cur:
                cur.execute("SELECT v FROM kept")
                return cur.fetchone() == ("row",)
        client = redis.Redis(
            host=address,
            port=port,
            username="app",
            password=PASSWORD,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        with client:
            return client.get("kept") == b"row"
    except (psycopg.Error, pymysql.MySQLError, redis.RedisError, OSError):
        return False


def write_row(name: str, address: str, port: int) -> None:
    if name == "postgresql":
        with psycopg.connect(
            host=address, port=port, user="app", password=PASSWORD, dbname="app", autocommit=True
        ) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('row')")
    elif name == "mariadb":
        conn = pymysql.connect(
            host=address, port=port, user="app", password=PASSWORD, database="app", autocommit=True
        )
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (v varchar(10))")
            cur.execute("INSERT INTO kept VALUES ('row')")
    else:
        with redis.Redis(host=address, port=port, username="app", password=PASSWORD) as client:
            client.set("kept", "row")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


class Instance:
    """One instance of a datastore, run by a real guest agent on the host."""

    def __init__(self, host: Host, name: str) -> None:
        self.host, self.name = host, name
        self.spec = host.spec_of(name)
        self.id = self.spec.instance_id
        self.dir = host.driver.instance_dir(self.id)
        host.create(self.spec)
        with_db = name != "redis"
        host.call(
            self.id,
            "prepare",
            databases=[{"name": "app"}] if with_db else [],
            users=[{"name": "app", "password": PASSWORD, "databases": ["app"] if with_db else []}],
        )
        wait_for(self._prepared, 300, "prepare")
        write_row(name, self.spec.address, self.spec.port)

    def _prepared(self) -> bool:
        event = self.host.wait_event(300, method="report", instance_id=self.id)
        if event.get("operation") != "prepare":
            return False
        if event["outcome"] != "success":
            raise RuntimeError(f"prepare failed: {event}")
        return True

    def answered(self) -> bool:
        return query(self.name, self.spec.address, self.spec.port)

    def server_pid(self) -> int:
        return self.host.server_pid(self.id, self.name)

    def cove_run(self) -> float:
        """An intended restart (so the crash gets an immediate restart), then kill the server:
        the seconds until a client query is answered again."""
        self.host.call(self.id, "restart")
        pid = self.server_pid()
        start = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        wait_for(self.answered, 120, "an answer after the agent's restart")
        took = time.perf_counter() - start
        for outcome in ("crashed", "recovered"):
            event = self.host.wait_event(60, instance_id=self.id, operation="server")
            if event["outcome"] != outcome:
                raise RuntimeError(f"expected a {outcome} report: {event}")
        return took

    def floor_run(self) -> float:
        """With the agent out of the way, the same by hand: a clean stop and start, then kill
        the server and start it again the moment it is seen dead; the seconds from the kill to
        the first answer. The agent is started again afterwards, and takes over a server it
        started itself."""
        agent = int((self.dir / "run" / "guestagent.lock").read_text().strip())
        pid = self.server_pid()
        stop_signal = DATASTORES[self.name].stray.stop[0][0]
        # The agent's own command line for the server (Redis rewrites its process title, so
        # /proc does not have it); run as the service user, MariaDB needs no --user.
        server = load_manager(load_settings(self.host.driver.config_path(self.id))).server
        argv = [arg for arg in server.command() if not arg.startswith("--user=")]
        os.kill(agent, signal.SIGKILL)
        reaped(agent)
        os.kill(pid, stop_signal)
        # The init process reaps the orphaned server late, and PostgreSQL takes the zombie's
        # pid file for a live server: wait (untimed) until it is gone for good.
        reaped(pid)
        user = service_user("cove")
        data = self.dir / "data"
        with (self.dir / "log" / "floor.log").open("ab") as log:

            def start() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    argv,
                    cwd=data,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=user.popen_user,
                    group=user.popen_group,
                    extra_groups=user.popen_extra_groups,
                    umask=0o077,
                )

            proc = start()
            try:
                wait_for(self.answered, 120, "the server started by hand")
                start_at = time.perf_counter()
                proc.kill()
                proc.wait()
                # As an operator must (and the agent does): nothing of the old server left.
                left_gone(data)
                proc = start()
                wait_for(self.answered, 120, "an answer after the start by hand")
                took = time.perf_counter() - start_at
            finally:
                proc.send_signal(stop_signal)
                proc.wait(60)
        self.host.driver.ensure_running(self.id)
        wait_for(lambda: self.host.call(self.id, "get_status") == "healthy", 120, "the agent")
        return took


def reaped(pid: int) -> None:
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, f"pid {pid} to be reaped")


def left_gone(data: Path) -> None:
    """Kill what a killed server left working in its data directory, and wait until it is
    gone."""
    left = procfs.working_in(service_user("cove").uid or 0, os.stat(data))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(procfs.alive(p) for p in left), 30, "the server's processes")


def measure(host: Host, name: str, n: int) -> tuple[list[float], list[float]]:
    """``n`` rounds of one crash with the agent and one by hand, alternating, so a load that
    comes and goes on the machine weighs on both alike."""
    inst = Instance(host, name)
    cove, floor = [], []
    try:
        for _ in range(n):
            cove.append(inst.cove_run())
            floor.append(inst.floor_run())
    finally:
        host.driver.destroy(inst.id)
        host.created.remove(inst.id)
    return cove, floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="crashes per datastore and side")
    parser.add_argument(
        "--datastore", action="append", choices=sorted(DATASTORES), help="default: all found"
    )
    args = parser.parse_args()
    names = args.datastore or [n for n in DATASTORES if DATASTORES[n].find_versions()]
    rows = []
    with private_host() as host:
        for name in names:
            cove, floor = measure(host, name, args.n)
            rows.append((name, statistics.median(cove), statistics.median(floor), cove, floor))
    print(f"kill -9 to the first answered query, median of {args.n}")
    print(f"{'datastore':12} {'floor':>8} {'cove':>8} {'cove/floor':>11}")
    for name, cove_s, floor_s, _c, _f in rows:
        print(f"{name:12} {floor_s:7.3f}s {cove_s:7.3f}s {cove_s / floor_s:11.2f}")
    for name, _c_s, _f_s, cove, floor in rows:
        print(
            f"  {name}: cove {' '.join(f'{t:.3f}' for t in cove)}; "
            f"floor {' '.join(f'{t:.3f}' for t in floor)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
