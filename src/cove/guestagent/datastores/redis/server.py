"""Starting, watching and stopping the Redis server process, and the agent's connection."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common import procfs
from cove.common.errors import GuestError
from cove.guestagent import process
from cove.guestagent.config import GuestConfig
from cove.guestagent.datastores.redis import conf

LOG = logging.getLogger(__name__)

START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class RedisServer:
    """One Redis server: its files, its process and the agent's admin connection."""

    def __init__(self, config: GuestConfig, on_exit: Callable[[int], None]) -> None:
        self.config = config
        self.binary = Path(config.bin_dir) / "redis-server"
        self.conf_file = config.conf_dir / conf.CONF_FILE
        self.acl_file = config.conf_dir / conf.ACL_FILE
        self.secret_file = config.conf_dir / conf.ADMIN_SECRET
        self.socket = config.run_dir / conf.SOCKET
        self.pid_file = config.run_dir / conf.PID_FILE
        self.log_file = config.log_dir / conf.LOG_FILE
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._stopping = False
        self._lock = threading.RLock()

    # -- files -------------------------------------------------------------------------------

    def initialise(self) -> None:
        """A fresh, empty data directory, a new admin password and the first ACL file."""
        for directory in (self.config.conf_dir, self.config.log_dir, self.config.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        password = conf.new_admin_password()
        conf.write_private(self.secret_file, password + "\n")
        conf.write_private(self.acl_file, conf.initial_acl(password))

    def write_config(self) -> None:
        conf.write_private(self.conf_file, conf.redis_conf(self.config))

    def _admin_password(self) -> str:
        try:
            return self.secret_file.read_text().strip()
        except OSError as exc:
            raise GuestError(f"cannot read the Redis admin password: {exc.strerror}") from exc

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
        """Watch a server left running by an earlier agent."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if not self._is_ours(pid):
            if procfs.alive(pid):
                LOG.warning(
                    "%s names pid %d, which is not this instance's server; not adopting it",
                    self.pid_file.name,
                    pid,
                )
            return False
        with self._lock:
            self._adopted_pid = pid
            self._proc = None
            self._stopping = False
        threading.Thread(target=self._watch_adopted, args=(pid,), daemon=True).start()
        LOG.info("adopted the running Redis server (pid %d)", pid)
        return True

    def start(self) -> None:
        if not self.running() and self.adopt():
            return  # a server of this instance still runs: never start a second one
        with self._lock:
            if self.running():
                return
            self._stopping = False
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()  # a socket left by a killed server is not an answer
            log = os.fdopen(
                os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
            )
            try:
                self._proc = subprocess.Popen(
                    [str(self.binary), str(self.conf_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.config.data_dir,
                    start_new_session=True,
                    # What Redis writes itself (the ACL file on ACL SAVE, the AOF) is private.
                    umask=0o077,
                )
            except OSError as exc:
                raise GuestError(f"cannot start {self.binary}: {exc.strerror}") from exc
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
                    f"Redis exited with status {proc.returncode} while starting: "
                    + process.tail(self.log_file, 5)
                )
            if self.ping():
                return
            time.sleep(0.02)
        raise GuestError(f"Redis did not answer within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """SIGTERM: Redis flushes the AOF and exits; SIGKILL if it has not after a minute."""
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
            os.kill(pid, signal.SIGTERM)
        if self._wait_exit(pid, proc, STOP_TIMEOUT):
            return
        LOG.warning("Redis did not stop in %.0f s; killing it", STOP_TIMEOUT)
        if proc is None and not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_exit(pid, proc, 10)

    @staticmethod
    def _wait_exit(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None if proc is not None else not procfs.alive(pid):
                return True
            time.sleep(0.02)
        return False

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is this instance's server.

        A stale pid file can name any process, even another instance's server run by the same
        user. This server is a redis-server working in this instance's data directory (its title
        names its config file too, but Redis cuts a title to the room its environment leaves).
        """
        if not procfs.alive(pid):
            return False
        title = " ".join(procfs.cmdline(pid))
        if "redis-server" not in title:
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
            LOG.error("Redis exited unexpectedly with status %d", code)
            self._on_exit(code)

    def _watch_adopted(self, pid: int) -> None:
        while procfs.alive(pid):
            time.sleep(0.2)
        with self._lock:
            expected = self._stopping or self._adopted_pid != pid
        if not expected:
            LOG.error("the adopted Redis server (pid %d) exited", pid)
            self._on_exit(-1)

    # -- connections -------------------------------------------------------------------------

    def connect(self) -> redis.Redis:
        """A client logged in as the agent's user over the unix socket (no network)."""
        return redis.Redis(
            unix_socket_path=str(self.socket),
            username=conf.ADMIN_USER,
            password=self._admin_password(),
            socket_timeout=10,
            socket_connect_timeout=5,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),  # callers wait and retry themselves
        )

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.connect() as client:
                return bool(client.ping())
        except (GuestError, redis.RedisError):
            return False
