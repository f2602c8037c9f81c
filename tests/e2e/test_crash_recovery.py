"""A database server killed with SIGKILL under a running Cove: the instance shows the fault while
the server is down, then ACTIVE again with its data and without the fault, for every datastore."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import pytest
from datastores import DATASTORES, Datastore
from harness import ControlPlane, wait_for

from cove.common.procfs import cmdline
from cove.domain.datastores import datastore as descriptor

pytestmark = pytest.mark.e2e

PASSWORD = "crash-Pw-4410"


@pytest.fixture(params=sorted(DATASTORES))
def datastore(request: pytest.FixtureRequest) -> Datastore:
    return DATASTORES[request.param]


def server_pid(plane: ControlPlane, iid: str, name: str) -> int | None:
    """The pid in the server's pid file, if that process runs the server (it may be gone, or
    not written yet, while the server restarts)."""
    stray = descriptor(name).stray
    try:
        pid = int(
            (plane.data_dir / "instances" / iid).joinpath(*stray.pid_file).read_text().split()[0]
        )
    except (OSError, ValueError, IndexError):
        return None
    # The process may exit between the read of the file and this look: an empty command line.
    program = {"postgresql": "postgres", "mariadb": "mariadbd", "redis": "redis-server"}[name]
    return pid if program in " ".join(cmdline(pid)) else None


def test_a_killed_server_comes_back_with_its_data(
    cove_up: ControlPlane, datastore: Datastore
) -> None:
    plane, ds = cove_up, datastore
    spec: dict[str, Any] = {"users": [{"name": "app", "password": PASSWORD}]}
    db = "app" if ds.has_databases else ""
    if ds.has_databases:
        spec["databases"] = [{"name": "app"}]
        spec["users"][0]["databases"] = [{"name": "app"}]
    iid = plane.create(name=f"crash-{ds.name}", datastore={"type": ds.name}, **spec)["id"]
    inst = plane.wait_status(iid, "ACTIVE")
    with ds.login(inst, "app", PASSWORD, db) as conn:
        ds.write(conn, "committed before the crash")
        before = ds.server_run_id(conn)
    pid = wait_for(lambda: server_pid(plane, iid, ds.name), 30, what="the server's pid")

    # While its data directory is closed to the service user, the server cannot start again:
    # the instance stays down long enough to be seen down.
    data = plane.data_dir / "instances" / iid / "data"
    data.chmod(0o000)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

        def down() -> dict[str, Any] | None:
            inst = plane.instance(iid)
            return inst if inst["status"] == "SHUTDOWN" and "fault" in inst else None

        inst = wait_for(down, 30, what="SHUTDOWN with a fault")
        assert inst["fault"]["message"].startswith("The database server stopped unexpectedly")
        assert "SIGKILL" in inst["fault"]["message"]
    finally:
        data.chmod(0o700)

    # The guest agent's next attempt starts it: ACTIVE again, the fault gone, the data there.
    def back() -> dict[str, Any] | None:
        inst = plane.instance(iid)
        return inst if inst["status"] == "ACTIVE" and "fault" not in inst else None

    inst = wait_for(back, 90, what="ACTIVE without the fault")
    assert inst["operating_status"] == "HEALTHY"
    with ds.login(inst, "app", PASSWORD, db) as conn:
        assert ds.read(conn) == "committed before the crash"
        assert ds.server_run_id(conn) != before
    assert server_pid(plane, iid, ds.name) not in (None, pid)
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
