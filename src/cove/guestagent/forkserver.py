"""A warm parent for guest agents: one process that has imported the agent's code once and
forks a new agent for each instance the local compute driver starts, so an agent runs its
first line in milliseconds instead of after the ~0.2 s Python takes to import it.

The driver (``cove.compute.agentforks``) starts it (``python -m cove.guestagent.forkserver
--fd N --room ...``, the room a padding that agents' command lines take the place of) and talks
to it over a private socket pair, which nothing else can reach. A request is one datagram of
JSON, ``{"config", "cwd", "env", "uid", "gid", "groups"}``, with the agent's log file passed along
as a descriptor; the answer is ``{"pid": N}`` with the writing end of the new agent's ``go``
pipe passed along, or ``{"error": "..."}``. The new agent then waits on that pipe, and the fork
server serves the next request meanwhile: the driver writes ``go`` (after moving the agent into
the instance's control group, so everything it starts is born there) and closes it, and the
agent starts; an agent whose pipe closes without ``go`` (the driver hung up or changed its mind)
exits unstarted. A ``go`` may be followed by JSON ``{"config", "cwd", "env"}``: the agent
then starts as that instance's instead (a spare place's agent, ``cove.compute.spares``, forked
before its instance was known; its files moved under it meanwhile).

A forked agent is what the driver checks a started one to be: it runs in a session of its
own as the instance's user, with the environment and working directory the driver gives, and
shows the command line a started agent has (``show_as``; one that cannot exits unstarted),
which is how the driver recognises an agent before it signals one. What differs is out of
the driver's sight: /proc shows the fork server's (bare) environment for it, and the kernel
keeps it from being dumped or traced, as it does for any process that changed its user.

The server is single-threaded, so a fork never copies a lock another thread held, and
reaps the agents it forked when they exit. It exits when the driver's end closes; the agents
it forked run on, as started ones do.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

#: What an agent needs before it serves, imported once here instead of by every agent. The
#: backup tools and stores are left out: few agents use them, and they are large.
PRELOAD = (
    "cove.guestagent.main",
    "cove.guestagent.service",
    "cove.guestagent.datastores.postgresql.manager",
    "cove.guestagent.datastores.mariadb.manager",
    "cove.guestagent.datastores.redis.manager",
    "cove.rpc.client",
    "cove.rpc.server",
    "cove.rpc.transport",
    "kombu.transport.redis",
    "kombu.transport.pyamqp",
)
#: The largest request: an environment and a few paths.
MAX_REQUEST = 1 << 16
GO = b"go"
READY = b"r"


def show_as(argv: list[str]) -> bool:
    """Write ``argv`` over this process's own command line, as /proc shows it (the memory
    between /proc/self/stat's ``arg_start`` and ``arg_end``, which Python no longer reads
    once it started); False, changing nothing, when it does not fit. Raises OSError when
    /proc cannot be read."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # the 48th and 49th fields
    text = b"".join(arg.encode() + b"\0" for arg in argv)
    if not start or len(text) > end - start:
        return False
    # Zeros to the end: an area whose last byte is zero is shown whole, as argv.
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)
    return True


def _reap(_signum: int, _frame: FrameType | None) -> None:
    """Collect every agent that has exited, so none lingers as a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _agent(request: dict[str, Any], log_fd: int, ready: int, go: int) -> int:
    """In the forked child: become the instance's agent, say so, wait for ``go``, run. An
    agent that cannot look like a started one exits before it says it is ready (the driver
    then starts one itself)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the agent waits for its own children
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # an ignored signal stays so across exec
    os.setsid()
    # Nothing of the fork server's but what this agent is given: its socket to the driver,
    # the other pipes' ends.
    keep = sorted({0, 1, 2, log_fd, ready, go})
    for low, high in zip(keep, [*keep[1:], os.sysconf("SC_OPEN_MAX")], strict=True):
        os.closerange(low + 1, high)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["uid"] is not None:
        os.setgroups(request["groups"])
        os.setgid(request["gid"])
        os.setuid(request["uid"])
    argv = ["-m", "cove.guestagent.main", "--config", request["config"]]
    if not show_as([sys.executable, *argv]):
        print("cove-agent-forkserver: no room for the agent's command line", file=sys.stderr)
        return 1
    # Its user and command line are an agent's before the driver learns its pid.
    os.write(ready, READY)
    os.close(ready)
    said = _read_all(go)
    os.close(go)
    if not said.startswith(GO):
        return 1
    if len(said) > len(GO):
        # Told which instance it is only now: its directory, environment and command line.
        late = json.loads(said[len(GO) :])
        os.chdir(late["cwd"])
        os.environ.clear()
        os.environ.update(late["env"])
        argv = ["-m", "cove.guestagent.main", "--config", late["config"]]
        if not show_as([sys.executable, *argv]):
            print("cove-agent-forkserver: no room for the agent's command line", file=sys.stderr)
            return 1
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    sys.argv = ["cove-guestagent", *argv[2:]]
    from cove.guestagent.main import main

    return main(argv[2:])


def _read_all(fd: int) -> bytes:
    """What is written to the pipe ``fd`` until its writer closes it (a go is short)."""
    chunks = []
    while chunk := os.read(fd, MAX_REQUEST):
        chunks.append(chunk)
        if sum(map(len, chunks)) > MAX_REQUEST:
            return b""
    return b"".join(chunks)


def _fork(conn: socket.socket, request: dict[str, Any], log_fd: int) -> None:
    """Fork one agent and answer its pid once it is ready, with the writing end of its
    ``go`` pipe. Closes ``log_fd``. Raises OSError before the pid is answered (the caller
    answers the error then); after, the exchange is over whatever happens."""
    opened: list[int] = [log_fd]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        wait_ready, ready = os.pipe()
        opened += (wait_ready, ready)
        go, release = os.pipe()
        opened += (go, release)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _agent(request, log_fd, ready, go)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        for fd in (go, log_fd, ready):
            os.close(fd)
            opened.remove(fd)
        if os.read(wait_ready, len(READY)) != READY:
            raise OSError("the new agent exited before it was ready (see the task manager's log)")
        socket.send_fds(conn, [json.dumps({"pid": pid}).encode()], [release])
    finally:
        for fd in opened:  # the driver holds the agent's go now (or nobody: it exits)
            os.close(fd)


def serve(conn: socket.socket) -> int:
    """Answer the driver's requests until it hangs up; the exit status. Raises OSError
    when the socket fails otherwise."""
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 1)
        except ConnectionError:
            return 0
        if not data:
            for fd in fds:
                os.close(fd)
            return 0
        try:
            request = json.loads(data)
            if len(fds) != 1 or not isinstance(request, dict):
                raise ValueError("a request is one JSON object and one log descriptor")
        except ValueError as exc:
            for fd in fds:
                os.close(fd)
            conn.send(json.dumps({"error": str(exc)}).encode())
            continue
        try:
            _fork(conn, request, fds[0])
        except OSError as exc:
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"error": f"cannot fork an agent: {exc}"}).encode())


def _read_annotations() -> None:
    """Build the agent's RPC table once, unbound: it reads every method's annotations
    (``typing.get_type_hints``, tens of milliseconds), which the codec keeps, so each agent
    finds them read."""
    from cove.guestagent.admin_endpoints import GuestAdminEndpoints
    from cove.guestagent.service import GuestService, guest_endpoints

    guest_endpoints(
        GuestService.__new__(GuestService), GuestAdminEndpoints.__new__(GuestAdminEndpoints)
    )


def main(argv: list[str] | None = None) -> int:
    """The fork server's program; its exit status (0 once the driver hung up)."""
    parser = argparse.ArgumentParser(prog="cove-agent-forkserver")
    parser.add_argument("--fd", type=int, required=True, help="this end of the socket pair")
    parser.add_argument("--room", default="", help="room for the agents' command lines")
    args = parser.parse_args(argv)
    conn = socket.socket(fileno=args.fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C to `cove up` is the driver's to handle
    # Agents and their servers run at the normal priority, whichever thread of the driver
    # started this (its spare places are made niced: ``cove.compute.spares``). Only root may.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    for name in PRELOAD:
        importlib.import_module(name)
    _read_annotations()
    # What is imported stays out of the collector's passes, which would otherwise touch (and
    # so copy) every shared page in each agent.
    gc.freeze()
    # Ready: the driver's first request may have waited for the imports.
    return serve(conn)


if __name__ == "__main__":
    sys.exit(main())
