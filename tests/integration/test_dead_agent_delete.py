"""Deleting an instance whose guest agent died: nothing is left to stop the database server, so
the local driver does it, for every datastore, before it removes the instance's directory."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from guesthost import Host

from cove.common.ids import new_id
from cove.common.procfs import alive, cmdline
from cove.domain.datastores import DATASTORES, datastore
from cove.domain.guest import GuestSettings
from servers import free_address

pytestmark = pytest.mark.integration


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _spec(host: Host, name: str) -> GuestSettings:
    ds = datastore(name)
    found = ds.find_versions()
    # make test installs every datastore: a missing one must not pass unnoticed.
    assert found, f"needs {ds.title} ({ds.needs})"
    return GuestSettings(
        instance_id=new_id(),
        datastore=name,
        datastore_version=found[-1].name,
        bin_dir=found[-1].bin_dir,
        address=free_address(ds.port),
        port=ds.port,
        ram_mb=512,
        vcpus=1,
        volume_gb=1,
        transport_url=host.url,
        heartbeat_interval=5,
    )


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid: int, bin_dir: str) -> bool:
    """Whether ``pid`` still runs the server from ``bin_dir`` (and not a reuse of its pid)."""
    return alive(pid) and bin_dir in " ".join(cmdline(pid))


@pytest.mark.parametrize("name", sorted(DATASTORES))
def test_deleting_an_instance_whose_agent_was_killed_stops_its_server(
    host: Host, name: str
) -> None:
    spec = _spec(host, name)
    instance_id = spec.instance_id
    host.create(spec, prepare=True)
    report = host.wait_event(300, method="report", instance_id=instance_id)
    assert report["outcome"] == "success", report
    base = host.driver.instance_dir(instance_id)
    pid_file = base.joinpath(*datastore(name).stray.pid_file)
    _wait_for(lambda: _pid_in(pid_file) is not None, 60, f"{pid_file} names the server")
    server = _pid_in(pid_file)
    assert server is not None and _running(server, spec.bin_dir)
    agent = host.driver.agent_pid(instance_id)
    assert agent is not None and agent > 0
    try:
        os.kill(agent, signal.SIGKILL)
        _wait_for(
            lambda: not alive(agent) and host.driver.agent_pid(instance_id) is None,
            60,
            "the agent is gone",
        )
        assert _running(server, spec.bin_dir), "the server died with its agent"
        host.driver.destroy(instance_id)
        _wait_for(lambda: not _running(server, spec.bin_dir), 60, "the server is stopped")
    finally:
        # A failed test must not leave a server behind to hold the port of the next.
        if _running(server, spec.bin_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)
    assert not os.path.lexists(base)
