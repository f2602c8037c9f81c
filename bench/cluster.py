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
   write, and the time until the killed member is Synced again (its guest agent restarts
   it; it rejoins by an incremental state transfer).
4. A rolling restart (``POST /clusters/{id}`` with ``{"restart": {}}``) under the same
   writer: its duration (the POST to the task reading NONE) and the writes that failed.

Targets: Cove's build <= 1.3x by hand; endpoint throughput >= 0.6x direct; no write failed
during the rolling restart.

Usage: python bench/cluster.py [--rounds 2] [--duration 10] [--clients 6] [--json]
       [--fast-heartbeats]
"""

from __future__ import annotations

import argparse
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
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import ControlPlane

from cove.common.procfs import cmdline
from cove.common.service_user import ServiceUser, service_user
from cove.compute.discovery import find_mariadb, mariadb_install_db
from cove.guestagent.datastores.mariadb import conf, galera
from failover import leftovers
from failover_clients import wait_for
from failover_cove import server_pid
from servers import STANDARD_PORTS

TARGET_BUILD, TARGET_THROUGHPUT = 1.3, 0.6
MEMBERS = 3
#: Cove's flavor for the members, and its memory: the hand-made servers are sized alike.
FLAVOR, RAM_MB = "2", 2048
#: Galera's handshake carries at most 31 characters of the cluster's name.
HAND_CLUSTER = "bench-by-hand"
#: How often the benchmark asks the API, as a script or the CLI would; the hand-made
#: servers are asked over their sockets as often.
POLL = 0.05
#: Rows of the point-select table.
ROWS = 10_000
POINT_SELECT = "SELECT v FROM bench.t WHERE id = %s"
#: Pause after a failed write before the next attempt.
RETRY = 0.01
#: Ports no hand-made server takes: the standard ones and Galera's.
AVOID = STANDARD_PORTS | {galera.GROUP_PORT, galera.IST_PORT, galera.SST_PORT}


# -- addresses and ports ---------------------------------------------------------------------


def free_ports(address: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``address`` right now, none a standard one."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            sock = socket.socket()
            socks.append(sock)
            sock.bind((address, 0))
            if sock.getsockname()[1] in AVOID:
                socks.pop().close()
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def unused_address(prefix: str, first: int) -> str:
    """The first address ``prefix.N`` (N from ``first``) that no TCP socket uses."""
    # /proc/net/tcp spells a local address as the hexadecimal of its bytes, reversed.
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    used = {line.split()[1].split(":")[0] for line in table}
    for host in range(first, 250):
        address = f"{prefix}.{host}"
        if socket.inet_aton(address)[::-1].hex().upper() not in used:
            return address
    raise RuntimeError(f"no free loopback address in {prefix}.0/24")


# -- the cluster by hand -----------------------------------------------------------------------


@dataclasses.dataclass
class HandNode:
    """One hand-made member: its directory, address, client and Galera ports, process."""

    dir: Path
    address: str
    port: int
    group_port: int
    ist_port: int
    sst_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cnf(self) -> Path:
        return self.dir / "my.cnf"


class HandCluster:
    """Three MariaDB servers made into a Galera cluster by hand, in directories under
    ``base``, on addresses ``prefix.N`` and free ports. Every server runs in a session of its
    own and is killed with its whole process group (state transfer helpers included)."""

    def __init__(self, base: Path, prefix: str, user: ServiceUser) -> None:
        self.base, self.user = base, user
        self.bin = Path(find_mariadb()[-1].bin_dir)
        self.install = mariadb_install_db(self.bin) or Path("mariadb-install-db")
        self.sst_password = secrets.token_urlsafe(16)
        base.mkdir(mode=0o755)
        self.nodes: list[HandNode] = []
        for number in range(MEMBERS):
            address = unused_address(prefix, number * 10 + 1)
            path = base / f"n{number + 1}"
            path.mkdir(mode=0o700)
            (path / "data").mkdir()
            (path / "tmp").mkdir()
            port, group_port, ist_port, sst_port = free_ports(address, 4)
            self.nodes.append(HandNode(path, address, port, group_port, ist_port, sst_port))
        for node in self.nodes:
            self._configure(node, self.nodes.index(node) + 1)
            self.run(["chown", "-R", f"{user.uid}:{user.gid}", str(node.dir)])

    def _configure(self, node: HandNode, server_id: int) -> None:
        """my.cnf as an operator would write it, with Cove's Galera settings."""
        address = node.address
        peers = ",".join(f"{n.address}:{n.group_port}" for n in self.nodes)
        provider_options = ";".join(
            [
                f"gmcast.listen_addr=tcp://{address}:{node.group_port}",
                f"ist.recv_addr={address}:{node.ist_port}",
                f"gcache.size={galera.gcache_mb(1)}M",
            ]
        )
        options: dict[str, object] = {
            "datadir": node.dir / "data",
            "tmpdir": node.dir / "tmp",
            "socket": node.dir / "m.sock",
            "pid_file": node.dir / "m.pid",
            "log_error": node.dir / "error.log",
            "bind_address": address,
            "port": node.port,
            "skip_name_resolve": "ON",
            **conf.memory_settings(RAM_MB),
            "character_set_server": conf.DEFAULT_CHARACTER_SET,
            "collation_server": conf.DEFAULT_COLLATION,
            "server_id": server_id,
            "log_bin": node.dir / "data" / conf.BINLOG,
            "log_slave_updates": "ON",
            "binlog_format": "ROW",
            "default_storage_engine": "InnoDB",
            "innodb_autoinc_lock_mode": 2,
            "gtid_strict_mode": "OFF",
            "wsrep_on": "ON",
            "wsrep_provider": galera.provider(),
            "wsrep_cluster_name": HAND_CLUSTER,
            "wsrep_cluster_address": f"gcomm://{peers}",
            "wsrep_node_name": f"n{server_id}",
            "wsrep_node_address": address,
            "wsrep_node_incoming_address": f"{address}:{node.port}",
            "wsrep_provider_options": f'"{provider_options}"',
            "wsrep_sst_method": "mariabackup",
            "wsrep_sst_receive_address": f"{address}:{node.sst_port}",
            "wsrep_sst_auth": f"sst:{self.sst_password}",
        }
        text = "[mysqld]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
        conf.write_private(node.cnf, text + f'[sst]\nsockopt = ",bind={address}"\n')

    def run(self, argv: list[str]) -> None:
        """Run a tool to completion; raises RuntimeError with the tail of its output."""
        done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{Path(argv[0]).name} exited with {done.returncode}: {tail}")

    def _install(self, node: HandNode) -> None:
        # Run as root: it switches to the service user itself (--user), as mariadbd does.
        user = f"--user={self.user.name}"
        defaults = f"--defaults-file={node.cnf}"
        self.run([str(self.install), defaults, user, "--skip-test-db", "--skip-name-resolve"])

    def _start(self, node: HandNode, new_cluster: bool) -> None:
        argv = [str(self.bin / "mariadbd"), f"--defaults-file={node.cnf}"]
        argv += ["--wsrep-new-cluster"] if new_cluster else []
        with (node.dir / "server.out").open("ab") as out:
            node.proc = subprocess.Popen(
                [*argv, f"--user={self.user.name}"],
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _root(self, node: HandNode) -> Any:
        """root@localhost over the unix socket (this process runs as root), or None."""
        if node.proc is not None and node.proc.poll() is not None:
            log = (node.dir / "error.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the hand-made server exited with {node.proc.returncode}: {log}")
        try:
            return pymysql.connect(
                unix_socket=str(node.dir / "m.sock"), user="root", autocommit=True
            )
        except pymysql.MySQLError:
            return None

    def _synced(self, node: HandNode, size: int) -> bool:
        conn = self._root(node)
        if conn is None:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SHOW STATUS WHERE Variable_name IN "
                    "('wsrep_local_state_comment', 'wsrep_ready', 'wsrep_cluster_size')"
                )
                status = {str(k): str(v) for k, v in cur.fetchall()}
        except pymysql.MySQLError:
            return False
        finally:
            conn.close()
        return status == {
            "wsrep_local_state_comment": "Synced",
            "wsrep_ready": "ON",
            "wsrep_cluster_size": str(size),
        }

    def build(self) -> float:
        """From the system tables to the last member Synced in a cluster of three: seconds."""
        start = time.perf_counter()
        with ThreadPoolExecutor(MEMBERS) as pool:
            list(pool.map(self._install, self.nodes))
        for number, node in enumerate(self.nodes):
            self._start(node, new_cluster=number == 0)
            synced = partial(self._synced, node, number + 1)
            wait_for(synced, 300, f"{node.address} Synced in a cluster of {number + 1}", 0.02)
            if number == 0:
                # The account the donors' mariabackup signs in as (it reaches the joiners
                # with the copy of the data).
                with self._root(node) as root, root.cursor() as cur:
                    cur.execute("CREATE USER sst@localhost IDENTIFIED BY %s", (self.sst_password,))
                    cur.execute(
                        "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO sst@localhost"
                    )
        return time.perf_counter() - start

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(30)
        shutil.rmtree(self.base, ignore_errors=True)


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
        self.failed: list[float] = []
        self.last_error = ""
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                query(self.address, self.password, "INSERT INTO bench.w (at) VALUES (%s)", [0])
                self.acked.append(time.monotonic())
            except pymysql.MySQLError as exc:
                self.failed.append(time.monotonic())
                self.last_error = str(exc)
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


def window(writer: Writer, since: float, until: float) -> Window:
    acks = [t for t in writer.acked if since <= t <= until]
    fails = [t for t in writer.failed if since <= t <= until]
    gap = max(b - a for a, b in itertools.pairwise([since, *acks, until]))
    span = 0.0
    if fails:
        after = [t for t in writer.acked if t > fails[-1]]
        span = (after[0] if after else until) - fails[0]
    return Window(len(acks), len(fails), span, gap)


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
        hand = HandCluster(base / f"hand{number + 1}", prefix, user)
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
    if "SST received" in text:
        return "a whole copy (SST)"
    return "incremental (IST)" if "IST received" in text else "no transfer logged"


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
        f" kill, by {r.kill_transfer}"
        + (f" (last error: {writer.last_error})" if writer.last_error else ""),
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
        f"  rolling restart: {r.restart_took:.1f} s, {seen.failed} write(s) failed"
        + (f" (last error: {writer.last_error})" if writer.last_error else ""),
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
        row("writes failed", f"{r.kill.failed}")
        row("first failure to a write acknowledged after", f"{r.kill.error_window:.2f}s")
        row("longest time without an acknowledged write", f"{r.kill.longest_gap:.2f}s")
        row("kill to the member's server started again", f"{r.kill_restarted:.2f}s")
        row("kill to the member Synced again", f"{r.kill_synced:.2f}s")
        print(f"    {'how it caught up':44} {r.kill_transfer}")
        row("writes acknowledged meanwhile", f"{r.kill.acked}")
    if r.restart is not None:
        print("  rolling restart under the same writer:")
        row("duration (POST to task NONE)", f"{r.restart_took:.2f}s")
        target = "  == 0: " + verdict(r.restart.failed == 0)
        row("writes failed", f"{r.restart.failed}", target)
        row("longest time without an acknowledged write", f"{r.restart.longest_gap:.2f}s")
        row("writes acknowledged meanwhile", f"{r.restart.acked}")


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
