"""The MariaDB half of ``isolation.py``'s instance speed: a sysbench-style OLTP read-write load
written in Python, and the same MariaDB server started by hand.

The load is sysbench's ``oltp_read_write`` reduced to its statements' mix: one table of
``rows`` rows (``id`` primary key, ``k`` indexed, ``c`` and ``pad`` filler text), and each
transaction makes 10 point selects, 1 range of 100 rows, 1 update by the indexed key, 1
update of a non-indexed column, then deletes a row and inserts it again. ``clients``
processes (PyMySQL is pure Python: one process each, so the client's work spreads over the
host's cores as sysbench's threads would), one connection each; a transaction the server
rolled back for a deadlock or a lock wait is not counted and the client goes on, as sysbench
ignores those errors by default.

The server by hand is ``mariadbd`` as Debian ships it, installed by ``mariadb-install-db``
and started with its compiled-in defaults (``--no-defaults``) and only what it needs to run
beside Cove: its own directory, a private loopback address and a port that is no standard
one, and the durability the Cove instance has (read from it, so the two commit alike).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import wait_for

from cove.common import cgroups
from cove.common.service_user import service_user
from cove.compute.discovery import find_mariadb, mariadb_install_db
from servers import STANDARD_PORTS

#: Errors sysbench ignores by default: the server rolled the transaction back (a deadlock, a
#: lock wait timed out) or a row changed under it; the client goes on with the next one.
RETRIED = frozenset({1213, 1205, 1020})
#: The server variables that decide what a commit waits for.
DURABILITY = ("innodb_flush_log_at_trx_commit", "sync_binlog")
CREATE = (
    "CREATE TABLE sbtest1 (id INT NOT NULL PRIMARY KEY, k INT NOT NULL DEFAULT 0, "
    "c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) "
    "ENGINE=InnoDB"
)


def connect(dsn: dict[str, Any], autocommit: bool = True) -> pymysql.Connection[Any]:
    return pymysql.connect(**dsn, connect_timeout=10, autocommit=autocommit)


def _filler(rng: random.Random, groups: int) -> str:
    """sysbench's filler text: groups of 11 digits joined by dashes."""
    return "-".join(f"{rng.randrange(10**11):011d}" for _ in range(groups))


def prepare(dsn: dict[str, Any], rows: int) -> None:
    """The table, filled with ``rows`` rows in batches (a multi-row insert each)."""
    rng = random.Random(rows)
    insert = "INSERT INTO sbtest1 (id, k, c, pad) VALUES (%s, %s, %s, %s)"
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS sbtest1")
        cur.execute(CREATE)
        for first in range(1, rows + 1, 1000):
            batch = [
                (i, rng.randint(1, rows), _filler(rng, 10), _filler(rng, 5))
                for i in range(first, min(first + 1000, rows + 1))
            ]
            cur.executemany(insert, batch)
        cur.execute("ANALYZE TABLE sbtest1")


def transaction(cur: Any, rng: random.Random, rows: int) -> None:
    """One oltp_read_write transaction, short of its commit."""
    for _ in range(10):
        cur.execute("SELECT c FROM sbtest1 WHERE id = %s", (rng.randint(1, rows),))
        cur.fetchall()
    first = rng.randint(1, rows - 99)
    cur.execute("SELECT c FROM sbtest1 WHERE id BETWEEN %s AND %s", (first, first + 99))
    cur.fetchall()
    cur.execute("UPDATE sbtest1 SET k = k + 1 WHERE id = %s", (rng.randint(1, rows),))
    cur.execute("UPDATE sbtest1 SET c = %s WHERE id = %s", (_filler(rng, 10), rng.randint(1, rows)))
    row = rng.randint(1, rows)
    cur.execute("DELETE FROM sbtest1 WHERE id = %s", (row,))
    cur.execute(
        "INSERT INTO sbtest1 (id, k, c, pad) VALUES (%s, %s, %s, %s)",
        (row, rng.randint(1, rows), _filler(rng, 10), _filler(rng, 5)),
    )


def client(dsn: dict[str, Any], rows: int, duration: float, ready: Any, committed: Any) -> None:
    """Transactions for ``duration`` seconds from the moment every client is connected; adds
    the ones it committed in time to ``committed``."""
    rng = random.Random()
    done = 0
    with connect(dsn, autocommit=False) as conn, conn.cursor() as cur:
        ready.wait(60)
        until = time.monotonic() + duration
        while time.monotonic() < until:
            try:
                transaction(cur, rng, rows)
                conn.commit()
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in RETRIED:
                    raise
                conn.rollback()
                continue
            if time.monotonic() <= until:
                done += 1
    with committed.get_lock():
        committed.value += done


def run(dsn: dict[str, Any], rows: int, clients: int, duration: float) -> float:
    """Transactions per second of ``clients`` clients over ``duration`` seconds. Raises
    RuntimeError when a client failed."""
    committed = multiprocessing.Value("i", 0)
    ready = multiprocessing.Barrier(clients)
    procs = [
        multiprocessing.Process(target=client, args=(dsn, rows, duration, ready, committed))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(duration + 120)
        if proc.is_alive():
            proc.kill()
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of the OLTP clients failed (exit codes {failed})")
    return float(committed.value) / duration


def durability(dsn: dict[str, Any]) -> dict[str, str]:
    """The server's settings of DURABILITY, by name."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT " + ", ".join(f"@@global.{name}" for name in DURABILITY))
        values = cur.fetchone()
    assert values is not None
    return {name: str(value) for name, value in zip(DURABILITY, values, strict=True)}


def database_charset(dsn: dict[str, Any]) -> tuple[str, str]:
    """The character set and collation of the database ``dsn`` names: the layout of every
    table made in it without its own (a ``CHAR(120)`` row in utf8mb4 is larger than in
    latin1)."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (dsn["database"],),
        )
        row = cur.fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def free_port(address: str) -> int:
    """A port free on ``address`` right now that is no standard one."""
    while True:
        with socket.socket() as sock:
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
        if port not in STANDARD_PORTS:
            return port


class ByHandMariaDB:
    """MariaDB by hand: mariadb-install-db, stock settings, in the control group ``group``
    below ``parent`` with ``limits`` (MB of memory, vCPUs). Raises RuntimeError when no
    MariaDB server is installed here."""

    def __init__(
        self, base: Path, address: str, parent: str, group: str, limits: tuple[int, int]
    ) -> None:
        self.dir = base / "mariadb"
        self.address = address
        self.group, self.limits = group, limits
        found = find_mariadb()
        if not found:
            raise RuntimeError("no MariaDB server here (Debian's mariadb-server package)")
        self.bin = Path(found[-1].bin_dir)
        self.install = mariadb_install_db(self.bin) or Path("mariadb-install-db")
        self.user = service_user("cove")
        self.proc: subprocess.Popen[bytes] | None = None
        self.groups, why = cgroups.detect(parent)
        if self.groups is None:
            print(f"  (the by-hand MariaDB runs without limits: {why})", flush=True)

    def _as_user(self) -> dict[str, Any]:
        return {
            "user": self.user.popen_user,
            "group": self.user.popen_group,
            "extra_groups": self.user.popen_extra_groups,
        }

    def start(
        self, settings: dict[str, str], charset: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """Start it with ``settings`` (server variables) besides the defaults. Returns a
        connection's details for a database ``bench`` (in ``charset``, a character set and
        collation, when given) and a password account of its own, over TCP as a Cove
        instance is reached. Raises RuntimeError when the server does not come up."""
        self.dir.mkdir()
        os.chown(self.dir, self.user.uid, self.user.gid)
        data, sock = self.dir / "data", self.dir / "m.sock"
        subprocess.run(
            [str(self.install), "--no-defaults", f"--datadir={data}", "--skip-test-db"],
            check=True,
            capture_output=True,
            **self._as_user(),
        )
        port = free_port(self.address)
        argv = [str(self.bin / "mariadbd"), "--no-defaults", f"--datadir={data}"]
        argv += [f"--socket={sock}", f"--pid-file={self.dir / 'm.pid'}"]
        argv += [f"--log-error={self.dir / 'error.log'}", f"--port={port}"]
        argv += [f"--bind-address={self.address}"]
        argv += [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._as_user()
        )
        if self.groups is not None:
            self.groups.limit(self.group, *self.limits)
            self.groups.join(self.group, [self.proc.pid])
        root = {"unix_socket": str(sock), "user": "root"}
        wait_for(lambda: self._answers(root), 60, 0.05, "the by-hand MariaDB")
        password = secrets.token_urlsafe(16)
        with connect(root) as conn, conn.cursor() as cur:
            if charset is None:
                cur.execute("CREATE DATABASE bench")
            else:  # names read from a server, not typed by anyone
                cur.execute(
                    f"CREATE DATABASE bench CHARACTER SET {charset[0]} COLLATE {charset[1]}"
                )
            cur.execute("CREATE USER bench@'%%' IDENTIFIED BY %s", (password,))
            cur.execute("GRANT ALL ON bench.* TO bench@'%'")
        return {
            "host": self.address,
            "port": port,
            "user": "bench",
            "password": password,
            "database": "bench",
        }

    def _answers(self, root: dict[str, Any]) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.dir / "error.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"the by-hand MariaDB exited with {self.proc.returncode}: {log}")
        try:
            with connect(root):
                return True
        except pymysql.MySQLError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        if self.groups is not None:
            with contextlib.suppress(OSError):
                self.groups.remove(self.group)
