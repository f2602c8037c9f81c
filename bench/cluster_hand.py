"""A 3-member MariaDB Galera cluster made by hand, the floor Cove's clusters are measured
against: three servers on private loopback addresses and free ports, installed at once with
``mariadb-install-db`` (as Cove places its members at once), then ``mariadbd`` with Galera
settings equivalent to Cove's (every address Galera opens named on the node's own address,
``mariabackup`` state transfers signed in as an SST account), the first with
``--wsrep-new-cluster``, each other joining once the one before it is Synced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cove.common.service_user import ServiceUser
from cove.compute.discovery import find_mariadb, mariadb_install_db
from cove.guestagent.datastores.mariadb import conf, galera
from failover_clients import wait_for
from servers import STANDARD_PORTS

#: Galera's handshake carries at most 31 characters of the cluster's name.
HAND_CLUSTER = "bench-by-hand"
#: How often the hand-made servers are asked over their sockets: as often as the benchmark
#: asks Cove's API, as a script or the CLI would.
POLL = 0.05
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
    """``members`` MariaDB servers of ``ram_mb`` MB each made into a Galera cluster by hand, in
    directories under ``base``, on addresses ``prefix.N`` and free ports. Every server runs in
    a session of its own and is killed with its whole process group (state transfer helpers
    included)."""

    def __init__(
        self, base: Path, prefix: str, user: ServiceUser, members: int, ram_mb: int
    ) -> None:
        self.base, self.user, self.ram_mb = base, user, ram_mb
        self.bin = Path(find_mariadb()[-1].bin_dir)
        self.install = mariadb_install_db(self.bin) or Path("mariadb-install-db")
        self.sst_password = secrets.token_urlsafe(16)
        base.mkdir(mode=0o755)
        self.nodes: list[HandNode] = []
        for number in range(members):
            address = unused_address(prefix, number * 10 + 1)
            path = base / f"n{number + 1}"
            path.mkdir(mode=0o700)
            (path / "data").mkdir()
            (path / "tmp").mkdir()
            port, group_port, ist_port, sst_port = free_ports(address, 4)
            self.nodes.append(HandNode(path, address, port, group_port, ist_port, sst_port))
        for number, node in enumerate(self.nodes):
            self._configure(node, number + 1)
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
            **conf.memory_settings(self.ram_mb),
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
        """From the system tables to the last member Synced in the full cluster: seconds."""
        start = time.perf_counter()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._install, self.nodes))
        for number, node in enumerate(self.nodes):
            self._start(node, new_cluster=number == 0)
            synced = partial(self._synced, node, number + 1)
            wait_for(synced, 300, f"{node.address} Synced in a cluster of {number + 1}", POLL)
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
