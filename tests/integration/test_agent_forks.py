"""Guest agents forked from the local driver's fork server: each is what a started agent is
(the instance's user, its control group, its command line, a session of its own, nothing of
the control plane's environment), runs on when the fork server goes, and a fork server that
is gone or broken leaves the driver starting agents itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from guesthost import Host
from replication_helpers import eventually

from cove.common import procfs
from cove.compute.agentforks import ForkedAgent, ForkServerError
from cove.domain.guest import GuestSettings
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient

pytestmark = pytest.mark.integration

CTX = RequestContext()


def _answers(host: Host, spec: GuestSettings) -> bool:
    try:
        return GuestClient(host.bus, spec.instance_id).get_status(CTX) is not None
    except Exception:
        return False


def _started(host: Host, spec: GuestSettings) -> int:
    """Create the instance and wait until its agent answers; its pid."""
    host.create(spec)
    eventually(lambda: _answers(host, spec), "the agent answers", 60)
    pid = host.driver.agent_pid(spec.instance_id)
    assert pid is not None and pid > 0
    return pid


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_forked_agent_is_what_a_started_one_is(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.without_spares()  # a spare's agent was forked before the test could watch
    driver = host.driver
    # The driver confines a forked agent before it runs a line of the agent's own (the
    # lock it takes first is not held yet), as an agent, as the instance's user.
    confined: list[tuple[int, int | None, bool]] = []
    join = driver._join

    def confine(instance_id: str, pid: int) -> None:
        config = str(driver.config_path(instance_id))
        agent = driver._is_agent(pid, config, driver.owner(instance_id).uid)
        confined.append((pid, driver.agent_pid(instance_id), agent))
        join(instance_id, pid)

    monkeypatch.setattr(driver, "_join", confine)
    os.environ["COVE_TEST_SECRET"] = "not-for-agents"
    try:
        forks = driver.forks
        forks.close()  # a fork server started from now on sees the secret in its parent
        spec = host.spec_of("redis")
        pid = _started(host, spec)
    finally:
        del os.environ["COVE_TEST_SECRET"]
    agent = driver._spawned[spec.instance_id]
    assert isinstance(agent, ForkedAgent) and agent.pid == pid and agent.poll() is None
    assert confined == [(pid, None, True)]
    server = forks._proc
    assert server is not None and procfs.parent(pid) == server.pid
    config = str(driver.config_path(spec.instance_id))
    shown = [a for a in procfs.cmdline(pid) if a]
    assert shown == [sys.executable, "-m", "cove.guestagent.main", "--config", config]
    assert driver._is_agent(pid, config, driver.owner(spec.instance_id).uid)
    assert procfs.owned_by(pid, driver.owner(spec.instance_id).uid)
    assert os.getsid(pid) == pid
    assert Path(f"/proc/{pid}/cwd").resolve() == driver.instance_dir(spec.instance_id).resolve()
    # The fork server (whose memory every agent copies) holds nothing of the control
    # plane's environment.
    assert "COVE_TEST_SECRET" not in _environ(server.pid)
    # Only the instance's user and the service group: none of the fork server's groups.
    owner = driver.owner(spec.instance_id)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Gid"].split()[:2] == [str(owner.gid)] * 2
    if owner.switch:
        assert status["Groups"].split() == []
    if driver.cgroups is not None:
        assert driver.cgroups.contains(spec.instance_id, pid)
        server_pid = host.server_pid(spec.instance_id, "redis")
        assert driver.cgroups.contains(spec.instance_id, server_pid)
    log = (driver.instance_dir(spec.instance_id) / "log" / "guestagent.log").read_text()
    assert "serving" in log

    # The fork server goes: the agent runs on, and the next agent comes from a new one.
    server.kill()
    eventually(lambda: not procfs.alive(server.pid), "the fork server gone", 30)
    assert _answers(host, spec) and procfs.alive(pid)
    other = host.spec_of("redis")
    other_pid = _started(host, other)
    assert forks._proc is not None and forks._proc.pid != server.pid
    assert procfs.parent(other_pid) == forks._proc.pid

    # Deleting stops a forked agent as it stops a started one.
    driver.destroy(spec.instance_id)
    eventually(lambda: not procfs.alive(pid), "the deleted instance's agent stopped", 60)
    assert _answers(host, other)


def test_without_a_working_fork_server_the_driver_starts_agents_itself(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.without_spares()
    driver = host.driver
    forks = driver.forks
    # A fork server that hung up: the request cannot be sent.
    dead, gone = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    gone.close()
    monkeypatch.setattr(forks, "_ensure", lambda: dead)
    spec = host.spec_of("redis")
    pid = _started(host, spec)
    monkeypatch.undo()
    assert not isinstance(driver._spawned[spec.instance_id], ForkedAgent)
    assert procfs.parent(pid) == os.getpid()
    assert [a for a in procfs.cmdline(pid) if a][1:3] == ["-m", "cove.guestagent.main"]
    # Given up for a while: the next start does not wait on it.
    with pytest.raises(ForkServerError, match="a moment ago"):
        forks.hold(Path("/x"), Path("/"), {}, driver.owner(spec.instance_id), 0, lambda p: None)


def test_the_fork_server_refuses_a_bad_request_and_serves_on(host: Host) -> None:
    host.without_spares()
    forks = host.driver.forks
    conn = forks._ensure()
    conn.send(b"not json")
    assert "error" in json.loads(conn.recv(4096))
    with open(os.devnull, "rb") as null:
        socket.send_fds(conn, [b'["a list"]'], [null.fileno()])
    assert "one JSON object" in json.loads(conn.recv(4096))["error"]
    # An agent that cannot be made (here, its directory is missing) is refused on its own:
    # the fork server serves on.
    server = forks._proc
    owner = host.driver.identity
    with open(os.devnull, "wb") as null, pytest.raises(ForkServerError, match="made no agent"):
        forks.hold(Path("/x/guest.json"), Path("/nonexistent"), {}, owner, null.fileno(), print)
    spec = host.spec_of("redis")
    pid = _started(host, spec)
    assert isinstance(host.driver._spawned[spec.instance_id], ForkedAgent)
    assert forks._proc is server and server is not None and procfs.parent(pid) == server.pid
    # A pid that is no longer the agent's (collected, then another process's) is not it.
    assert ForkedAgent(os.getpid(), os.getuid(), "/elsewhere/guest.json").poll() == 0


def test_show_as_writes_a_command_line_that_fits_and_refuses_one_that_does_not() -> None:
    script = (
        "import sys, time\n"
        "from cove.guestagent.forkserver import show_as\n"
        "print(show_as(['cove-x', '--config', '/a b/guest.json']),"
        " show_as(['y' * 4000]), flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, "." * 64], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().split() == ["True", "False"]
            shown = Path(f"/proc/{proc.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            assert shown == [b"cove-x", b"--config", b"/a b/guest.json"]
        finally:
            proc.kill()
