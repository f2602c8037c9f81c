"""Floors for the failover benchmark: a primary and a standby made by hand on private
addresses, ports and directories, with the same data as Cove's group, for each datastore.

* Promotion: the engine's own promotion (PostgreSQL ``pg_promote(wait => true)``, MariaDB
  ``STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0``, Redis ``REPLICAOF NO ONE``) until
  the tenant's write is acknowledged. It has no detection: what Cove adds on top is mostly the
  lease's TTL (1.5 s), by design.
* Replica creation: ``pg_basebackup -R -X stream``, ``mariadb-backup`` copy, prepare and start
  with GTID replication, ``replicaof`` and a full sync; until the data is readable and
  replication runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
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

from cove.common.service_user import ServiceUser, service_user
from cove.compute.discovery import find_mariadb, find_postgresql, find_redis, mariadb_install_db
from cove.guestagent.datastores.mariadb.conf import memory_settings
from cove.guestagent.datastores.mariadb.server import beside_server
from failover_clients import (
    ERRORS,
    PASSWORD,
    Client,
    close,
    wait_for,
    write_until_acknowledged,
)
from servers import free_address, free_port

#: The tiny flavor Cove's instances get, so the hand-made servers are sized alike.
RAM_MB = 512


@dataclasses.dataclass
class Node:
    """One hand-made server: its directory, private address and port, and process."""

    dir: Path
    address: str
    port: int
    proc: subprocess.Popen[bytes] | None = None


class HandPair:
    """A primary made by hand holding the data, and standbys made from it, each on a private
    loopback address and a free non-standard port, in directories under ``base``. Every
    server is started in a session of its own and killed with its whole process group."""

    def __init__(self, base: Path, client: Client) -> None:
        self.base, self.client = base, client
        self.user: ServiceUser = service_user("cove")
        self.primary: Node | None = None
        self.standby: Node | None = None
        base.mkdir(mode=0o755)
        os.chown(base, self.user.uid, self.user.gid)

    def node(self, name: str) -> Node:
        path = self.base / name
        path.mkdir(mode=0o700)
        os.chown(path, self.user.uid, self.user.gid)
        port = free_port()
        return Node(path, free_address(port), port)

    def as_user(self) -> dict[str, Any]:
        return {
            "user": self.user.popen_user,
            "group": self.user.popen_group,
            "extra_groups": self.user.popen_extra_groups,
        }

    def run(self, argv: list[str], service_user: bool = True) -> None:
        """Run a tool to completion (as the service user unless told); raises RuntimeError
        with the tail of its output when it fails."""
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=600,
            check=False,
            **(self.as_user() if service_user else {}),
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{Path(argv[0]).name} exited with {done.returncode}: {tail}")

    def spawn(self, node: Node, argv: list[str], service_user: bool = True) -> None:
        with (node.dir / "server.out").open("ab") as out:
            node.proc = subprocess.Popen(
                argv,
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **(self.as_user() if service_user else {}),
            )

    def alive(self, node: Node) -> None:
        if node.proc is not None and node.proc.poll() is not None:
            out = (node.dir / "server.out").read_text(errors="replace")[-800:]
            raise RuntimeError(f"the hand-made server exited with {node.proc.returncode}: {out}")

    def kill(self, node: Node | None) -> None:
        if node is None or node.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(30)

    def loaded(self, size: int) -> None:
        assert self.primary is not None
        conn = self.client.connect(self.primary.address, self.primary.port)
        try:
            self.client.setup(conn)
            self.client.load(conn, size)
        finally:
            close(conn)

    def serving(self, node: Node, replicating: Callable[[], bool]) -> bool:
        """The standby replicates and the tenant reads the data on it."""
        self.alive(node)
        return replicating() and self.client.answers(node.address, node.port, self.client.marked)

    def start_primary(self, size: int) -> None:
        raise NotImplementedError

    def make_standby(self) -> float:
        """A standby of the primary, from the copy until it serves: the seconds."""
        raise NotImplementedError

    def promote(self) -> float:
        """The standby promoted by the engine's own command until the tenant's write is
        acknowledged: the seconds."""
        raise NotImplementedError

    def drop_standby(self) -> None:
        self.kill(self.standby)
        if self.standby is not None:
            shutil.rmtree(self.standby.dir, ignore_errors=True)
        self.standby = None

    def close(self) -> None:
        self.drop_standby()
        self.kill(self.primary)
        shutil.rmtree(self.base, ignore_errors=True)


class PgPair(HandPair):
    def __init__(self, base: Path, client: Client) -> None:
        super().__init__(base, client)
        self.bin = Path(find_postgresql()[-1].bin_dir)

    def _start(self, node: Node) -> None:
        self.spawn(
            node,
            [
                str(self.bin / "postgres"),
                "-D",
                str(node.dir / "data"),
                f"--listen_addresses={node.address}",
                f"--port={node.port}",
                f"--unix_socket_directories={node.dir}",
            ],
        )

    def _admin(self, node: Node) -> psycopg.Connection[Any] | None:
        self.alive(node)
        try:
            return psycopg.connect(
                host=str(node.dir), port=node.port, user="admin", dbname="postgres", autocommit=True
            )
        except psycopg.OperationalError:
            return None

    def start_primary(self, size: int) -> None:
        node = self.primary = self.node("primary")
        data = node.dir / "data"
        self.run(
            [
                str(self.bin / "initdb"),
                f"--pgdata={data}",
                "--username=admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ]
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 127.0.0.0/8 scram-sha-256\n")
        self._start(node)
        with wait_for(lambda: self._admin(node), 60, "the hand-made primary", 0.02) as admin:
            admin.execute(
                psycopg.sql.SQL("CREATE ROLE app LOGIN PASSWORD {}").format(
                    psycopg.sql.Literal(PASSWORD)
                )
            )
            admin.execute("CREATE DATABASE app OWNER app")
        self.loaded(size)

    def make_standby(self) -> float:
        assert self.primary is not None
        node = self.standby = self.node("standby")
        start = time.perf_counter()
        self.run(
            [
                str(self.bin / "pg_basebackup"),
                f"--pgdata={node.dir / 'data'}",
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-password",
                f"--host={self.primary.dir}",
                f"--port={self.primary.port}",
                "--username=admin",
            ]
        )
        self._start(node)

        def streaming() -> bool:
            admin = self._admin(node)
            if admin is None:
                return False
            with admin:
                row = admin.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
            return row == ("streaming",)

        wait_for(lambda: self.serving(node, streaming), 120, "the standby", 0.01)
        return time.perf_counter() - start

    def promote(self) -> float:
        assert self.standby is not None
        node = self.standby
        with wait_for(lambda: self._admin(node), 60, "the standby's admin login") as admin:
            start = time.monotonic()
            admin.execute("SELECT pg_promote(wait => true)")
            acked = write_until_acknowledged(self.client, node.address, node.port, 60)
        return acked - start


class MariaPair(HandPair):
    def __init__(self, base: Path, client: Client) -> None:
        super().__init__(base, client)
        self.bin = Path(find_mariadb()[-1].bin_dir)

    def _configure(self, node: Node, server_id: int) -> Path:
        """The node's option file: the primary's (server_id 1) or a read-only standby's."""
        (node.dir / "tmp").mkdir()
        options = {
            "datadir": node.dir / "data",
            "tmpdir": node.dir / "tmp",
            "socket": node.dir / "m.sock",
            "pid_file": node.dir / "m.pid",
            "log_error": node.dir / "error.log",
            "bind_address": node.address,
            "port": node.port,
            "skip_name_resolve": 1,
            "server_id": server_id,
            "log_bin": node.dir / "binlog",
            "relay_log": node.dir / "relay",
            "binlog_format": "ROW",
            "log_slave_updates": 1,
            "gtid_strict_mode": 1,
            **memory_settings(RAM_MB),
            **({"read_only": 1} if server_id != 1 else {}),
        }
        cnf = node.dir / "my.cnf"
        cnf.write_text("[mysqld]\n" + "".join(f"{k}={v}\n" for k, v in options.items()))
        for path in (node.dir / "tmp", cnf):
            os.chown(path, self.user.uid, self.user.gid)
        return cnf

    def _root(self, node: Node) -> Any:
        # root@localhost by the unix socket: this process runs as root.
        self.alive(node)
        try:
            return pymysql.connect(
                unix_socket=str(node.dir / "m.sock"), user="root", autocommit=True
            )
        except pymysql.err.OperationalError:
            return None

    def _start(self, node: Node, cnf: Path) -> None:
        # Started as root, so it switches to the service user itself (--user).
        mariadbd = [str(self.bin / "mariadbd"), f"--defaults-file={cnf}"]
        self.spawn(node, [*mariadbd, f"--user={self.user.name}"], service_user=False)

    def start_primary(self, size: int) -> None:
        node = self.primary = self.node("primary")
        cnf = self._configure(node, 1)
        install = mariadb_install_db(self.bin) or Path("mariadb-install-db")
        self.run(
            [
                str(install),
                f"--defaults-file={cnf}",
                f"--user={self.user.name}",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            service_user=False,
        )
        self._start(node, cnf)
        root = wait_for(lambda: self._root(node), 60, "the hand-made primary", 0.02)
        with root, root.cursor() as cur:
            cur.execute("CREATE DATABASE app")
            for user in ("app", "repl"):
                cur.execute(f"CREATE USER {user}@'%%' IDENTIFIED BY %s", (PASSWORD,))
            cur.execute("GRANT ALL ON app.* TO app@'%'")
            cur.execute("GRANT REPLICATION SLAVE ON *.* TO repl@'%'")
        self.loaded(size)

    def make_standby(self) -> float:
        assert self.primary is not None
        node = self.standby = self.node("standby")
        cnf = self._configure(node, 2)
        backup = str(beside_server(self.bin, "mariadb-backup"))
        data = node.dir / "data"
        start = time.perf_counter()
        self.run(
            [
                backup,
                f"--defaults-file={self.primary.dir / 'my.cnf'}",
                "--backup",
                f"--target-dir={data}",
                "--user=root",
                f"--socket={self.primary.dir / 'm.sock'}",
            ],
            service_user=False,
        )
        pool = memory_settings(RAM_MB)["innodb_buffer_pool_size"]
        self.run([backup, "--prepare", f"--target-dir={data}", f"--use-memory={pool}"], False)
        self.run(["chown", "-R", f"{self.user.uid}:{self.user.gid}", str(data)], False)
        self._start(node, cnf)
        info = next(p for p in data.glob("*_binlog_info") if p.stat().st_size)
        gtid = info.read_text().split()[2]
        root = wait_for(lambda: self._root(node), 60, "the standby's root login", 0.01)
        with root, root.cursor() as cur:
            cur.execute("SET GLOBAL gtid_slave_pos = %s", (gtid,))
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = 'repl', "
                "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos",
                (self.primary.address, self.primary.port, PASSWORD),
            )
            cur.execute("START SLAVE")

            def replicating() -> bool:
                with root.cursor(pymysql.cursors.DictCursor) as status:
                    status.execute("SHOW SLAVE STATUS")
                    row = status.fetchone() or {}
                return row.get("Slave_IO_Running") == row.get("Slave_SQL_Running") == "Yes"

            wait_for(lambda: self.serving(node, replicating), 120, "the standby", 0.01)
        return time.perf_counter() - start

    def promote(self) -> float:
        assert self.standby is not None
        node = self.standby
        root = wait_for(lambda: self._root(node), 60, "the standby's root login")
        with root, root.cursor() as cur:
            start = time.monotonic()
            for sql in ("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"):
                cur.execute(sql)
            acked = write_until_acknowledged(self.client, node.address, node.port, 60)
        return acked - start


class RedisPair(HandPair):
    def __init__(self, base: Path, client: Client) -> None:
        super().__init__(base, client)
        self.bin = Path(find_redis()[-1].bin_dir)

    def _configure(self, node: Node, replica_of: Node | None) -> Path:
        digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
        acl = node.dir / "users.acl"
        acl.write_text(
            "user default off\n"
            f"user app on #{digest} ~* &* +@all -@admin\n"
            f"user repl on #{digest} +psync +replconf +ping +sync\n"
            f"user admin on #{digest} ~* &* +@all\n"
        )
        lines = [
            f"bind {node.address}",
            f"port {node.port}",
            "protected-mode no",
            f"dir {node.dir}",
            f"pidfile {node.dir / 'redis.pid'}",
            f"aclfile {acl}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "repl-diskless-sync-delay 0",
            f"maxmemory {RAM_MB * 3 // 4}mb",
            "maxmemory-policy noeviction",
        ]
        if replica_of is not None:
            lines += [
                f"replicaof {replica_of.address} {replica_of.port}",
                "masteruser repl",
                f"masterauth {PASSWORD}",
                "replica-read-only yes",
            ]
        conf = node.dir / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        for path in (acl, conf):
            path.chmod(0o600)
            os.chown(path, self.user.uid, self.user.gid)
        return conf

    def _admin(self, node: Node) -> redis.Redis:
        return redis.Redis(
            host=node.address,
            port=node.port,
            username="admin",
            password=PASSWORD,
            socket_timeout=10,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def start_primary(self, size: int) -> None:
        node = self.primary = self.node("primary")
        self.spawn(node, [str(self.bin / "redis-server"), str(self._configure(node, None))])
        wait_for(lambda: self.client.answers(node.address, node.port, bool), 60, "the primary")
        self.loaded(size)

    def make_standby(self) -> float:
        assert self.primary is not None
        node = self.standby = self.node("standby")
        conf = self._configure(node, self.primary)
        start = time.perf_counter()
        self.spawn(node, [str(self.bin / "redis-server"), str(conf)])

        def linked() -> bool:
            try:
                with self._admin(node) as admin:
                    return bool(admin.info("replication").get("master_link_status") == "up")
            except ERRORS:
                return False

        wait_for(lambda: self.serving(node, linked), 120, "the standby", 0.01)
        return time.perf_counter() - start

    def promote(self) -> float:
        assert self.standby is not None
        node = self.standby
        with self._admin(node) as admin:
            admin.ping()
            start = time.monotonic()
            admin.replicaof("NO", "ONE")
            acked = write_until_acknowledged(self.client, node.address, node.port, 60)
        return acked - start


PAIRS: dict[str, Callable[[Path, Client], HandPair]] = {
    "postgresql": PgPair,
    "mariadb": MariaPair,
    "redis": RedisPair,
}
FINDERS: dict[str, Callable[[], list[Any]]] = {
    "postgresql": find_postgresql,
    "mariadb": find_mariadb,
    "redis": find_redis,
}
PROMOTION = {
    "postgresql": "pg_promote(wait => true)",
    "mariadb": "STOP SLAVE; RESET SLAVE ALL; read_only=0",
    "redis": "REPLICAOF NO ONE",
}
