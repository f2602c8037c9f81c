"""Noisy-neighbour benchmark: how much one instance's heavy load slows another's queries on the
same host, in one run.

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

Usage: python bench/isolation.py [--duration 15] [--noisy 4] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane, wait_for

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


def fmt(run: Run) -> str:
    return (
        f"{run.qps:,.0f} queries/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
        f"max {run.max_ms:.1f} ms"
    )


def report(result: Result, args: argparse.Namespace) -> None:
    print("\nNoisy neighbour (PostgreSQL, tiny flavor, point selects on the victim):")
    if result.alone is None or result.loaded is None:
        print("  not measured")
        return
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


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--noisy", type=int, default=4, help="the neighbour's clients")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args()
    result = Result()
    began = time.perf_counter()
    plane = ControlPlane(extra_env={"COVE_ADDRESS_POOL": "127.78.0.0/24"})
    try:
        plane.start()
        print("Noisy-neighbour benchmark:", flush=True)
        measure(plane, args, result)
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
