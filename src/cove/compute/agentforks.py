"""The local driver's side of the agent fork server (``cove.guestagent.forkserver``, whose
docstring gives the protocol): guest agents forked from a process that imported their code
once, ready in milliseconds instead of the ~0.2 s a new Python process takes to import it.

``AgentForks.spawn`` asks one request at a time (the exchange holds a lock; a fork takes a
millisecond or two) and raises ForkServerError whenever the fork server cannot start an
agent; the driver then starts one itself, as without a fork server. A fork server that
failed is given up for ``RETRY_AFTER`` seconds, so a broken one costs each start one quick
failure at most. The fork server is started at the first need (or by ``warm``) and exits
when this side closes.
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

    def spawn(
        self,
        config: Path,
        cwd: Path,
        env: Mapping[str, str],
        owner: ServiceUser,
        log_fd: int,
        confine: Callable[[int], None],
    ) -> ForkedAgent:
        """Fork an agent for ``config`` writing to ``log_fd`` (this side keeps its copy),
        call ``confine(pid)`` before it runs a line of its own, then let it start. Raises
        ForkServerError."""
        with self._lock:
            pid = self._ask(
                {
                    "config": str(config),
                    "cwd": str(cwd),
                    "env": dict(env),
                    "uid": owner.popen_user,
                    "gid": owner.popen_group,
                    "groups": owner.popen_extra_groups,
                },
                log_fd,
                confine,
            )
        return ForkedAgent(pid, owner.uid, str(config))

    def _ask(self, request: dict[str, object], log_fd: int, confine: Callable[[int], None]) -> int:
        """One exchange (see ``spawn``), under the lock: the new agent's pid. A fork server
        that fails (hangs up, times out, answers nonsense) is given up; one that answers
        that this agent could not be made is asked again next time."""
        if time.monotonic() - self._failed_at < RETRY_AFTER:
            raise ForkServerError("the agent fork server failed a moment ago")
        try:
            conn = self._ensure()
            socket.send_fds(conn, [json.dumps(request).encode()], [log_fd])
            answer = json.loads(conn.recv(4096) or b'{"hung up": true}')
            if "error" in answer:
                raise ForkServerError(f"the agent fork server made no agent: {answer['error']}")
            pid = int(answer["pid"])
            try:
                confine(pid)
            except BaseException:
                conn.send(b"no")
                raise
            conn.send(GO)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._give_up(str(exc))
            raise ForkServerError(f"the agent fork server failed: {exc!r}") from exc
        return pid

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
