"""Isolation benchmark, in one run: how much one instance's heavy load slows another's queries
on the same host, and what isolation costs an instance's speed.

Two PostgreSQL instances of the ``tiny`` flavor (512 MB, 1 vCPU) are made through Cove's API.
The victim answers point selects (a 10,000-row table, a primary-key lookup, sysbench-style) from
one client with one connection, for ``--duration`` seconds:

1. alone (the baseline);
2. while the neighbour runs ``--noisy`` client processes, each sorting a million random
   rows in memory again and again (``work_mem`` 100 MB: CPU for the sort, memory up to the
   flavor's limit, so the kernel reclaims inside the neighbour's group or kills one of its
   backends; a killed backend's client reconnects and goes on).

It prints the victim's latency (p50, p99, max) and throughput each way and their ratios, and
what the kernel enforced (the management view's ``isolation`` of both instances). Target: the
victim's p99 under load <= 2x alone.

Then the speed of an instance, PostgreSQL and MariaDB, each against the same server started by
hand: ``pgbench`` (its TPC-B-like default, ``--scale``, 4 clients, 2 threads, ``--duration``
seconds, over TCP) against a Cove PostgreSQL instance of the ``tiny`` flavor (its volume, its
control group, its flavor-tuned settings, WAL archiving on) and against the same PostgreSQL
started by hand with stock settings (``initdb``, no archiving, the same durability: fsync and
synchronous commit on) on the host's filesystem, in a control group with the same memory and
CPU limits; then a sysbench-style OLTP read-write load (``oltp.py``: 10 point selects, a range,
two updates, a delete and an insert per transaction, on ``--scale`` * 10,000 rows, 4 client
processes, ``--duration`` seconds) against a Cove MariaDB instance of the ``tiny`` flavor (its
volume, its control group, its flavor-tuned buffer pool, no binary log until a replica needs
one; made with its database and account, as a tenant would) and against Debian's ``mariadbd``
installed by ``mariadb-install-db`` and started with its defaults (no binary log), on a private
address and a port that is no standard one, committing as durably as the instance does
(``innodb_flush_log_at_trx_commit`` and ``sync_binlog`` read from it) and with its database in
the instance's character set (the same rows on both sides), in the same kind of control group.
Each way alternates ``--rounds`` times, the side that goes first taking turns, after the host
wrote back what the loads left dirty; the median TPS of each is compared.
Target: Cove >= 1.0x by hand (isolation costs nothing); aim 1.2x.

The control plane runs with Cove's own heartbeat interval, not the tests' quick one: the guest
agent lives in its instance's control group, and its heartbeats are CPU the instance pays for.

Usage: python bench/isolation.py [--duration 15] [--noisy 4] [--scale 10] [--rounds 2]
    [--only neighbour|postgresql|mariadb ...] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane, wait_for

import oltp
from cove.common import cgroups, procfs
from cove.common.service_user import service_user
from cove.compute.discovery import find_postgresql

ROWS = 10_000
#: The neighbour's load: a sort of random rows held in memory (work_mem allows it).
HEAVY = "SELECT g FROM generate_series(1, 1000000) g ORDER BY random() OFFSET 999999"


@dataclasses.dataclass
class Run:
    queries: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def qps(self) -> float:
        return self.queries / self.seconds


@dataclasses.dataclass
class Result:
    alone: Run | None = None
    loaded: Run | None = None
    neighbour_sorts: int = 0
    neighbour_kills: int = 0
    isolation: dict[str, Any] = dataclasses.field(default_factory=dict)
    cove_tps: list[float] = dataclasses.field(default_factory=list)
    hand_tps: list[float] = dataclasses.field(default_factory=list)
    #: The OLTP load on MariaDB, and the durability both servers committed with.
    cove_oltp_tps: list[float] = dataclasses.field(default_factory=list)
    hand_oltp_tps: list[float] = dataclasses.field(default_factory=list)
    mariadb_durability: dict[str, str] = dataclasses.field(default_factory=dict)
    error: str = ""


def connect(dsn: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(**dsn, connect_timeout=10, autocommit=True)


def point_selects(dsn: dict[str, Any], duration: float) -> Run:
    latencies = []
    with connect(dsn) as conn:
        deadline = time.perf_counter() + duration
        while True:
            began = time.perf_counter()
            if began >= deadline:
                break
            conn.execute("SELECT v FROM t WHERE id = %s", (random.randint(1, ROWS),)).fetchone()
            latencies.append(time.perf_counter() - began)
    latencies.sort()
    return Run(
        queries=len(latencies),
        seconds=duration,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        max_ms=latencies[-1] * 1000,
    )


def heavy_client(dsn: dict[str, Any], until: float, counts: Any) -> None:
    """Sorts in memory until ``until``; a connection the server closed is opened again."""
    while time.time() < until:
        try:
            with connect(dsn) as conn:
                conn.execute("SET work_mem = '100MB'")
                while time.time() < until:
                    conn.execute(HEAVY).fetchall()
                    with counts.get_lock():
                        counts[0] += 1
        except psycopg.Error:
            with counts.get_lock():
                counts[1] += 1
            time.sleep(0.2)


def measure(plane: ControlPlane, args: argparse.Namespace, result: Result) -> None:
    api = plane.http
    admin = plane.account("admin", "bench-admin", "admin").http
    ids = [
        plane.create(name=f"bench-{n}", flavorRef="1", datastore={"type": "postgresql"})["id"]
        for n in ("victim", "neighbour")
    ]
    victim, neighbour = (plane.wait_status(i, "ACTIVE", timeout=300) for i in ids)
    api.post(f"/instances/{ids[0]}/databases", json={"databases": [{"name": "bench"}]})
    dsns = []
    for inst, db in ((victim, "bench"), (neighbour, "postgres")):
        password = api.post(f"/instances/{inst['id']}/root").json()["user"]["password"]
        dsns.append(
            {
                "host": inst["ip"][0],
                "port": 5432,
                "user": "root",
                "password": password,
                "dbname": db,
            }
        )
    with connect(dsns[0]) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,))
        conn.execute("ANALYZE t")
    point_selects(dsns[0], 2.0)  # warm up the victim's cache and connection path

    result.alone = point_selects(dsns[0], args.duration)
    print(f"  victim alone: {fmt(result.alone)}", flush=True)

    counts = multiprocessing.Array("i", 2)
    until = time.time() + args.duration + 4
    noisy = [
        multiprocessing.Process(target=heavy_client, args=(dsns[1], until, counts))
        for _ in range(args.noisy)
    ]
    for proc in noisy:
        proc.start()
    time.sleep(2)  # the neighbour's load under way
    try:
        result.loaded = point_selects(dsns[0], args.duration)
    finally:
        for proc in noisy:
            proc.join(args.duration + 60)
            if proc.is_alive():
                proc.kill()
    result.neighbour_sorts, result.neighbour_kills = counts[0], counts[1]
    print(f"  victim beside the noisy neighbour: {fmt(result.loaded)}", flush=True)

    for name, iid in zip(("victim", "neighbour"), ids, strict=True):
        wait_for(
            lambda i=iid: admin.get(f"/mgmt/instances/{i}").status_code == 200, 30, 0.2, "view"
        )
        result.isolation[name] = admin.get(f"/mgmt/instances/{iid}").json()["instance"]["isolation"]
    for iid in ids:
        api.delete(f"/instances/{iid}")
    for iid in ids:
        wait_for(lambda i=iid: api.get(f"/instances/{i}").status_code == 404, 120, 0.2, "deleted")


# -- an instance's speed: Cove against the same server by hand --------------------------------

HAND_ADDRESS = "127.79.0.1"
#: The by-hand servers' groups: the tiny flavor's limits, as Cove gives its instance.
HAND_GROUP = "bench-by-hand"
TINY = (512, 1)  # MB of memory, vCPUs


def pgbench(bin_dir: Path, dsn: dict[str, Any], *args: str) -> str:
    env = {**os.environ, "PGPASSWORD": str(dsn.get("password", ""))}
    argv = [str(bin_dir / "pgbench"), "-h", dsn["host"], "-p", str(dsn["port"])]
    argv += ["-U", dsn["user"], *args, dsn["dbname"]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def tps(output: str) -> float:
    found = re.search(r"tps = ([0-9.]+)", output)
    if found is None:
        raise RuntimeError(f"no tps in pgbench's output: {output[-300:]}")
    return float(found.group(1))


class ByHand:
    """PostgreSQL by hand: initdb, stock settings, in a control group of the tiny flavor."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "hand"
        self.bin = Path(find_postgresql()[-1].bin_dir)
        self.user = service_user("cove")
        self.proc: subprocess.Popen[bytes] | None = None
        self.groups, why = cgroups.detect(HAND_GROUP)
        if self.groups is None:
            print(f"  (the by-hand server runs without limits: {why})", flush=True)

    def _as_user(self) -> dict[str, Any]:
        return {
            "user": self.user.popen_user,
            "group": self.user.popen_group,
            "extra_groups": self.user.popen_extra_groups,
        }

    def start(self) -> dict[str, Any]:
        self.dir.mkdir()
        os.chown(self.dir, self.user.uid, self.user.gid)
        data = self.dir / "data"
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", "admin", "--auth=trust"],
            check=True,
            capture_output=True,
            **self._as_user(),
        )
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={HAND_ADDRESS}",
                "-c",
                f"unix_socket_directories={self.dir}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._as_user(),
        )
        if self.groups is not None:
            self.groups.limit("server", *TINY)
            self.groups.join("server", [self.proc.pid])
        dsn = {"host": HAND_ADDRESS, "port": 5432, "user": "admin", "dbname": "postgres"}
        wait_for(lambda: _answers(dsn), 60, 0.05, "the by-hand server")
        if self.groups is not None:  # what it started before it was moved, too
            self.groups.join("server", procfs.descendants(self.proc.pid))
        return dsn

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)
        if self.groups is not None:
            with contextlib.suppress(OSError):
                self.groups.remove("server")


def _answers(dsn: dict[str, Any]) -> bool:
    try:
        with connect(dsn):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def instance(plane: ControlPlane, **spec: Any) -> Iterator[dict[str, Any]]:
    """A Cove instance of the tiny flavor, made through the API and ACTIVE; deleted after."""
    api = plane.http
    iid = plane.create(flavorRef="1", volume={"size": 2}, **spec)["id"]
    try:
        yield plane.wait_status(iid, "ACTIVE", timeout=300)
    finally:
        api.delete(f"/instances/{iid}")
        wait_for(lambda: api.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "deleted")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A directory for a by-hand server (its service user must reach it); removed after."""
    base = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def alternate(
    label: str,
    rounds: int,
    cove: tuple[Callable[[], float], list[float]],
    hand: tuple[Callable[[], float], list[float]],
) -> None:
    """``rounds`` runs each way, each ``(run, results)``, the side that goes first taking
    turns: the host's other load drifts, and what the run before left weighs on whoever comes
    next, so a fixed order would put it on one side only. What the run before wrote is on disk
    before each run (the kernel would write it back during the next one, ~30 s later)."""
    for n in range(rounds):
        for run, results in (cove, hand) if n % 2 == 0 else (hand, cove):
            os.sync()
            results.append(run())
        print(f"  {label}: Cove {cove[1][-1]:,.0f} tps, by hand {hand[1][-1]:,.0f} tps", flush=True)


def instance_speed(plane: ControlPlane, args: argparse.Namespace, result: Result) -> None:
    api = plane.http
    with instance(plane, name="bench-speed") as inst, scratch() as base:
        iid = inst["id"]
        api.post(f"/instances/{iid}/databases", json={"databases": [{"name": "bench"}]})
        password = api.post(f"/instances/{iid}/root").json()["user"]["password"]
        cove = {"host": inst["ip"][0], "port": 5432, "user": "root", "password": password}
        cove["dbname"] = "bench"
        hand = ByHand(base)
        try:
            by_hand = hand.start()
            for dsn in (cove, by_hand):
                pgbench(hand.bin, dsn, "-i", "-q", "-s", str(args.scale))
            run = ("-c", "4", "-j", "2", "-T", str(int(args.duration)), "-n")
            alternate(
                "pgbench",
                args.rounds,
                (lambda: tps(pgbench(hand.bin, cove, *run)), result.cove_tps),
                (lambda: tps(pgbench(hand.bin, by_hand, *run)), result.hand_tps),
            )
        finally:
            hand.stop()


def mariadb_speed(plane: ControlPlane, args: argparse.Namespace, result: Result) -> None:
    """The OLTP load (``oltp.py``) on a Cove MariaDB instance, made with its database and
    account as a tenant would, and on MariaDB by hand."""
    password = secrets.token_urlsafe(16)
    spec = {
        "name": "bench-oltp",
        "datastore": {"type": "mariadb"},
        "databases": [{"name": "bench"}],
        "users": [{"name": "bench", "password": password, "databases": [{"name": "bench"}]}],
    }
    rows = args.scale * 10_000
    with instance(plane, **spec) as inst, scratch() as base:
        cove = {"host": inst["ip"][0], "port": 3306, "user": "bench", "password": password}
        cove["database"] = "bench"
        hand = oltp.ByHandMariaDB(base, HAND_ADDRESS, HAND_GROUP, "mariadb", TINY)
        try:
            # Read from the instance, defaults included: the by-hand server commits as the
            # instance does, even once Cove's my.cnf changes.
            result.mariadb_durability = oltp.durability(cove)
            # The same tables on both sides: the by-hand database takes the character set a
            # tenant's database gets (stock MariaDB's is latin1, whose rows are smaller).
            by_hand = hand.start(result.mariadb_durability, oltp.database_charset(cove))
            for dsn in (cove, by_hand):
                oltp.prepare(dsn, rows)
            alternate(
                "oltp_read_write",
                args.rounds,
                (lambda: oltp.run(cove, rows, 4, args.duration), result.cove_oltp_tps),
                (lambda: oltp.run(by_hand, rows, 4, args.duration), result.hand_oltp_tps),
            )
        finally:
            hand.stop()


def fmt(run: Run) -> str:
    return (
        f"{run.qps:,.0f} queries/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
        f"max {run.max_ms:.1f} ms"
    )


def report(result: Result, args: argparse.Namespace) -> None:
    print("\nNoisy neighbour (PostgreSQL, tiny flavor, point selects on the victim):")
    if result.alone is None or result.loaded is None:
        print("  not measured")
    else:
        report_neighbour(result, args)
    report_speed(result)


def report_neighbour(result: Result, args: argparse.Namespace) -> None:
    assert result.alone is not None and result.loaded is not None
    alone, loaded = result.alone, result.loaded
    print(f"  alone:   {fmt(alone)}")
    print(f"  loaded:  {fmt(loaded)}")
    print(
        f"  ratios (loaded / alone): p50 {loaded.p50_ms / alone.p50_ms:.2f}x, "
        f"p99 {loaded.p99_ms / alone.p99_ms:.2f}x (target <= 2x), "
        f"throughput {loaded.qps / alone.qps:.2f}x"
    )
    print(
        f"  the neighbour: {args.noisy} clients, {result.neighbour_sorts} in-memory sorts, "
        f"{result.neighbour_kills} connections lost (a backend killed at the memory limit)"
    )
    for name, seen in result.isolation.items():
        print(f"  {name}'s isolation: {seen}")


def report_speed(result: Result) -> None:
    print("\nInstance speed (pgbench, tiny flavor's limits both ways):")
    report_ratio(result.cove_tps, result.hand_tps)
    print(
        "\nInstance speed (MariaDB, sysbench-style oltp_read_write, 4 clients, "
        "tiny flavor's limits both ways):"
    )
    report_ratio(result.cove_oltp_tps, result.hand_oltp_tps)
    if result.mariadb_durability:
        same = ", ".join(f"{k}={v}" for k, v in result.mariadb_durability.items())
        print(f"  both ways: {same}")


def report_ratio(cove_tps: list[float], hand_tps: list[float]) -> None:
    if not cove_tps or not hand_tps:
        print("  not measured")
        return
    cove, hand = statistics.median(cove_tps), statistics.median(hand_tps)
    # Each round's two runs are next to each other in time: their ratio is what a host whose
    # speed drifts (other machines on it) disturbs least.
    paired = statistics.median(c / h for c, h in zip(cove_tps, hand_tps, strict=True))
    print(f"  Cove: {cove:,.0f} tps (median of {len(cove_tps)})")
    print(f"  by hand, stock settings: {hand:,.0f} tps")
    print(f"  ratio Cove / by hand: {cove / hand:.2f}x of the medians, {paired:.2f}x the median")
    print("  of the rounds' own ratios (target >= 1.0x, aim 1.2x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--noisy", type=int, default=4, help="the neighbour's clients")
    parser.add_argument(
        "--scale", type=int, default=10, help="pgbench's scale factor; the OLTP table's rows / 10k"
    )
    parser.add_argument("--rounds", type=int, default=2, help="pgbench and OLTP runs each way")
    parser.add_argument(
        "--only",
        choices=("neighbour", "postgresql", "mariadb"),
        action="append",
        help="run only this part (again for more than one); all three by default",
    )
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args()
    parts = set(args.only or ("neighbour", "postgresql", "mariadb"))
    result = Result()
    began = time.perf_counter()
    # Cove's heartbeat interval (see the module's notes), not the tests' one a second.
    plane = ControlPlane(fast_heartbeats=False, extra_env={"COVE_ADDRESS_POOL": "127.78.0.0/24"})
    try:
        plane.start()
        print("Isolation benchmark:", flush=True)
        if "neighbour" in parts:
            measure(plane, args, result)
        if "postgresql" in parts:
            instance_speed(plane, args, result)
        if "mariadb" in parts:
            mariadb_speed(plane, args, result)
    except (Exception, KeyboardInterrupt) as exc:
        result.error = f"{type(exc).__name__}: {exc or 'interrupted'}"
        print(f"  stopped: {result.error}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            plane.stop()
    report(result, args)
    print(f"wall time {time.perf_counter() - began:.0f} s")
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
