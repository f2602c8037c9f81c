"""Galera cluster benchmark: a 3-member MariaDB Galera cluster made through Cove's API, against
the same made by hand, in one run on the same machine:

1. Build: Cove's (``POST /clusters`` until the task reads NONE and every member ACTIVE)
   against three MariaDB servers made into a cluster by hand on private loopback addresses
   and free ports: ``mariadb-install-db`` for the three at once (as Cove places its members
   at once), then ``mariadbd`` with Galera settings equivalent to Cove's (every address
   Galera opens named on the node's own address, ``mariabackup`` state transfers signed in
   as an SST account), the first with ``--wsrep-new-cluster``, each other joining once the
   one before it is Synced, until the last is Synced in a cluster of 3.
2. Throughput of tiny queries (a point select by primary key, sysbench-style): ``--clients``
   processes, each with one persistent connection, for ``--duration`` seconds, through the
   cluster's load-balanced endpoint (HAProxy) and straight to the members (spread evenly
   over the three); the same client code both ways.
3. The error window when a member's server is killed (SIGKILL, the pid in its pid file)
   while a writer inserts through the endpoint with a new connection per write, as a pool
   reconnecting would: the writes that failed, the time from the first failure to the
   first write acknowledged after the last one, the longest time without an acknowledged
   write, the time until the member's server runs again (its guest agent restarts it) and
   until it is Synced again, and how it caught up (by an incremental state transfer, or a
   whole copy), from its server's log.
4. A rolling restart (``POST /clusters/{id}`` with ``{"restart": {}}``) under the same
   writer: its duration (the POST to the task reading NONE) and the writes that failed.

Targets: Cove's build <= 1.3x by hand; endpoint throughput >= 0.6x direct; no write failed
during the rolling restart.

Usage: python bench/cluster.py [--rounds 2] [--duration 10] [--clients 6] [--json]
       [--fast-heartbeats]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane

from cluster_hand import HandCluster
from cove.common.procfs import cmdline
from cove.common.service_user import service_user
from cove.compute.discovery import find_mariadb
from cove.guestagent.datastores.mariadb import conf, galera
from failover import leftovers
from failover_clients import wait_for
from failover_cove import server_pid

TARGET_BUILD, TARGET_THROUGHPUT = 1.3, 0.6
MEMBERS = 3
#: Cove's flavor for the members, and its memory: the hand-made servers are sized alike.
FLAVOR, RAM_MB = "2", 2048
#: Rows of the point-select table.
ROWS = 10_000
POINT_SELECT = "SELECT v FROM bench.t WHERE id = %s"
#: Pause after a failed write before the next attempt.
RETRY = 0.01


# -- the cluster through Cove ------------------------------------------------------------------


class CoveCluster:
    """A Galera cluster made through the API of a running Cove."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.id: str | None = None
        self.password = ""

    def view(self) -> dict[str, Any]:
        resp = self.plane.http.get(f"/clusters/{self.id}")
        resp.raise_for_status()
        return resp.json()["cluster"]  # type: ignore[no-any-return]

    def ready(self, strict: bool = True) -> dict[str, Any] | None:
        """The view once the task reads NONE and every member is ACTIVE; raises RuntimeError
        when a member failed (``strict``: a member killed on purpose may read ERROR awhile)."""
        shown = self.view()
        statuses = [m["status"] for m in shown["instances"]]
        if strict and {"ERROR", "FAILED"} & set(statuses):
            raise RuntimeError(f"a member of the cluster failed: {shown}")
        done = shown["task"]["name"] == "NONE" and statuses == ["ACTIVE"] * MEMBERS
        return shown if done else None

    def build(self, name: str, version: str) -> float:
        """POST until ready: seconds."""
        body = {
            "cluster": {
                "name": name,
                "datastore": {"type": "mariadb", "version": version},
                "instances": [{"flavorRef": FLAVOR, "volume": {"size": 1}}] * MEMBERS,
            }
        }
        start = time.perf_counter()
        resp = self.plane.http.post("/clusters", json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"POST /clusters answered {resp.status_code}: {resp.text}")
        self.id = resp.json()["cluster"]["id"]
        wait_for(self.ready, 600, "the cluster to be built")
        return time.perf_counter() - start

    def members(self) -> list[tuple[str, str]]:
        """(instance id, address) of every member."""
        return [(m["id"], m["ip"][0]) for m in self.view()["instances"]]

    def endpoint(self) -> str:
        ips: list[str] = wait_for(lambda: self.view().get("ip"), 60, "the cluster's endpoint")
        return ips[0]

    def enable_root(self) -> str:
        first = self.members()[0][0]
        resp = self.plane.http.post(f"/instances/{first}/root")
        resp.raise_for_status()
        self.password = resp.json()["user"]["password"]
        return self.password

    def delete(self) -> None:
        if self.id is None:
            return
        self.plane.http.delete(f"/clusters/{self.id}")
        gone = lambda: self.plane.http.get(f"/clusters/{self.id}").status_code == 404  # noqa: E731
        wait_for(gone, 180, f"cluster {self.id} deleted", 0.2)
        self.id = None


def mariadb_version(plane: ControlPlane) -> str:
    """The name of the newest MariaDB version the API offers."""
    stores = plane.http.get("/datastores").json()["datastores"]
    names = [str(v["name"]) for d in stores if d["name"] == "mariadb" for v in d["versions"]]
    if not names:
        raise RuntimeError("the API offers no MariaDB version")
    return max(names, key=lambda n: [int(p) if p.isdigit() else 0 for p in n.split(".")])


# -- clients -----------------------------------------------------------------------------------


def login(address: str, password: str, timeout: float = 2) -> Any:
    return pymysql.connect(
        host=address,
        port=3306,
        user="root",
        password=password,
        connect_timeout=timeout,
        read_timeout=10,
        write_timeout=10,
        autocommit=True,
    )


def query(address: str, password: str, sql: str, args: Any = None) -> list[Any]:
    with login(address, password) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def answers(address: str, password: str, sql: str, expected: list[Any]) -> bool:
    try:
        return [tuple(r) for r in query(address, password, sql)] == expected
    except pymysql.MySQLError:
        return False


def reader(address: str, password: str, start_at: float, stop_at: float, out: Any) -> None:
    """One client process: point selects on one persistent connection from ``start_at`` to
    ``stop_at`` (monotonic); puts how many were answered (or the error) on ``out``."""
    # The parent ends its clients itself, even when interrupted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        rng = random.Random(os.getpid())
        with login(address, password, 10) as conn, conn.cursor() as cur:
            time.sleep(max(0.0, start_at - time.monotonic()))
            count = 0
            while time.monotonic() < stop_at:
                cur.execute(POINT_SELECT, (rng.randint(1, ROWS),))
                cur.fetchone()
                count += 1
        out.put(count)
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def throughput(targets: list[str], password: str, duration: float) -> float:
    """Queries per second of one client process per address in ``targets``, all at once."""
    mp = multiprocessing.get_context("fork")
    out = mp.Queue()
    start_at = time.monotonic() + 1.0  # every client connected before the clock starts
    procs = [
        mp.Process(target=reader, args=(t, password, start_at, start_at + duration, out))
        for t in targets
    ]
    try:
        for proc in procs:
            proc.start()
        counts = [out.get(timeout=duration + 60) for _ in procs]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
    errors = [c for c in counts if isinstance(c, str)]
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return sum(int(c) for c in counts) / duration


class Writer(threading.Thread):
    """Inserts through ``address`` with a new connection per write, as a pool reconnecting
    would, and keeps the monotonic time of every acknowledged and every failed write."""

    def __init__(self, address: str, password: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.address, self.password = address, password
        self.acked: list[float] = []
        #: (time, the error's first words) of every failed write.
        self.failed: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                query(self.address, self.password, "INSERT INTO bench.w (at) VALUES (%s)", [0])
                self.acked.append(time.monotonic())
            except (pymysql.MySQLError, OSError) as exc:
                self.failed.append((time.monotonic(), str(exc)[:60]))
                time.sleep(RETRY)


@dataclasses.dataclass
class Window:
    """What the writer saw between two instants: seconds, writes."""

    acked: int
    failed: int
    #: The first failure to the first acknowledged write after the last failure.
    error_window: float
    #: The longest time without an acknowledged write.
    longest_gap: float
    #: How many failed with each error.
    errors: dict[str, int]


def window(writer: Writer, since: float, until: float) -> Window:
    acks = [t for t in writer.acked if since <= t <= until]
    fails = [(t, e) for t, e in writer.failed if since <= t <= until]
    gap = max(b - a for a, b in itertools.pairwise([since, *acks, until]))
    span = 0.0
    if fails:
        after = [t for t in writer.acked if t > fails[-1][0]]
        span = (after[0] if after else until) - fails[0][0]
    errors = collections.Counter(e for _t, e in fails)
    return Window(len(acks), len(fails), span, gap, dict(errors))


# -- the parts of the run ----------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    build_cove: list[float] = dataclasses.field(default_factory=list)
    build_hand: list[float] = dataclasses.field(default_factory=list)
    qps_endpoint: float = 0.0
    qps_direct: float = 0.0
    kill: Window | None = None
    kill_restarted: float = 0.0
    kill_synced: float = 0.0
    kill_transfer: str = ""
    restart: Window | None = None
    restart_took: float = 0.0
    error: str | None = None


def builds(cluster: CoveCluster, base: Path, prefix: str, rounds: int, r: Result) -> None:
    """``rounds`` builds each way, by hand first, nothing else running meanwhile; Cove's
    last cluster is kept."""
    user = service_user("cove")
    version = mariadb_version(cluster.plane)
    for number in range(rounds):
        cluster.delete()
        hand = HandCluster(base / f"hand{number + 1}", prefix, user, MEMBERS, RAM_MB)
        try:
            r.build_hand.append(hand.build())
        finally:
            hand.close()
        r.build_cove.append(cluster.build(f"bench-galera-{number + 1}", version))
        print(
            f"  round {number + 1}: by hand {r.build_hand[-1]:.2f} s,"
            f" Cove {r.build_cove[-1]:.2f} s",
            flush=True,
        )


def load(
    cluster: CoveCluster, endpoint: str, ips: list[str], args: argparse.Namespace, r: Result
) -> None:
    """The tables, then the point selects straight to the members and through the endpoint."""
    password = cluster.password
    for ip in [*ips, endpoint]:
        wait_for(partial(answers, ip, password, "SELECT 1", [(1,)]), 60, f"root on {ip}")
    with login(endpoint, password) as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE bench")
        cur.execute("CREATE TABLE bench.t (id INT PRIMARY KEY, v VARCHAR(120))")
        cur.execute("CREATE TABLE bench.w (id BIGINT AUTO_INCREMENT PRIMARY KEY, at INT)")
        rows = [(n, secrets.token_hex(60)) for n in range(1, ROWS + 1)]
        cur.executemany("INSERT INTO bench.t VALUES (%s, %s)", rows)
    counted = "SELECT count(*) FROM bench.t"
    for ip in ips:
        wait_for(partial(answers, ip, password, counted, [(ROWS,)]), 60, f"the rows on {ip}")
    direct = [ips[n % len(ips)] for n in range(args.clients)]
    r.qps_direct = throughput(direct, password, args.duration)
    print(f"  direct to the members: {r.qps_direct:,.0f} queries/s", flush=True)
    r.qps_endpoint = throughput([endpoint] * args.clients, password, args.duration)
    print(f"  through the endpoint: {r.qps_endpoint:,.0f} queries/s", flush=True)


def member_state(ip: str, password: str) -> str | None:
    try:
        rows = query(ip, password, "SHOW STATUS LIKE 'wsrep_local_state_comment'")
    except pymysql.MySQLError:
        return None
    return str(rows[0][1]) if rows else None


def new_server(instance_dir: Path, old: int) -> bool:
    """Whether a server other than ``old`` runs with the member's configuration."""
    config = str(instance_dir / "conf" / conf.CONF_FILE)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != old:
            argv = cmdline(int(entry.name))
            if argv and argv[0].endswith("mariadbd") and f"--defaults-file={config}" in argv:
                return True
    return False


def transfer(log: Path, offset: int) -> str:
    """How the restarted member caught up, from its server's log after ``offset``."""
    with log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    # A transfer by IST still runs the copy script, which bypasses the copy and logs
    # "SST received" all the same: IST is what tells.
    if "IST received" in text:
        return "incremental (IST)"
    return "a whole copy (SST)" if "SST received" in text else "no transfer logged"


def kill_member(plane: ControlPlane, cluster: CoveCluster, endpoint: str, r: Result) -> None:
    """SIGKILL of the last member's server under the writer, until it is Synced again."""
    victim, ip = cluster.members()[-1]
    instance_dir = plane.data_dir / "instances" / victim
    pid = wait_for(lambda: server_pid(plane, victim, "mariadb"), 30, "the member's server pid")
    log = instance_dir / "log" / conf.LOG_FILE
    writer = Writer(endpoint, cluster.password)
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 20, 30, "writes through the endpoint")
        time.sleep(1)
        offset = log.stat().st_size
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def synced() -> bool:
            if not r.kill_restarted and new_server(instance_dir, pid):
                r.kill_restarted = time.monotonic() - killed
            again = server_pid(plane, victim, "mariadb") not in (None, pid)
            return again and member_state(ip, cluster.password) == "Synced"

        wait_for(synced, 300, "the killed member Synced again", 0.1)
        r.kill_synced = time.monotonic() - killed
        r.kill_transfer = transfer(log, offset)
        time.sleep(1)
        seen = r.kill = window(writer, killed, time.monotonic())
    finally:
        writer.stop()
    print(
        f"  kill: {seen.failed} write(s) failed over {seen.error_window:.2f} s, the server"
        f" started again {r.kill_restarted:.2f} s and Synced {r.kill_synced:.1f} s after the"
        f" kill, by {r.kill_transfer}",
        flush=True,
    )
    wait_for(lambda: cluster.ready(strict=False), 120, "the cluster ready again", 0.2)


def rolling_restart(plane: ControlPlane, cluster: CoveCluster, endpoint: str, r: Result) -> None:
    writer = Writer(endpoint, cluster.password)
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) > 20, 30, "writes through the endpoint")
        time.sleep(1)
        start = time.monotonic()
        resp = plane.http.post(f"/clusters/{cluster.id}", json={"restart": {}})
        if resp.status_code != 202:
            raise RuntimeError(f"the restart was refused: {resp.status_code} {resp.text}")
        wait_for(lambda: cluster.view()["task"]["name"] == "NONE", 600, "the restart", 0.2)
        r.restart_took = time.monotonic() - start
        time.sleep(1)
        seen = r.restart = window(writer, start, time.monotonic())
    finally:
        writer.stop()
    print(
        f"  rolling restart: {r.restart_took:.1f} s, {seen.failed} write(s) failed",
        flush=True,
    )


def measure(
    plane: ControlPlane, base: Path, prefix: str, args: argparse.Namespace, r: Result
) -> None:
    cluster = CoveCluster(plane)
    try:
        builds(cluster, base, prefix, args.rounds, r)
        endpoint = cluster.endpoint()
        cluster.enable_root()
        ips = [ip for _iid, ip in cluster.members()]
        load(cluster, endpoint, ips, args, r)
        kill_member(plane, cluster, endpoint, r)
        rolling_restart(plane, cluster, endpoint, r)
    finally:
        try:
            cluster.delete()
        except Exception as exc:  # the plane's clean-up kills what is left
            print(f"  deleting the cluster failed: {exc}", flush=True)


# -- the report and the run ----------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def row(label: str, value: str, target: str = "") -> None:
    print(f"    {label:44} {value:>10}{target}")


def report(r: Result, args: argparse.Namespace) -> None:
    print(
        f"\nMariaDB Galera, {MEMBERS} members (flavor {FLAVOR}, {RAM_MB} MB), "
        f"{args.rounds} build round(s) each way; ratio: cove / by hand"
    )
    if r.error:
        print(f"  stopped: {r.error}")
    if r.build_cove and r.build_hand:
        cove, hand = statistics.median(r.build_cove), statistics.median(r.build_hand)
        print(f"  {'':40} {'cove':>10} {'by hand':>10} {'ratio':>7}  target")
        print(
            f"  {'build to ready, median':40} {cove:9.2f}s {hand:9.2f}s {cove / hand:7.2f}"
            f"  <= {TARGET_BUILD}x: " + verdict(cove / hand <= TARGET_BUILD)
        )
        for what, values in (("cove", r.build_cove), ("by hand", r.build_hand)):
            print(f"    {what}: {' '.join(f'{v:.2f}' for v in values)}")
    if r.qps_direct:
        ratio = r.qps_endpoint / r.qps_direct
        label = f"point selects/s, {args.clients} clients, {args.duration:g} s"
        print(f"  {'':40} {'endpoint':>10} {'direct':>10} {'ratio':>7}")
        print(
            f"  {label:40} {r.qps_endpoint:10,.0f} {r.qps_direct:10,.0f} {ratio:7.2f}"
            f"  >= {TARGET_THROUGHPUT}x: " + verdict(ratio >= TARGET_THROUGHPUT)
        )
    if r.kill is not None:
        print("  kill -9 of a member's server, a writer through the endpoint (a new connection")
        print("  per write):")
        writes(r.kill)
        row("kill to the member's server started again", f"{r.kill_restarted:.2f}s")
        row("kill to the member Synced again", f"{r.kill_synced:.2f}s")
        print(f"    {'how it caught up':44} {r.kill_transfer}")
    if r.restart is not None:
        print("  rolling restart under the same writer:")
        row("duration (POST to task NONE)", f"{r.restart_took:.2f}s")
        writes(r.restart, "  == 0: " + verdict(r.restart.failed == 0))


def writes(seen: Window, target: str = "") -> None:
    row("writes failed", f"{seen.failed}", target)
    for error, count in sorted(seen.errors.items(), key=lambda e: -e[1]):
        print(f"      {count:5d} x {error}")
    if seen.failed:
        row("first failure to a write acknowledged after", f"{seen.error_window:.2f}s")
    row("longest time without an acknowledged write", f"{seen.longest_gap:.2f}s")
    row("writes acknowledged meanwhile", f"{seen.acked}")


def sweep(paths: list[Path]) -> int:
    """Kill every process left working in or naming one of ``paths`` (a server its agent
    restarted while being stopped included), until none is left: how many there were."""
    killed: set[int] = set()
    for _ in range(10):
        left = leftovers([str(p) for p in paths])
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(left)
        time.sleep(0.5)
    return len(killed)


def interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="builds each way")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    parser.add_argument("--clients", type=int, default=6, help="client processes")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--fast-heartbeats",
        action="store_true",
        help="1 s heartbeats as the e2e tests run (default: the production interval)",
    )
    args = parser.parse_args()
    if not find_mariadb():
        parser.error("no MariaDB server installed")
    galera.provider()
    began = time.perf_counter()
    result = Result()
    signal.signal(signal.SIGTERM, interrupted)
    base = Path(tempfile.mkdtemp(prefix="cove-bench-cluster-"))
    base.chmod(0o755)
    # Private alias ranges: one /24 for Cove's instances and endpoint, another by hand.
    cove_net, hand_net = random.sample(range(256), 2)
    plane = ControlPlane(
        fast_heartbeats=args.fast_heartbeats,
        extra_env={"COVE_ADDRESS_POOL": f"127.77.{cove_net}.0/24"},
    )
    try:
        plane.start()
        print(f"Galera cluster benchmark (Cove's pool 127.77.{cove_net}.0/24):", flush=True)
        measure(plane, base, f"127.77.{hand_net}", args, result)
    except (Exception, KeyboardInterrupt) as exc:
        result.error = f"{type(exc).__name__}: {exc or 'interrupted'}"
        print(f"  stopped: {result.error}", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        plane.stop()
        shutil.rmtree(base, ignore_errors=True)
        print(f"left running after clean-up: {sweep([base, plane.base])} process(es) (killed)")
    report(result, args)
    print(f"wall time {time.perf_counter() - began:.0f} s")
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
