"""Starting, watching and stopping the PostgreSQL server process."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from cove.common import procfs
from cove.common.errors import GuestError
from cove.guestagent import process
from cove.guestagent.config import GuestConfig
from cove.guestagent.datastores.postgresql.conf import ADMIN_USER

LOG = logging.getLogger(__name__)

START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class PostgresServer:
    """One PostgreSQL server: its data directory, its process and its admin connection."""

    def __init__(self, config: GuestConfig, on_exit: Callable[[int], None]) -> None:
        self.config = config
        self.bin_dir = Path(config.bin_dir)
        self.log_file = config.log_dir / "postgresql.log"
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._stopping = False
        self._lock = threading.RLock()

    # -- data directory ----------------------------------------------------------------------

    def initialise(self) -> None:
        """Create a fresh data directory, from the version's template when there is one."""
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        template = self._template()
        if template is not None:
            process.run(["cp", "-a", "--reflink=auto", str(template), str(data)], timeout=300)
        else:
            self._initdb(data)
        data.chmod(0o700)

    def _initdb(self, target: Path) -> None:
        process.run(
            [
                self.bin_dir / "initdb",
                "--pgdata",
                target,
                "--username",
                ADMIN_USER,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
                "--no-sync",
            ],
            timeout=300,
        )

    def _template(self) -> Path | None:
        """A ready template data directory for this version, made on first use.

        Copies of one template share its system identifier: fine for standalone instances.
        """
        if not self.config.template_dir:
            return None
        base = Path(self.config.template_dir)
        ready = base / f"postgresql-{self.config.datastore_version}"
        if (ready / "PG_VERSION").is_file():
            return ready
        try:
            base.mkdir(parents=True, exist_ok=True)
            with (base / f"postgresql-{self.config.datastore_version}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if (ready / "PG_VERSION").is_file():
                    return ready
                building = base / f".postgresql-{self.config.datastore_version}.{os.getpid()}"
                if building.exists():
                    shutil.rmtree(building)
                self._initdb(building)
                building.rename(ready)
                LOG.info(
                    "made the template data directory for PostgreSQL %s",
                    self.config.datastore_version,
                )
                return ready
        except (OSError, GuestError) as exc:
            LOG.warning("no template data directory (%s); running initdb directly", exc)
            return None

    # -- process -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        with self._lock:
            if self._proc is not None:
                return self._proc.pid if self._proc.poll() is None else None
            if self._adopted_pid is not None and procfs.alive(self._adopted_pid):
                return self._adopted_pid
            return None

    def running(self) -> bool:
        return self.pid is not None

    def adopt(self) -> bool:
        """Watch a postmaster left running by an earlier agent."""
        pidfile = self.config.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        if not self._is_ours(pid):
            if procfs.alive(pid):
                LOG.warning(
                    "postmaster.pid names pid %d, which is not this instance's server; "
                    "not adopting it",
                    pid,
                )
            return False
        with self._lock:
            self._adopted_pid = pid
            self._proc = None
        threading.Thread(target=self._watch_adopted, args=(pid,), daemon=True).start()
        LOG.info("adopted the running PostgreSQL server (pid %d)", pid)
        return True

    def start(self) -> None:
        with self._lock:
            if self.running():
                return
            self._stopping = False
            log = self.log_file.open("ab")
            try:
                self._proc = subprocess.Popen(
                    [
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.config.data_dir),
                        "-c",
                        f"config_file={self.config.conf_dir / 'postgresql.conf'}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()
            self._adopted_pid = None
            proc = self._proc
        threading.Thread(target=self._watch_child, args=(proc,), daemon=True).start()
        self.wait_ready(proc)

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise GuestError(
                    f"PostgreSQL exited with status {proc.returncode} while starting: "
                    + process.tail(self.log_file, 5)
                )
            if self.ping():
                return
            time.sleep(0.02)
        raise GuestError(f"PostgreSQL did not accept connections within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected, committed work is kept)."""
        with self._lock:
            pid = self.pid
            self._stopping = True
            proc = self._proc
        if pid is None:
            return
        if proc is None and not self._is_ours(pid):
            LOG.warning("pid %d is no longer this instance's server; not signalling it", pid)
            with self._lock:
                self._adopted_pid = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not procfs.alive(pid):
                return
            time.sleep(0.02)
        LOG.warning("PostgreSQL did not stop in %.0f s; sending SIGQUIT", STOP_TIMEOUT)
        if proc is None and not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if proc is not None:
            proc.wait(10)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is this instance's postmaster.

        A stale postmaster.pid (after a reboot, say) can name any process, even the server of
        another instance of the same user. PostgreSQL works in its data directory, so a
        postmaster whose working directory is another one is not ours.
        """
        if not procfs.alive(pid) or "postgres" not in " ".join(procfs.cmdline(pid)):
            return False
        try:
            data = os.stat(self.config.data_dir)
        except OSError:
            return False
        return procfs.cwd_is(pid, data)

    def _watch_child(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            expected = self._stopping or self._proc is not proc
        if not expected:
            LOG.error("PostgreSQL exited unexpectedly with status %d", code)
            self._on_exit(code)

    def _watch_adopted(self, pid: int) -> None:
        while procfs.alive(pid):
            time.sleep(0.2)
        with self._lock:
            expected = self._stopping or self._adopted_pid != pid
        if not expected:
            LOG.error("the adopted PostgreSQL server (pid %d) exited", pid)
            self._on_exit(-1)

    # -- connections -------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        try:
            return psycopg.connect(
                host=str(self.config.run_dir),
                port=self.config.port,
                user=ADMIN_USER,
                dbname=dbname,
                autocommit=autocommit,
                connect_timeout=5,
                # Objects that tenants create never shadow what the superuser calls.
                options="-c search_path=pg_catalog",
            )
        except psycopg.OperationalError as exc:
            raise GuestError(f"cannot connect to PostgreSQL: {exc}") from exc

    def ping(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
            return True
        except (GuestError, psycopg.Error):
            return False
