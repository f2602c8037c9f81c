"""The local driver's side of the agent fork server (``cove.guestagent.forkserver``, whose
docstring gives the protocol): guest agents forked from a process that imported their code
once, ready in milliseconds instead of the ~0.2 s a new Python process takes to import it.

``AgentForks.hold`` asks one request at a time (the exchange holds a lock; a fork takes a
millisecond or two), then confines the new agent and lets it start outside the lock (moving a
process into a control group can wait tens of milliseconds for the kernel, and creates must
not queue behind each other for it); the new agent waits until it is started
(``WaitingAgent.start``, at once for a new instance's, or once it is told which instance it
is for a spare place's: ``cove.compute.spares``) or dropped (``WaitingAgent.discard``; also
when this process exits). It raises ForkServerError whenever the fork server cannot start an
agent; the driver then starts one itself, as without a fork server. A fork server that failed
is given up for ``RETRY_AFTER`` seconds, so a broken one costs each start one quick failure at
most. The fork server is started at the first need (or by ``warm``) and exits when this side
closes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cove.common import procfs
from cove.common.service_user import ServiceUser

LOG = logging.getLogger(__name__)

#: Room on the fork server's command line for an agent's own (its interpreter, ``-m
#: cove.guestagent.main --config`` and a guest.json path the driver keeps short).
ROOM = 1024
#: How long an answer may take: the first one waits for the fork server's imports.
ANSWER_TIMEOUT = 30.0
#: How long a fork server that failed is not asked again.
RETRY_AFTER = 60.0
GO = b"go"
SERVER_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}


class AgentProcess(Protocol):
    """A new agent, started or forked."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...


class ForkServerError(Exception):
    """The fork server did not start the agent (nothing of it runs)."""


@dataclass(frozen=True)
class ForkedAgent:
    """An agent the fork server started: ``poll`` answers None while it runs, as a started
    process's does. The fork server, not this process, collects its exit, after which its
    pid may be another process's: only one of ``uid`` showing ``config`` on its command
    line is the agent."""

    pid: int
    uid: int
    config: str

    def poll(self) -> int | None:
        running = (
            procfs.alive(self.pid)
            and procfs.owned_by(self.pid, self.uid)
            and self.config in procfs.cmdline(self.pid)
        )
        return None if running else 0


class WaitingAgent:
    """A forked agent waiting on its go pipe (``release``, this side's to write)."""

    def __init__(self, pid: int, uid: int, config: str, release: int) -> None:
        self.pid, self.uid, self.config = pid, uid, config
        self._release: int | None = release

    def start(
        self,
        config: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ForkedAgent:
        """Let it run, as the agent of ``config`` in ``cwd`` with ``env`` when given (all
        three, for an agent forked before its instance was known), and return once its command
        line says so (the driver recognises agents by it). Raises ForkServerError when it is
        gone (or was started or discarded before)."""
        if self._release is None:
            raise ForkServerError(f"agent {self.pid} was already let go")
        message = GO
        if config is not None:
            late = {"config": str(config), "cwd": str(cwd), "env": dict(env or {})}
            message += json.dumps(late).encode()
        fd, self._release = self._release, None
        try:
            os.write(fd, message)  # shorter than a pipe's buffer: never blocks
        except OSError as exc:
            raise ForkServerError(f"agent {self.pid} is gone: {exc}") from exc
        finally:
            os.close(fd)
        agent = ForkedAgent(self.pid, self.uid, str(config) if config else self.config)
        if config is not None:
            # It rewrites its command line as soon as it reads the go: a moment.
            deadline = time.monotonic() + ANSWER_TIMEOUT
            while agent.poll() is not None and procfs.alive(self.pid):
                if time.monotonic() > deadline:
                    raise ForkServerError(f"agent {self.pid} did not take up its instance")
                time.sleep(0.0005)
        return agent

    def discard(self) -> None:
        """Close its go pipe: it exits without running (idempotent)."""
        if self._release is not None:
            os.close(self._release)
            self._release = None


class AgentForks:
    """One fork server for this driver."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: socket.socket | None = None
        self._failed_at = float("-inf")
        # One exchange at a time on the socket pair.
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Start the fork server now (it imports while nothing waits); a failure is logged
        and tried again at the next start after ``RETRY_AFTER``."""
        with self._lock:
            try:
                self._ensure()
            except ForkServerError as exc:
                self._give_up(str(exc))

    def _ensure(self) -> socket.socket:
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            return self._conn
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-u",
                    "-P",  # nothing imported from the working directory
                    "-m",
                    "cove.guestagent.forkserver",
                    "--fd",
                    str(theirs.fileno()),
                    "--room",
                    "." * ROOM,
                ],
                pass_fds=(theirs.fileno(),),
                # Nothing of the control plane's environment (secrets, maybe): every agent
                # forked from it holds a copy of what it started with.
                env=SERVER_ENV,
                cwd="/",
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"cannot start the agent fork server: {exc}") from exc
        finally:
            theirs.close()
        # Collect it when it exits, so it never lingers as a zombie of this process.
        threading.Thread(target=self._proc.wait, daemon=True).start()
        ours.settimeout(ANSWER_TIMEOUT)
        self._conn = ours
        return ours

    def hold(
        self,
        config: Path,
        cwd: Path,
        env: Mapping[str, str],
        owner: ServiceUser,
        log_fd: int,
        confine: Callable[[int], None],
    ) -> WaitingAgent:
        """Fork an agent for ``config`` writing to ``log_fd`` (this side keeps its copy) and
        call ``confine(pid)`` before it runs a line of its own; it waits until started
        (``WaitingAgent.start``). Raises ForkServerError."""
        request = {
            "config": str(config),
            "cwd": str(cwd),
            "env": dict(env),
            "uid": owner.popen_user,
            "gid": owner.popen_group,
            "groups": owner.popen_extra_groups,
        }
        with self._lock:
            pid, release = self._ask(request, log_fd)
        waiting = WaitingAgent(pid, owner.uid, str(config), release)
        try:
            confine(pid)
        except BaseException:
            waiting.discard()
            raise
        return waiting

    @property
    def given_up(self) -> bool:
        """Whether the fork server failed a moment ago (agents are started without it)."""
        return time.monotonic() - self._failed_at < RETRY_AFTER

    def _ask(self, request: Mapping[str, object], log_fd: int) -> tuple[int, int]:
        """One exchange, under the lock: the new agent's pid and the writing end of its go
        pipe (close-on-exec, so nothing this process starts keeps the agent waiting). A fork
        server that fails (hangs up, times out, answers nonsense) is given up; one that answers
        that this agent could not be made is asked again next time."""
        if self.given_up:
            raise ForkServerError("the agent fork server failed a moment ago")
        fds: list[int] = []
        try:
            conn = self._ensure()
            socket.send_fds(conn, [json.dumps(request).encode()], [log_fd])
            data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1, socket.MSG_CMSG_CLOEXEC)
            answer = json.loads(data or b'{"hung up": true}')
            if "error" in answer:
                raise ForkServerError(f"the agent fork server made no agent: {answer['error']}")
            pid = int(answer["pid"])
            if len(fds) != 1:
                raise ValueError("an answer without the agent's go pipe")
            return pid, fds.pop()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._give_up(str(exc))
            raise ForkServerError(f"the agent fork server failed: {exc!r}") from exc
        finally:
            for fd in fds:
                os.close(fd)

    def _give_up(self, why: str) -> None:
        LOG.warning("guest agents start without the fork server for now: %s", why)
        self._failed_at = time.monotonic()
        self.close()

    def close(self) -> None:
        """Hang up: the fork server exits; the agents it started run on. Called holding the
        lock, or when nothing else uses this object any more."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._proc = None
