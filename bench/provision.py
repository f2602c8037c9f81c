"""Provisioning benchmark: Cove's time from POST to the first successful client connection,
against raw floors measured in the same run on the same machine:

* PostgreSQL, raw initdb: initdb + start + create database + create user by hand, then the
  same first connection (what an operator without Cove does);
* PostgreSQL, raw template: the same, copying a ready data directory instead of running initdb
  (the method Cove uses), which isolates Cove's own overhead;
* MariaDB, raw: mariadb-install-db, mariadbd started, a database and a user made over the
  socket, then the same first connection as the user;
* Redis, raw: a configuration file with AOF and an ACL user, redis-server started, the first
  authenticated PING.

Usage: python bench/provision.py [--n 5]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymysql
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane, wait_for

from cove.common.service_user import ServiceUser, service_user
from cove.compute.discovery import find_mariadb, find_postgresql, find_redis, mariadb_install_db

PASSWORD = "bench-Pass-1"
RAW_POOL = "127.43."
#: How often a client asks whether its instance is ready, as a script or the CLI would.
POLL = 0.05


def _connect(host: str) -> None:
    def attempt() -> bool:
        try:
            psycopg.connect(
                host=host, port=5432, user="app", password=PASSWORD, dbname="app", connect_timeout=2
            ).close()
            return True
        except psycopg.OperationalError:
            return False

    wait_for(attempt, 120, 0.01, f"a connection to {host}")


class RawPostgres:
    """PostgreSQL set up by hand, from initdb or from a copied template."""

    def __init__(self, base: Path, index: int, user: ServiceUser, template: Path | None) -> None:
        self.dir = base / f"raw{index}"
        self.host = f"{RAW_POOL}{index // 250}.{index % 250 + 1}"
        self.bin = Path(find_postgresql()[-1].bin_dir)
        self.user = user
        self.template = template
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, *argv: str) -> None:
        subprocess.run(
            list(argv),
            check=True,
            capture_output=True,
            user=self.user.popen_user,
            group=self.user.popen_group,
            extra_groups=self.user.popen_extra_groups,
        )

    def initdb(self, target: Path) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(target),
            "-U",
            "admin",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--no-instructions",
        )

    def provision(self) -> float:
        start = time.perf_counter()
        self.dir.mkdir()
        os.chown(self.dir, self.user.uid, self.user.gid)
        data = self.dir / "data"
        if self.template is None:
            self.initdb(data)
        else:
            self._run("cp", "-a", str(self.template), str(data))
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "port=5432",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user.popen_user,
            group=self.user.popen_group,
            extra_groups=self.user.popen_extra_groups,
        )
        conn = wait_for(self._admin, 60, 0.01, "the raw server")
        with conn:
            conn.execute("CREATE DATABASE app")
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("GRANT ALL ON DATABASE app TO app")
        _connect(self.host)
        return time.perf_counter() - start

    def _admin(self) -> psycopg.Connection | None:
        try:
            return psycopg.connect(
                host=str(self.dir), port=5432, user="admin", dbname="postgres", autocommit=True
            )
        except psycopg.OperationalError:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)


def cove_provision(plane: ControlPlane, name: str) -> float:
    start = time.perf_counter()
    resp = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": name,
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "postgresql"},
                "databases": [{"name": "app"}],
                "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "app"}]}],
            }
        },
    )
    resp.raise_for_status()
    iid = resp.json()["instance"]["id"]
    inst = wait_for(lambda: _active(plane, iid), 300, POLL, "ACTIVE")
    _connect(inst["ip"][0])
    return time.perf_counter() - start


def _active(plane: ControlPlane, iid: str) -> dict[str, Any] | None:
    inst: dict[str, Any] = plane.http.get(f"/instances/{iid}").json()["instance"]
    if inst["status"] == "ERROR":
        raise RuntimeError(f"instance failed: {inst.get('fault')}")
    return inst if inst["status"] == "ACTIVE" else None


def _delete_all(plane: ControlPlane) -> None:
    for inst in plane.http.get("/instances").json()["instances"]:
        plane.http.delete(f"/instances/{inst['id']}")
    wait_for(lambda: not plane.http.get("/instances").json()["instances"], 300, 0.2, "deletes")


def _run(fn: Callable[[int], float], n: int, concurrent: bool) -> float:
    """The median time of ``n`` sequential runs, or the time until all ``n`` concurrent runs
    are done."""
    if not concurrent:
        return statistics.median(fn(i) for i in range(n))
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(fn, range(n)))
    return time.perf_counter() - start


def _ping_redis(host: str) -> None:
    def attempt() -> bool:
        try:
            return bool(
                redis.Redis(
                    host=host, port=6379, username="app", password=PASSWORD, socket_timeout=2
                ).ping()
            )
        except redis.exceptions.ConnectionError:
            return False

    wait_for(attempt, 120, 0.01, f"Redis at {host}")


class RawRedis:
    """Redis set up by hand: a configuration with AOF and one ACL user, the server started."""

    def __init__(self, base: Path, index: int, user: ServiceUser) -> None:
        self.dir = base / f"redis{index}"
        self.host = f"{RAW_POOL}{200 + index // 250}.{index % 250 + 1}"
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    def provision(self) -> float:
        start = time.perf_counter()
        self.dir.mkdir()
        os.chown(self.dir, self.user.uid, self.user.gid)
        digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
        (self.dir / "users.acl").write_text(
            f"user default off\nuser app on #{digest} ~* &* +@all -@admin\n"
        )
        (self.dir / "redis.conf").write_text(
            f"bind {self.host}\nport 6379\ndir {self.dir}\nappendonly yes\n"
            f'aclfile {self.dir / "users.acl"}\nsave ""\n'
        )
        for path in self.dir.iterdir():
            os.chown(path, self.user.uid, self.user.gid)
        self.proc = subprocess.Popen(
            [str(Path(find_redis()[-1].bin_dir) / "redis-server"), str(self.dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.user.popen_user,
            group=self.user.popen_group,
            extra_groups=self.user.popen_extra_groups,
        )
        _ping_redis(self.host)
        return time.perf_counter() - start

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def cove_provision_redis(plane: ControlPlane, name: str) -> float:
    start = time.perf_counter()
    resp = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": name,
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "redis"},
                "users": [{"name": "app", "password": PASSWORD}],
            }
        },
    )
    resp.raise_for_status()
    iid = resp.json()["instance"]["id"]
    inst = wait_for(lambda: _active(plane, iid), 300, POLL, "ACTIVE")
    _ping_redis(inst["ip"][0])
    return time.perf_counter() - start


def measure_redis(plane: ControlPlane, base: Path, n: int) -> list[tuple[str, float, float]]:
    return measure_against_raw(
        plane, n, lambda i, user: RawRedis(base, i, user), cove_provision_redis, "r"
    )


def _connect_maria(host: str) -> None:
    def attempt() -> bool:
        try:
            pymysql.connect(
                host=host,
                port=3306,
                user="app",
                password=PASSWORD,
                database="app",
                connect_timeout=2,
            ).close()
            return True
        except pymysql.err.OperationalError:
            return False

    wait_for(attempt, 120, 0.01, f"MariaDB at {host}")


class RawMaria:
    """MariaDB set up by hand: mariadb-install-db, mariadbd as the service user, a database
    and a user made as root over the socket."""

    def __init__(self, base: Path, index: int, user: ServiceUser) -> None:
        self.dir = base / f"maria{index}"
        self.host = f"{RAW_POOL}{100 + index // 250}.{index % 250 + 1}"
        self.user = user
        self.bin = Path(find_mariadb()[-1].bin_dir)
        # The installer that goes with the server timed, as Cove's guest finds it.
        self.install_db = mariadb_install_db(self.bin) or Path("mariadb-install-db")
        self.proc: subprocess.Popen[bytes] | None = None

    def provision(self) -> float:
        start = time.perf_counter()
        self.dir.mkdir()
        for sub in ("data", "tmp"):
            (self.dir / sub).mkdir()
        cnf = self.dir / "my.cnf"
        cnf.write_text(
            f"[mysqld]\ndatadir={self.dir / 'data'}\ntmpdir={self.dir / 'tmp'}\n"
            f"socket={self.dir / 'm.sock'}\npid-file={self.dir / 'm.pid'}\n"
            f"log-error={self.dir / 'error.log'}\nbind-address={self.host}\nport=3306\n"
            "skip-name-resolve\n"
        )
        for path in (self.dir, *self.dir.iterdir()):
            os.chown(path, self.user.uid, self.user.gid)
        defaults, as_user = f"--defaults-file={cnf}", f"--user={self.user.name}"
        subprocess.run(
            [str(self.install_db), defaults, as_user, "--skip-test-db", "--skip-name-resolve"],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [str(self.bin / "mariadbd"), defaults, as_user],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir / "data",
        )
        conn = wait_for(self._admin, 60, 0.01, "the raw server")
        with conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            cur.execute("CREATE USER app@'%%' IDENTIFIED BY %s", (PASSWORD,))
            cur.execute("GRANT ALL ON app.* TO app@'%'")
        _connect_maria(self.host)
        return time.perf_counter() - start

    def _admin(self) -> Any:
        # root@localhost, by the unix socket: this process runs as root.
        try:
            return pymysql.connect(unix_socket=str(self.dir / "m.sock"), user="root")
        except pymysql.err.OperationalError:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)


def cove_provision_maria(plane: ControlPlane, name: str) -> float:
    start = time.perf_counter()
    resp = plane.http.post(
        "/instances",
        json={
            "instance": {
                "name": name,
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "mariadb"},
                "databases": [{"name": "app"}],
                "users": [{"name": "app", "password": PASSWORD, "databases": [{"name": "app"}]}],
            }
        },
    )
    resp.raise_for_status()
    iid = resp.json()["instance"]["id"]
    inst = wait_for(lambda: _active(plane, iid), 300, POLL, "ACTIVE")
    _connect_maria(inst["ip"][0])
    return time.perf_counter() - start


def measure_maria(plane: ControlPlane, base: Path, n: int) -> list[tuple[str, float, float]]:
    return measure_against_raw(
        plane, n, lambda i, user: RawMaria(base, i, user), cove_provision_maria, "m"
    )


class RawServer(Protocol):
    def provision(self) -> float: ...

    def stop(self) -> None: ...


def measure_against_raw(
    plane: ControlPlane,
    n: int,
    make_raw: Callable[[int, ServiceUser], RawServer],
    cove_one: Callable[[ControlPlane, str], float],
    prefix: str,
) -> list[tuple[str, float, float]]:
    """``n`` raw set-ups (made by ``make_raw``) and ``n`` Cove instances, one after the other
    and all at once: (scenario, raw seconds, Cove seconds) rows."""
    user = service_user("cove")
    numbers = itertools.count()
    servers: list[RawServer] = []
    lock = threading.Lock()

    def raw_one(_i: int) -> float:
        with lock:
            server = make_raw(next(numbers), user)
            servers.append(server)
        return server.provision()

    rows = []
    for concurrent in (False, True):
        label = f"{n} {'concurrent (until all ready)' if concurrent else 'sequential (median)'}"
        try:
            raw = _run(raw_one, n, concurrent)
        finally:  # a failed run leaves no server behind
            for server in servers:
                server.stop()
            servers.clear()
        cove = _run(lambda i: cove_one(plane, f"{prefix}{i}"), n, concurrent)
        _delete_all(plane)
        rows.append((label, raw, cove))
    return rows


class Raw:
    """Runs raw provisionings of one kind and cleans up after them."""

    def __init__(self, base: Path, template: Path | None) -> None:
        self.base, self.template = base, template
        self.user = service_user("cove")
        self.servers: list[RawPostgres] = []
        self._numbers = itertools.count(0 if template is None else 1000)
        self._lock = threading.Lock()

    def one(self, _i: int) -> float:
        with self._lock:
            server = RawPostgres(self.base, next(self._numbers), self.user, self.template)
            self.servers.append(server)
        return server.provision()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def measure(plane: ControlPlane, base: Path, n: int) -> list[tuple[str, float, float, float]]:
    template = base / "template"
    RawPostgres(base, 0, service_user("cove"), None).initdb(template)
    raw_initdb, raw_template = Raw(base, None), Raw(base, template)
    rows = []
    for concurrent in (False, True):
        label = f"{n} {'concurrent (until all ready)' if concurrent else 'sequential (median)'}"
        times = []
        for raw in (raw_initdb, raw_template):
            times.append(_run(raw.one, n, concurrent))
            raw.stop()
        times.append(_run(lambda i: cove_provision(plane, f"b{i}"), n, concurrent))
        _delete_all(plane)
        rows.append((label, times[0], times[1], times[2]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="instances per scenario")
    args = parser.parse_args()
    if not find_postgresql():
        print("no PostgreSQL server binaries found", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    base.chmod(0o755)
    os.chown(base, service_user("cove").uid, service_user("cove").gid)
    plane = ControlPlane(fast_heartbeats=False).start()
    redis_rows: list[tuple[str, float, float]] = []
    maria_rows: list[tuple[str, float, float]] = []
    try:
        warm = cove_provision(plane, "warm-up")
        _delete_all(plane)
        rows = measure(plane, base, args.n)
        if find_mariadb():
            maria_rows = measure_maria(plane, base, args.n)
        if find_redis():
            redis_rows = measure_redis(plane, base, args.n)
    finally:
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"first Cove instance of the version (also builds its template): {warm:.2f} s")
    print(
        f"PostgreSQL\n{'scenario':34} {'raw initdb':>10} {'raw tmpl':>9} {'cove':>7} "
        f"{'cove/initdb':>12} {'cove/tmpl':>10}"
    )
    for label, initdb_s, tmpl_s, cove_s in rows:
        print(
            f"{label:34} {initdb_s:9.2f}s {tmpl_s:8.2f}s {cove_s:6.2f}s "
            f"{cove_s / initdb_s:12.2f} {cove_s / tmpl_s:10.2f}"
        )
    if maria_rows:
        print(f"\nMariaDB\n{'scenario':34} {'raw':>10} {'cove':>7} {'cove/raw':>9}")
        for label, raw_s, cove_s in maria_rows:
            print(f"{label:34} {raw_s:9.2f}s {cove_s:6.2f}s {cove_s / raw_s:9.2f}")
    if redis_rows:
        print(f"\nRedis\n{'scenario':34} {'raw':>10} {'cove':>7} {'cove/raw':>9}")
        for label, raw_s, cove_s in redis_rows:
            print(f"{label:34} {raw_s:9.2f}s {cove_s:6.2f}s {cove_s / raw_s:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
