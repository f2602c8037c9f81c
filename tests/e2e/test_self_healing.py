"""Cove's own parts die and Cove heals: the embedded bus killed, RabbitMQ restarted, the task
manager killed at any moment of a build or a delete, or again and again.

Each test kills the real process. The planes here are their own (not the shared session
planes), so what the kills leave behind cannot disturb other tests.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from datastores import DATASTORES, LOGIN_ERRORS
from harness import ControlPlane, wait_for
from procs import parent_pid, pids

pytestmark = pytest.mark.e2e

#: Seconds after a kill of the bus within which every instance must be ACTIVE again.
BUS_RECOVERY = 15.0
#: Seconds after a task manager is running again within which a build must have finished.
BUILD_RECOVERY = 30.0


@pytest.fixture(scope="module")
def healing() -> Iterator[ControlPlane]:
    """`cove up` of its own."""
    plane = ControlPlane().start()
    try:
        yield plane
    finally:
        plane.stop()


# -- finding the real processes ----------------------------------------------------------------


def bus_pid(plane: ControlPlane) -> int | None:
    # redis-server names itself after its socket once it listens.
    title = f"unixsocket:{plane.data_dir / 'run' / 'bus.sock'}"
    found = pids(lambda argv, _pid: any(title in arg for arg in argv))
    return found[0] if found else None


def service_pid(plane: ControlPlane, name: str) -> int | None:
    """The pid of ``cove up``'s child serving ``name``."""
    up = plane.procs[0].pid
    found = pids(
        lambda argv, pid: argv[-2:] == ["cove.cli.services", name] and parent_pid(pid) == up
    )
    return found[0] if found else None


def files_holding(root: Path, secret: bytes) -> list[Path]:
    """The files under ``root`` whose bytes contain ``secret`` (the instances' data directories
    aside: a server keeps its own password hashes there)."""
    found = []
    # os.walk passes over a directory removed while it walks (a spare place a restarted task
    # manager sweeps away, say), where Path.rglob raises.
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            parts = path.relative_to(root).parts
            if (parts[:1] == ("instances",) and parts[2:3] == ("data",)) or not path.is_file():
                continue
            try:
                if secret in path.read_bytes():
                    found.append(path)
            except OSError:
                continue  # gone meanwhile, or a socket
    return found


def kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


# -- what an instance must still do --------------------------------------------------------------


def create(plane: ControlPlane, name: str, datastore: str = "postgresql") -> dict[str, Any]:
    ds = DATASTORES[datastore]
    spec: dict[str, Any] = {
        "name": name,
        "datastore": {"type": datastore},
        "users": [{"name": "app", "password": f"pw-{name}-7Qz"}],
    }
    if ds.has_databases:
        spec["databases"] = [{"name": "orders"}]
        spec["users"][0]["databases"] = [{"name": "orders"}]
    return plane.create(**spec)


def serves(plane: ControlPlane, iid: str, datastore: str = "postgresql") -> bool:
    """ACTIVE, its guest answering through the API, and its user logging in."""
    inst = plane.instance(iid)
    if inst["status"] != "ACTIVE":
        return False
    if plane.http.get(f"/instances/{iid}/users").status_code != 200:
        return False
    ds = DATASTORES[datastore]
    try:
        with ds.login(inst, "app", f"pw-{inst['name']}-7Qz", "orders" if ds.has_databases else ""):
            return True
    except LOGIN_ERRORS:
        return False


def wait_serving(
    plane: ControlPlane, iid: str, timeout: float, what: str, datastore: str = "postgresql"
) -> None:
    try:
        wait_for(lambda: serves(plane, iid, datastore), timeout, 0.1, what)
    except AssertionError as exc:
        users = plane.http.get(f"/instances/{iid}/users")
        raise AssertionError(
            f"{exc}: {plane.instance(iid)}; users: {users.status_code} {users.text[:300]}\n"
            f"{plane.logs()}"
        ) from None


def deleted(plane: ControlPlane, iid: str) -> bool:
    return plane.http.get(f"/instances/{iid}").status_code == 404


# -- the embedded bus ----------------------------------------------------------------------------


def test_the_embedded_bus_is_restarted_and_everything_reconnects(healing: ControlPlane) -> None:
    plane = healing
    pg = create(plane, "bus-pg")["id"]
    rd = create(plane, "bus-redis", "redis")["id"]
    for iid in (pg, rd):
        plane.wait_status(iid, "ACTIVE")
    old = bus_pid(plane)
    assert old is not None
    # Accepted just before the bus dies: its cast may be lost with the bus, the build not.
    accepted = create(plane, "bus-accepted")["id"]
    killed = kill(old)

    new = wait_for(lambda: (p := bus_pid(plane)) not in (None, old) and p, 10, 0.02, "a new bus")
    assert new != old
    for iid, ds in ((pg, "postgresql"), (rd, "redis")):
        wait_serving(plane, iid, BUS_RECOVERY - (time.monotonic() - killed), f"{ds} serving", ds)
    assert time.monotonic() - killed < BUS_RECOVERY
    # Nothing the API accepted was lost: the build finishes with its database and user.
    wait_for(lambda: serves(plane, accepted), 60, 0.2, "the build accepted before the kill")
    assert plane.http.get("/instances").status_code == 200
    for iid in (pg, rd, accepted):
        assert plane.http.delete(f"/instances/{iid}").status_code == 202
    for iid in (pg, rd, accepted):
        wait_for(lambda i=iid: deleted(plane, i), 60, 0.2, "deletion")


# -- the task manager ----------------------------------------------------------------------------


def _instance_dir(plane: ControlPlane, iid: str) -> Path:
    return plane.data_dir / "instances" / iid


MOMENTS = {
    # Just after the API accepted the build: the cast is on its way or taken.
    "accepted": lambda plane, iid: True,
    # The driver is laying out the instance's place.
    "placing": lambda plane, iid: _instance_dir(plane, iid).exists(),
    # The guest agent runs and prepare is under way.
    "preparing": lambda plane, iid: (_instance_dir(plane, iid) / "log" / "guestagent.log").exists(),
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_a_build_survives_a_task_manager_killed(healing: ControlPlane, moment: str) -> None:
    plane = healing
    before = wait_for(lambda: service_pid(plane, "taskmanager"), 30, 0.05, "a task manager")
    iid = create(plane, f"tm-{moment}")["id"]
    wait_for(lambda: MOMENTS[moment](plane, iid), 60, 0.005, moment)
    kill(before)
    # What the build needs to resume is on disk only sealed: no password in the control
    # database (or its write-ahead log) or in the bus's directory.
    assert not files_holding(plane.data_dir, f"pw-tm-{moment}-7Qz".encode())
    again = wait_for(
        lambda: (p := service_pid(plane, "taskmanager")) not in (None, before) and p,
        30,
        0.05,
        "the task manager started again",
    )
    back = time.monotonic()
    # Never left in BUILD: ACTIVE with what was asked for (or, at worst, ERROR at once, which
    # this test does not accept either: the build is resumable from every moment).
    wait_serving(plane, iid, BUILD_RECOVERY, f"the build killed at {moment}")
    assert time.monotonic() - back < BUILD_RECOVERY
    assert service_pid(plane, "taskmanager") == again
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: deleted(plane, iid), 60, 0.2, "deletion")


def test_a_delete_survives_a_task_manager_killed(healing: ControlPlane) -> None:
    plane = healing
    iid = create(plane, "tm-delete")["id"]
    plane.wait_status(iid, "ACTIVE")
    before = wait_for(lambda: service_pid(plane, "taskmanager"), 30, 0.05, "a task manager")
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    kill(before)
    wait_for(lambda: deleted(plane, iid), BUILD_RECOVERY + 15, 0.1, "the deletion finished")
    assert not _instance_dir(plane, iid).exists()


def test_a_crash_looping_task_manager_leaves_the_api_serving(healing: ControlPlane) -> None:
    plane = healing
    iid = create(plane, "tm-loop")["id"]
    plane.wait_status(iid, "ACTIVE")
    seen: set[int] = set()
    for _ in range(5):
        pid = wait_for(
            lambda: (p := service_pid(plane, "taskmanager")) not in (None, *seen) and p,
            60,
            0.02,
            "the task manager started again",
        )
        seen.add(pid)
        kill(pid)
        # Reads keep working while the task manager is down.
        assert plane.http.get("/instances").status_code == 200
        assert plane.http.get(f"/instances/{iid}").status_code == 200
    assert plane.procs[0].poll() is None, "cove up must not stop"
    # It comes back by itself, after a growing pause, and was reported loudly.
    wait_for(
        lambda: (p := service_pid(plane, "taskmanager")) not in (None, *seen) and p,
        60,
        0.05,
        "the task manager back after the kills",
    )
    out = (plane.base / "cove.log").read_text(errors="replace")
    assert "ERROR" in out and "keeps dying" in out, out[-2000:]
    # And works: a new build finishes.
    other = create(plane, "tm-after-loop")["id"]
    wait_for(lambda: serves(plane, other), 120, 0.2, "a build after the crash loop")
    for i in (iid, other):
        assert plane.http.delete(f"/instances/{i}").status_code == 202
    for i in (iid, other):
        wait_for(lambda i=i: deleted(plane, i), 60, 0.2, "deletion")


# -- RabbitMQ ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healing_rabbit(rabbitmq_server) -> Iterator[tuple[ControlPlane, Any]]:  # type: ignore[no-untyped-def]
    # A vhost of its own: the session's other RabbitMQ plane runs meanwhile, and on one vhost
    # its conductor would take this plane's heartbeats half of the time.
    plane = ControlPlane(transport_url=rabbitmq_server.vhost("healing"), separate=True).start()
    try:
        yield plane, rabbitmq_server
    finally:
        plane.stop()


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_a_rabbitmq_restart_is_survived(healing_rabbit: tuple[ControlPlane, Any], how: str) -> None:
    """Restarted, or killed with SIGKILL and started again. The 15 s count from when the broker
    answers again: RabbitMQ itself takes several seconds to start."""
    plane, rabbit = healing_rabbit
    iid = create(plane, f"rabbit-{how}")["id"]
    plane.wait_status(iid, "ACTIVE")
    # Accepted before the broker goes: a persistent cast on a durable queue, confirmed.
    accepted = create(plane, f"rabbit-accepted-{how}")["id"]
    getattr(rabbit, how)()
    back = time.monotonic()
    try:
        wait_serving(plane, iid, BUS_RECOVERY, "the instance serving again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rabbit.diagnose('healing')}") from None
    print(f"RabbitMQ {how}: serving again {time.monotonic() - back:.1f} s after it answered")
    assert time.monotonic() - back < BUS_RECOVERY
    try:
        wait_for(lambda: serves(plane, accepted), 60, 0.2, "the build accepted before the restart")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {plane.instance(accepted)}\n{plane.logs()}\n{rabbit.diagnose('healing')}"
        ) from None
    # Every service is still the same process: they reconnected, nobody restarted them.
    assert all(proc.poll() is None for proc in plane.procs)
    for i in (iid, accepted):
        assert plane.http.delete(f"/instances/{i}").status_code == 202
    for i in (iid, accepted):
        wait_for(lambda i=i: deleted(plane, i), 60, 0.2, "deletion")


def test_the_api_answers_503_without_the_bus_and_names_no_bus(healing: ControlPlane) -> None:
    """With the bus down and not yet back, a guest read is a Trove 503 that names no socket."""
    plane = healing
    iid = create(plane, "no-bus", "redis")["id"]
    plane.wait_status(iid, "ACTIVE")
    client = httpx.Client(base_url=plane.http.base_url, headers=plane.http.headers, timeout=60)
    # Stop the supervisor from starting the bus again for a moment: SIGSTOP cove up itself.
    up = plane.procs[0].pid
    os.kill(up, signal.SIGSTOP)
    try:
        old = bus_pid(plane)
        assert old is not None
        kill(old)
        wait_for(lambda: bus_pid(plane) is None, 10, 0.02, "the bus gone")
        resp = client.get(f"/instances/{iid}/users")
    finally:
        os.kill(up, signal.SIGCONT)
    assert resp.status_code == 503, resp.text
    body = resp.text
    assert "bus.sock" not in body and str(plane.data_dir) not in body and "redis" not in body
    wait_for(lambda: serves(plane, iid, "redis"), BUS_RECOVERY, 0.1, "serving again")
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: deleted(plane, iid), 60, 0.2, "deletion")
