"""Provisioning benchmark: Cove's time from POST to the first successful client connection,
against raw floors measured in the same run on the same machine:

* PostgreSQL, raw initdb: initdb + start + create database + create user by hand, then the
  same first connection (what an operator without Cove does);
* PostgreSQL, raw template: the same, copying a ready data directory instead of running initdb
  (the method Cove uses), which isolates Cove's own overhead;
* MariaDB, raw: mariadb-install-db, mariadbd started, a database and a user made over the
  socket, then the same first connection as the user;
* MariaDB, raw template: the same, copying a data directory mariadb-install-db made once;
* Redis, raw: a configuration file with AOF and an ACL user, redis-server started, the first
  authenticated PING (Redis has no data directory to make: its template floor is the same).

Each datastore is measured ``--n`` times one after the other (the median) and ``--concurrency``
at once (5 and 10: the time until all are ready), the floors and Cove in the same run, and
printed as ratios against each floor and as Cove's own time over the template floor per
instance. The first Cove instance of each datastore is made and deleted before (it builds the
version's template). Targets: every ratio against the by-hand floor <= 1.0 for PostgreSQL and
MariaDB, <= 3 for Redis (aim 1.5); Cove's own overhead <= 0.1 s per instance sequentially.

Usage: python bench/provision.py [--n 5] [--concurrency 5,10]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymysql
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane, wait_for

from cove.cli.user.waiting import pauses
from cove.common.service_user import ServiceUser, service_user
from cove.compute.discovery import find_mariadb, find_postgresql, find_redis, mariadb_install_db

PASSWORD = "bench-Pass-1"
RAW_POOL = "127.43."


def _until_active(plane: ControlPlane, iid: str) -> dict[str, Any]:
    """Ask whether the instance is ACTIVE as ``cove instance create --wait`` does (its pauses:
    short at first, doubling up to half a second)."""
    deadline = time.monotonic() + 300
    for pause in pauses():
        inst = _active(plane, iid)
        if inst is not None:
            return inst
        if time.monotonic() > deadline:
            raise RuntimeError(f"instance {iid} not ACTIVE after 300 s")
        time.sleep(pause)
    raise AssertionError("unreachable")


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
    inst = _until_active(plane, iid)
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
    inst = _until_active(plane, iid)
    _ping_redis(inst["ip"][0])
    return time.perf_counter() - start


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

    def __init__(
        self, base: Path, index: int, user: ServiceUser, template: Path | None = None
    ) -> None:
        self.dir = base / f"maria{index}"
        self.host = f"{RAW_POOL}{100 + index // 250}.{index % 250 + 1}"
        self.user = user
        self.template = template
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
        if self.template is None:
            self.install(defaults, as_user)
        else:
            (self.dir / "data").rmdir()
            subprocess.run(["cp", "-a", str(self.template), str(self.dir / "data")], check=True)
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

    def install(self, defaults: str, as_user: str) -> None:
        subprocess.run(
            [str(self.install_db), defaults, as_user, "--skip-test-db", "--skip-name-resolve"],
            check=True,
            capture_output=True,
        )

    def make_template(self, target: Path) -> None:
        """A data directory made by mariadb-install-db (as Cove's template is: a 4 MB redo
        log the server grows at its first start), for the template floor to copy."""
        target.mkdir()
        os.chown(target, self.user.uid, self.user.gid)
        cnf = target.with_name(target.name + ".cnf")
        cnf.write_text(f"[mysqld]\ndatadir={target}\ninnodb_log_file_size=4M\n")
        self.install(f"--defaults-file={cnf}", f"--user={self.user.name}")
        (target / "ib_buffer_pool").unlink(missing_ok=True)

    def _admin(self) -> Any:
        # root@localhost, by the unix socket: this process runs as root.
        try:
            # As Cove's agent connects: no TLS over the socket (PyMySQL's default tries it).
            return pymysql.connect(
                unix_socket=str(self.dir / "m.sock"), user="root", ssl_disabled=True
            )
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
    inst = _until_active(plane, iid)
    _connect_maria(inst["ip"][0])
    return time.perf_counter() - start


class RawServer(Protocol):
    def provision(self) -> float: ...

    def stop(self) -> None: ...


@dataclasses.dataclass
class Kind:
    """One datastore: its floors (name, a maker of one by-hand server by its number), the
    Cove provisioning of one instance, and a prefix for the instances' names."""

    name: str
    floors: list[tuple[str, Callable[[int], RawServer]]]
    cove_one: Callable[[ControlPlane, str], float]
    prefix: str


@dataclasses.dataclass
class Row:
    scenario: str
    floors: list[float]
    cove: float
    count: int
    concurrent: bool


class FloorRuns:
    """Provisions by-hand servers of one floor, numbered from ``numbers``; keeps them to stop."""

    def __init__(self, make: Callable[[int], RawServer], numbers: Iterator[int]) -> None:
        self.make, self.numbers = make, numbers
        self.servers: list[RawServer] = []
        self._lock = threading.Lock()

    def one(self, _i: int) -> float:
        with self._lock:
            server = self.make(next(self.numbers))
            self.servers.append(server)
        return server.provision()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def measure_kind(plane: ControlPlane, kind: Kind, n: int, concurrency: list[int]) -> list[Row]:
    """Sequential and concurrent runs of each floor and of Cove, each floor's servers stopped
    before the next run (a failed run leaves none behind)."""
    numbers = itertools.count()
    names = itertools.count()
    rows = []
    scenarios = [(n, False)] + [(c, True) for c in concurrency]
    for count, concurrent in scenarios:
        label = (
            f"{count} concurrent (until all ready)"
            if concurrent
            else f"{count} sequential (median)"
        )
        floors = []
        for _name, make in kind.floors:
            runs = FloorRuns(make, numbers)
            try:
                floors.append(_run(runs.one, count, concurrent))
            finally:
                runs.stop()
        try:
            cove = _run(
                lambda _i: kind.cove_one(plane, f"{kind.prefix}{next(names)}"), count, concurrent
            )
        finally:
            _delete_all(plane)
        rows.append(Row(label, floors, cove, count, concurrent))
        print(
            f"  {kind.name} {label}: "
            + ", ".join(
                f"{fname} {t:.2f} s" for (fname, _m), t in zip(kind.floors, floors, strict=True)
            )
            + f", Cove {cove:.2f} s",
            flush=True,
        )
    return rows


def report(kind: Kind, rows: list[Row]) -> None:
    names = [name for name, _make in kind.floors]
    head = "".join(f"{name:>12}" for name in names)
    ratios = "".join(f"{'cove/' + name:>18}" for name in names)
    print(f"\n{kind.name}\n{'scenario':34}{head}{'cove':>9}{ratios}")
    for row in rows:
        times = "".join(f"{t:11.2f}s" for t in row.floors)
        shown = "".join(f"{row.cove / t:18.2f}" for t in row.floors)
        print(f"{row.scenario:34}{times}{row.cove:8.2f}s{shown}")
    sequential = next(row for row in rows if not row.concurrent)
    overhead = sequential.cove - sequential.floors[-1]
    print(
        f"Cove's own time over the {names[-1]} floor, sequential: {overhead:+.2f} s per instance "
        "(target <= 0.1 s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="sequential instances per datastore")
    parser.add_argument(
        "--concurrency", default="5,10", help="how many at once, comma-separated (5,10)"
    )
    parser.add_argument(
        "--datastores",
        default="postgresql,mariadb,redis",
        help="which datastores, comma-separated (postgresql,mariadb,redis)",
    )
    args = parser.parse_args()
    wanted = {d.strip().lower() for d in args.datastores.split(",") if d.strip()}
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not find_postgresql():
        print("no PostgreSQL server binaries found", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    base.chmod(0o755)
    user = service_user("cove")
    os.chown(base, user.uid, user.gid)
    most = max([args.n, *concurrency])
    plane = ControlPlane(
        fast_heartbeats=False, extra_env={"COVE_MAX_INSTANCES_PER_PROJECT": str(2 * most)}
    ).start()
    kinds: list[Kind] = []
    pg_template = base / "pg-template"
    RawPostgres(base, 9999, user, None).initdb(pg_template)
    kinds.append(
        Kind(
            "PostgreSQL",
            [
                ("initdb", lambda i: RawPostgres(base, i, user, None)),
                ("template", lambda i: RawPostgres(base, 2000 + i, user, pg_template)),
            ],
            cove_provision,
            "p",
        )
    )
    if find_mariadb():
        maria_template = base / "maria-template"
        kinds.append(
            Kind(
                "MariaDB",
                [
                    ("install-db", lambda i: RawMaria(base, i, user)),
                    ("template", lambda i: RawMaria(base, 2000 + i, user, maria_template)),
                ],
                cove_provision_maria,
                "m",
            )
        )
    if find_redis():
        kinds.append(
            Kind(
                "Redis", [("by hand", lambda i: RawRedis(base, i, user))], cove_provision_redis, "r"
            )
        )
    results: list[tuple[Kind, list[Row]]] = []
    warm: dict[str, float] = {}
    try:
        if find_mariadb() and "mariadb" in wanted:
            RawMaria(base, 9999, user).make_template(maria_template)
        for kind in [k for k in kinds if k.name.lower() in wanted]:
            # The first instance of a version builds its template: not what later ones pay.
            warm[kind.name] = kind.cove_one(plane, f"{kind.prefix}-warm-up")
            _delete_all(plane)
            results.append((kind, measure_kind(plane, kind, args.n, concurrency)))
    finally:
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
    for name, seconds in warm.items():
        print(f"first Cove instance of {name} (also builds its template): {seconds:.2f} s")
    for kind, rows in results:
        report(kind, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
