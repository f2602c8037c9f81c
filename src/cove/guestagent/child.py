"""A database server run as a child of the guest agent: start, watch, adopt and stop it.

Every datastore's server controller derives from :class:`ChildServer` and supplies what differs:
the command line, where the server writes its pid, how to ask it whether it answers, and the
signals that stop it. The machinery is the same for all:

* ``start`` adopts a server of this instance that still runs (never a second one), otherwise
  starts the server as a child in its own session, with its output appended to a private log,
  then waits until ``ping`` answers; a server that exits while starting is reported with the tail
  of its log.
* A child's exit is seen at once (a thread waits on it), and so is an adopted server's (through
  a pidfd). An exit the agent did not ask for is passed to ``on_exit``, once what is left of the
  server has been killed: its other processes outlive it (PostgreSQL's backends keep the old
  shared memory, and a new postmaster refuses to start until they are gone; a Redis child may
  still be writing a file), so every process of the service user that works in this
  instance's data directory, which only the instance's server does, gets SIGKILL first.
* ``stop`` sends ``stop_signal``, waits ``stop_timeout`` seconds, then sends ``kill_signal``.
* A pid read from a file is trusted only when that process runs the server's program in this
  instance's data directory (its working directory): a stale pid file can name any process,
  even another instance's server run by the same user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from cove.common import procfs
from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent import process

LOG = logging.getLogger(__name__)

#: What ``on_exit`` is given for a server the agent adopted: not its child, so its exit status
#: is unknown (no signal has the number 256, so no child's status reads the same).
UNKNOWN_EXIT = -256
#: How long the processes a crashed server left behind may take to die after SIGKILL.
REMNANTS_TIMEOUT = 10.0


def describe_exit(title: str, code: int) -> str:
    """How the server ended, for logs and reports ("PostgreSQL was killed by SIGKILL")."""
    if code == UNKNOWN_EXIT:
        return f"{title} exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{title} was killed by {name}"
    return f"{title} exited with status {code}"


class ChildServer(ABC):
    #: How logs and errors name the server ("PostgreSQL").
    title: str = ""
    #: A word the process's command line holds ("postgres").
    program: str = ""
    stop_signal: int = signal.SIGTERM
    kill_signal: int = signal.SIGKILL
    start_timeout: float = 120.0
    stop_timeout: float = 60.0

    def __init__(
        self, config: GuestSettings, log_file: Path, on_exit: Callable[[int], None]
    ) -> None:
        self.config = config
        self.log_file = log_file
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._stopping = False
        self._lock = threading.RLock()

    # -- what each server supplies -----------------------------------------------------------

    @abstractmethod
    def command(self) -> Sequence[str]:
        """The server's argv (no secrets)."""

    @abstractmethod
    def read_pid(self) -> int | None:
        """The pid the server wrote for itself, or None."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the server answers the agent now; never raises."""

    def before_start(self) -> None:  # noqa: B027 (optional hook)
        """Called just before the server starts (e.g. remove a stale socket)."""

    # -- state -------------------------------------------------------------------------------

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

    # -- start, adopt, stop ------------------------------------------------------------------

    def adopt(self) -> bool:
        """Watch a server of this instance left running by an earlier agent; True if there
        was one."""
        pid = self.read_pid()
        if pid is None:
            return False
        if not self._is_ours(pid):
            if procfs.alive(pid):
                LOG.warning(
                    "the %s pid file names pid %d, which is not this instance's server; "
                    "not adopting it",
                    self.title,
                    pid,
                )
            return False
        with self._lock:
            self._adopted_pid = pid
            self._proc = None
            self._stopping = False
        threading.Thread(target=self._watch_adopted, args=(pid,), daemon=True).start()
        LOG.info("adopted the running %s server (pid %d)", self.title, pid)
        return True

    def start(self) -> None:
        if not self.running() and self.adopt():
            return  # a server of this instance still runs: never start a second one
        with self._lock:
            if self.running():
                return
            self._stopping = False
            self.before_start()
            argv = list(self.command())
            log = os.fdopen(
                os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
            )
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.config.data_dir,
                    start_new_session=True,
                    # What the server writes itself is private to the service user.
                    umask=0o077,
                )
            except OSError as exc:
                raise GuestError(f"cannot start {argv[0]}: {exc.strerror}") from exc
            finally:
                log.close()
            self._adopted_pid = None
            proc = self._proc
        threading.Thread(target=self._watch_child, args=(proc,), daemon=True).start()
        self.wait_ready(proc)

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until ``ping`` answers; raises GuestError when the server (``proc``, by default
        the child last started) exits first or does not answer within ``start_timeout``."""
        if proc is None:
            proc = self._proc
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise GuestError(
                    f"{self.title} exited with status {proc.returncode} while starting: "
                    + process.tail(self.log_file, 5)
                )
            if self.ping():
                return
            time.sleep(0.02)
        raise GuestError(f"{self.title} did not answer within {self.start_timeout:.0f} s")

    def stop(self) -> None:
        """``stop_signal``, then ``kill_signal`` when the server has not exited in time."""
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
            os.kill(pid, self.stop_signal)
        if self._wait_exit(pid, proc, self.stop_timeout):
            return
        LOG.warning(
            "%s did not stop in %.0f s; sending %s",
            self.title,
            self.stop_timeout,
            signal.Signals(self.kill_signal).name,
        )
        if proc is None and not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.kill_signal)
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
        """Whether ``pid`` runs this server's program in this instance's data directory."""
        if not procfs.alive(pid) or self.program not in " ".join(procfs.cmdline(pid)):
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
            LOG.error("%s unexpectedly", describe_exit(self.title, code))
            self._end_remnants()
            self._on_exit(code)

    def _watch_adopted(self, pid: int) -> None:
        _wait_gone(pid)
        with self._lock:
            expected = self._stopping or self._adopted_pid != pid
        if not expected:
            LOG.error("the adopted %s server (pid %d) exited", self.title, pid)
            self._end_remnants()
            self._on_exit(UNKNOWN_EXIT)

    def _end_remnants(self) -> None:
        """SIGKILL what a dead server left running: the service user's processes working in
        this instance's data directory (PostgreSQL's backends put themselves in sessions of
        their own, so no process group holds them all), except the agent and a server it
        started since, with its children; then wait until they are gone."""
        try:
            data = os.stat(self.config.data_dir)
        except OSError:
            return
        with self._lock:
            current = self.pid
            left = [
                pid
                for pid in procfs.working_in(os.geteuid(), data)
                if pid not in (os.getpid(), current) and procfs.parent(pid) != current
            ]
        if not left:
            return
        LOG.warning("killing %d process(es) the %s server left behind", len(left), self.title)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + REMNANTS_TIMEOUT
        while any(procfs.alive(pid) for pid in left) and time.monotonic() < deadline:
            time.sleep(0.005)


def _wait_gone(pid: int) -> None:
    """Block until ``pid``, which is not the agent's child, has exited."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone, or a kernel without pidfds: poll instead
        while procfs.alive(pid):
            time.sleep(0.2)
        return
    try:
        select.select([fd], [], [])  # a pidfd turns readable when its process exits
    finally:
        os.close(fd)


def read_pid_file(path: Path) -> int | None:
    """The first number in a pid file, or None when it is missing or holds none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
