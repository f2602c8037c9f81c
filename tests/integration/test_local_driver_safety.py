"""The local driver and real guest agents against the two ways an instance could outlive or harm
another: a monitor restarting the agent while the instance is deleted, and a stale
postmaster.pid naming the server of another instance."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from guesthost import Host

from cove.common.errors import ConfigurationError, CoveError
from cove.common.procfs import alive
from cove.compute.discovery import find_postgresql
from cove.guestagent.config import load_settings
from cove.guestagent.datastores.postgresql.server import PostgresServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries"),
]


def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    "agent", ["running", "just killed", "being restarted", "killed, server slow to stop"]
)
@pytest.mark.parametrize("monitor_of", ["this task manager", "another task manager"])
def test_destroy_wins_against_a_monitor_restarting_the_agent(
    host: Host, agent: str, monitor_of: str
) -> None:
    # Another task manager on the same host has its own driver over the same directory.
    driver = host.driver if monitor_of == "this task manager" else host.second_driver()
    spec = host.spec()
    instance_id = spec.instance_id
    host.create(spec, prepare=True)
    report = host.wait_event(120, method="report", instance_id=instance_id)
    assert report["outcome"] == "success", report
    stop = threading.Event()
    restarts: list[float] = []
    refusals: list[Exception] = []

    def monitor() -> None:
        # What the task manager's monitor does, without its pause between passes.
        while not stop.is_set():
            try:
                if driver.ensure_running(instance_id):
                    restarts.append(time.monotonic())
            except (CoveError, OSError) as exc:
                # The instance goes away under the monitor.
                refusals.append(exc)
            time.sleep(0.001)

    thread = threading.Thread(target=monitor, daemon=True)
    server = host.server_pid(instance_id)
    # A server busy writing a large checkpoint, say, takes a while to stop: the delete then
    # gives a monitor plenty of time to start an agent.
    resume = threading.Timer(1.5, _resume, (server,))
    thread.start()
    try:
        if agent != "running":
            pid = driver.agent_pid(instance_id)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        if agent == "being restarted":
            _wait_for(lambda: bool(restarts), 10)
        if agent == "killed, server slow to stop":
            os.kill(server, signal.SIGSTOP)
            resume.start()
        host.driver.destroy(instance_id)
        # The monitor keeps trying for a while after the delete.
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(10)
        resume.cancel()
        _resume(server)
        leftovers = _processes_mentioning(instance_id)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not os.path.lexists(host.driver.instance_dir(instance_id))
    assert leftovers == []
    assert refusals, "the monitor never ran into the delete"
    with pytest.raises(ConfigurationError, match="no guest config"):
        driver.ensure_running(instance_id)


def test_a_stale_postmaster_pid_naming_another_instance_s_server_is_not_adopted(
    host: Host,
) -> None:
    first, second = host.spec(), host.spec()
    for spec in (first, second):
        host.create(spec, prepare=True)
    prepared: dict[str, dict[str, Any]] = {}
    while len(prepared) < 2:
        report = host.wait_event(120, method="report", operation="prepare")
        prepared[report["instance_id"]] = report
    assert all(r["outcome"] == "success" for r in prepared.values()), prepared
    a, b = first.instance_id, second.instance_id
    a_server = host.server_pid(a)

    # B's agent and server die without cleaning up (a host crash, say); when B comes back its
    # postmaster.pid names a pid that now belongs to A's server.
    b_agent = host.driver.agent_pid(b)
    assert b_agent is not None and b_agent > 0
    b_server = host.server_pid(b)
    os.kill(b_agent, signal.SIGKILL)
    os.kill(b_server, signal.SIGKILL)
    _wait_for(lambda: host.driver.agent_pid(b) is None and not alive(b_server), 30)
    pidfile = host.driver.instance_dir(b) / "data" / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    pidfile.write_text("\n".join([str(a_server), *lines[1:]]) + "\n")

    # The guest side refuses it, and still knows A's own server.
    on_exit: list[int] = []
    assert not PostgresServer(load_settings(host.driver.config_path(b)), on_exit.append).adopt()
    assert PostgresServer(load_settings(host.driver.config_path(a)), on_exit.append).adopt()

    # B's new agent does not take A's server for its own.
    assert host.driver.ensure_running(b)
    host.wait_event(60, method="heartbeat", instance_id=b, service_status="crashed")
    log = (host.driver.instance_dir(b) / "log" / "guestagent.log").read_text()
    assert "not adopting it" in log
    assert "adopted the running PostgreSQL server" not in log

    # Deleting B leaves A's server alone, whether the agent or the driver stops servers.
    host.driver.destroy(b)
    assert not os.path.lexists(host.driver.instance_dir(b))
    assert alive(a_server)
    assert host.server_pid(a) == a_server
    assert host.call(a, "get_status") == "healthy"
    assert on_exit == []
