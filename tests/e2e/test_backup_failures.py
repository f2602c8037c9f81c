"""Backups that fail end cleanly, on a running Cove with real processes: a guest agent killed
with SIGKILL mid-backup, a store that is stopped, not writable or full, a backup past its
deadline. Each ends FAILED with a message saying why (never a credential), leaves nothing of
itself in the store and no tool process behind, and the instance serves throughout.

A backup is held in its middle without relying on timing: the S3 server is paused (SIGSTOP)
before the backup is asked for, so the guest, which starts the tool before it first talks to
the store, stays with the tool running and its output waiting in the pipe; the test then pauses
the tool itself and lets the store go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import ControlPlane, wait_for
from procs import parent_pid, pids, read_proc, state_of

from cove.db.engine import Database
from cove.db.models import Backup
from servers import S3Server, ServerStartError, remove_tree, start_s3

pytestmark = pytest.mark.e2e

PASSWORD = "fail-Pw-5523"
BUCKET = "cove-fail"
#: The task manager's deadline for a backup on the S3 plane: long enough for the other tests'
#: backups, short enough to wait for once.
BACKUP_TIMEOUT = 40


# -- planes --------------------------------------------------------------------------------------


class S3Plane:
    """A Cove whose store is a private SeaweedFS, which the tests pause, stop and start."""

    def __init__(self, plane: ControlPlane, s3: S3Server) -> None:
        self.plane = plane
        self.s3 = s3
        assert s3.proc is not None
        self._argv = list(s3.proc.args)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The S3 server stopped in its tracks (it accepts connections, answers nothing)."""
        assert self.s3.proc is not None
        os.killpg(self.s3.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.s3.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.s3.stop()

    def start(self) -> None:
        """Start it again, with its data and on its ports."""
        with (self.s3.directory / "weed.log").open("ab") as sink:
            self.s3.proc = subprocess.Popen(
                self._argv,
                cwd=self.s3.directory,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.s3._ready, 60, 0.2, "the S3 server answering again")

    def leftovers(self, backup_id: str) -> list[str]:
        """What the store holds of the backup: objects and unfinished uploads."""
        client = self.s3.client()
        try:
            objects = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
            uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        except client.exceptions.NoSuchBucket:
            return []
        return [o["Key"] for o in objects + uploads if backup_id in o["Key"]]


def _start_s3(base: Path) -> S3Server:
    """A private SeaweedFS; started again when one of the many ports it opens was taken by
    another process between being chosen and being bound."""
    for attempt in range(3):
        try:
            return start_s3(base)
        except ServerStartError as exc:
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def s3_plane() -> Iterator[S3Plane]:
    base = Path(tempfile.mkdtemp(prefix="cove-test-"))
    base.chmod(0o755)
    s3 = _start_s3(base)
    plane = ControlPlane(
        extra_env={
            "COVE_BACKUP_STORE": "s3",
            "COVE_BACKUP_LOCATION": s3.endpoint,
            "COVE_BACKUP_CONTAINER": BUCKET,
            "COVE_BACKUP_ACCESS_KEY": s3.access_key,
            "COVE_BACKUP_SECRET_KEY": s3.secret_key,
            "COVE_BACKUP_TIMEOUT": str(BACKUP_TIMEOUT),
        }
    )
    try:
        plane.start()
        yield S3Plane(plane, s3)
    finally:
        plane.stop()
        s3.stop()
        remove_tree(base)


@pytest.fixture(scope="module")
def fs_plane() -> Iterator[tuple[ControlPlane, Path, bool]]:
    """A Cove whose filesystem store is a 1 MiB tmpfs when the tests run as root (a store that
    fills up), its data directory's store otherwise; (plane, store root, whether it is small)."""
    small = os.geteuid() == 0
    mount = Path(tempfile.mkdtemp(prefix="cove-full-"))
    if small:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "cove-test-full", str(mount)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    env = {"COVE_BACKUP_LOCATION": str(mount)} if small else {}
    plane = ControlPlane(extra_env=env)
    try:
        plane.start()
        yield plane, (mount if small else plane.data_dir / "backups"), small
    finally:
        plane.stop()
        if small:
            subprocess.run(["umount", str(mount)], check=True, capture_output=True, timeout=60)
        remove_tree(mount)


# -- real processes ------------------------------------------------------------------------------


def tool_pids(plane: ControlPlane, iid: str) -> list[int]:
    """The live pg_basebackup processes working for instance ``iid``."""
    where = str(plane.data_dir / "instances" / iid)

    def tool(argv: list[str], pid: int) -> bool:
        ours = Path(argv[0]).name == "pg_basebackup" and any(where in a for a in argv)
        return ours and state_of(pid) != "Z"

    return pids(tool)


def alive(pid: int) -> bool:
    state = state_of(pid)
    return state is not None and state != "Z"


@contextlib.contextmanager
def held(pid: int) -> Iterator[int]:
    """The tool ``pid`` paused (SIGSTOP) for the block; it is never left paused or running
    afterwards, whatever the test did meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def kill_if_tool(plane: ControlPlane, iid: str, pid: int) -> None:
    """SIGKILL ``pid`` if it is still a tool of ``iid`` (cleaning up after a failed test)."""
    if pid in tool_pids(plane, iid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- the API -------------------------------------------------------------------------------------


def create(plane: ControlPlane, name: str) -> tuple[str, dict[str, Any]]:
    iid = plane.create(
        name=name,
        databases=[{"name": "shop"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
    )["id"]
    return iid, plane.wait_status(iid, "ACTIVE")


def pg(inst: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=inst["ip"][0], user="app", password=PASSWORD, dbname="shop", autocommit=True
    )


def fill(inst: dict[str, Any], megabytes: int = 4) -> None:
    """Data the backup must carry: incompressible, so its artifact is at least as large."""
    with pg(inst) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS blobs (id serial PRIMARY KEY, data bytea)")
        for _ in range(megabytes):
            conn.execute("INSERT INTO blobs (data) VALUES (%s)", (os.urandom(1 << 20),))


def start_backup(plane: ControlPlane, iid: str, **extra: Any) -> str:
    resp = plane.http.post("/backups", json={"backup": {"name": "b", "instance": iid, **extra}})
    assert resp.status_code == 202, resp.text
    backup_id: str = resp.json()["backup"]["id"]
    return backup_id


def backup_view(plane: ControlPlane, backup_id: str) -> dict[str, Any]:
    resp = plane.http.get(f"/backups/{backup_id}")
    assert resp.status_code == 200, resp.text
    view: dict[str, Any] = resp.json()["backup"]
    return view


def wait_backup(plane: ControlPlane, backup_id: str, status: str, timeout: float = 180) -> str:
    """Wait until the backup reads ``status``; its fault message, as the control database
    records it (Trove's backup view has none)."""
    try:
        wait_for(lambda: backup_view(plane, backup_id)["status"] == status, timeout, 0.2, status)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {backup_view(plane, backup_id)}\n{plane.logs()}") from None
    return row(plane, backup_id).fault_message or ""


def row(plane: ControlPlane, backup_id: str) -> Backup:
    db = Database(plane.database_url)
    try:
        with db.session() as s:
            found = s.get(Backup, backup_id)
            assert found is not None
            return found
    finally:
        db.dispose()


def wait_tidied(plane: ControlPlane, backup_id: str) -> None:
    """Wait until the task manager removed what the failed backup left in its store: FAILED
    is recorded first, marked untidy in the same update, and the mark cleared once done."""
    wait_for(lambda: row(plane, backup_id).checksum is None, 120, 0.1, "the store tidied up")


def guest_log(plane: ControlPlane, iid: str) -> str:
    path = plane.data_dir / "instances" / iid / "log" / "guestagent.log"
    return path.read_text(errors="replace")


def hold_mid_backup(s3p: S3Plane, iid: str) -> tuple[str, int]:
    """Ask for a backup of ``iid`` and hold it in its middle: the tool running and paused,
    the upload begun. Returns the backup id and the tool's pid (paused: resume it with
    SIGCONT)."""
    plane = s3p.plane
    with s3p.paused():
        backup_id = start_backup(plane, iid)
        (tool,) = wait_for(lambda: tool_pids(plane, iid), 120, 0.05, "the backup tool")
        os.kill(tool, signal.SIGSTOP)
    wait_for(lambda: backup_view(plane, backup_id)["status"] == "BUILDING", 60, 0.1, "BUILDING")
    wait_for(lambda: s3p.leftovers(backup_id), 60, 0.1, "the upload begun")
    return backup_id, tool


# -- the tests -----------------------------------------------------------------------------------


def test_a_guest_agent_killed_mid_backup_fails_it_and_leaves_nothing(s3_plane: S3Plane) -> None:
    plane = s3_plane.plane
    iid, inst = create(plane, "fail-agent")
    fill(inst)
    backup_id, tool = hold_mid_backup(s3_plane, iid)
    try:
        agent = parent_pid(tool)
        assert (
            agent is not None
            and "guestagent" in (read_proc(f"/proc/{agent}/cmdline") or b"").decode()
        )
        os.kill(agent, signal.SIGKILL)
        # The paused tool does not outlive its agent: it is woken and ends on the closed pipe
        # (or by the kernel's hang-up of the agent's process group).
        os.kill(tool, signal.SIGCONT)
        wait_for(lambda: not alive(tool), 30, 0.05, "the orphaned tool to end")

        fault = wait_backup(plane, backup_id, "FAILED")
        assert "guest agent stopped while the backup ran" in fault, fault
        wait_tidied(plane, backup_id)
        assert s3_plane.leftovers(backup_id) == []
        back = plane.wait_status(iid, "ACTIVE")
        with pg(back) as conn:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (4,)
        # Never started a second time by the new agent.
        assert guest_log(plane, iid).count(f"as {iid}/{backup_id}.cbk") == 1
        assert tool_pids(plane, iid) == []
    finally:
        kill_if_tool(plane, iid, tool)
    assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_the_instance_serves_reads_and_writes_while_a_backup_runs(s3_plane: S3Plane) -> None:
    plane = s3_plane.plane
    iid, inst = create(plane, "fail-serving")
    fill(inst, 2)
    backup_id, tool = hold_mid_backup(s3_plane, iid)
    try:
        assert plane.instance(iid)["status"] == "BACKUP"
        with pg(inst) as conn:
            conn.execute("CREATE TABLE during (n int)")
            for n in range(200):
                conn.execute("INSERT INTO during VALUES (%s)", (n,))
            assert conn.execute("SELECT count(*), sum(n) FROM during").fetchone() == (200, 19900)
            assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (2,)
        # All of it while the backup was running, mid-stream.
        assert alive(tool) and state_of(tool) == "T"
        assert backup_view(plane, backup_id)["status"] == "BUILDING"
        os.kill(tool, signal.SIGCONT)
        wait_backup(plane, backup_id, "COMPLETED")
        stored = row(plane, backup_id).size  # bytes (the API shows GB)
        assert stored is not None and stored > 2 << 20
        with pg(inst) as conn:
            conn.execute("INSERT INTO during VALUES (200)")
        plane.wait_status(iid, "ACTIVE")
    finally:
        kill_if_tool(plane, iid, tool)
    assert plane.http.delete(f"/backups/{backup_id}").status_code == 202
    assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_a_backup_past_its_deadline_is_cancelled_on_the_guest(s3_plane: S3Plane) -> None:
    plane = s3_plane.plane
    iid, inst = create(plane, "fail-deadline")
    fill(inst, 1)
    backup_id, tool = hold_mid_backup(s3_plane, iid)
    try:
        # The tool stays paused: only the deadline ends this backup.
        fault = wait_backup(plane, backup_id, "FAILED", BACKUP_TIMEOUT + 120)
        assert fault == "The backup did not finish in time.", fault
        # The task manager cancelled it on the guest before recording the failure: the tool
        # is gone (the guest's own deadline comes 30 s later, too late for this wait).
        wait_for(lambda: not alive(tool), 10, 0.05, "the tool killed by the cancel")
        assert f"stopping backup {backup_id}: it was cancelled by the task manager" in guest_log(
            plane, iid
        )
        wait_tidied(plane, backup_id)
        assert s3_plane.leftovers(backup_id) == []
        plane.wait_status(iid, "ACTIVE")
    finally:
        kill_if_tool(plane, iid, tool)
    assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_a_stopped_store_fails_the_backup_and_is_tidied_once_back(s3_plane: S3Plane) -> None:
    plane, s3 = s3_plane.plane, s3_plane.s3
    iid, _inst = create(plane, "fail-store-away")
    s3_plane.stop()
    try:
        backup_id = start_backup(plane, iid)
        fault = wait_backup(plane, backup_id, "FAILED")
        assert f"S3 store at {s3.endpoint}" in fault, fault
        assert s3.secret_key not in fault and s3.access_key not in fault
        assert s3.secret_key not in plane.http.get(f"/backups/{backup_id}").text
        assert tool_pids(plane, iid) == []
        # The task manager could not tidy the store up: it remembers to.
        assert row(plane, backup_id).checksum == "untidy"
    finally:
        s3_plane.start()
    wait_for(lambda: row(plane, backup_id).checksum is None, 180, 0.5, "the tidy-up retried")
    assert s3_plane.leftovers(backup_id) == []
    plane.wait_status(iid, "ACTIVE")
    assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_a_store_that_refuses_writes_fails_the_backup_naming_it(
    fs_plane: tuple[ControlPlane, Path, bool],
) -> None:
    plane, root, _small = fs_plane
    iid, _inst = create(plane, "fail-readonly")
    # The instance's directory in the store, made by someone else and closed to the guest
    # (the container above it as the guest would have made it).
    container = root / "cove-backups"
    container.mkdir(mode=0o700, exist_ok=True)
    owner = root.stat()
    os.chown(container, owner.st_uid, owner.st_gid)
    (container / iid).mkdir(mode=0o555)
    if os.geteuid() == 0:
        os.chown(container / iid, 0, 0)
    backup_id = start_backup(plane, iid)
    fault = wait_backup(plane, backup_id, "FAILED")
    assert "filesystem store" in fault and "Permission denied" in fault, fault
    assert not any(backup_id in p.name for p in root.rglob("*"))
    assert tool_pids(plane, iid) == []
    plane.wait_status(iid, "ACTIVE")
    assert plane.http.delete(f"/instances/{iid}").status_code == 202


def test_a_full_store_fails_the_backup_saying_so(
    fs_plane: tuple[ControlPlane, Path, bool],
) -> None:
    plane, root, small = fs_plane
    if not small:
        pytest.skip("a store that fills up is a small tmpfs, which only root can mount")
    iid, inst = create(plane, "fail-full")
    fill(inst, 3)  # more than the 1 MiB store holds, however well it compresses
    backup_id = start_backup(plane, iid)
    fault = wait_backup(plane, backup_id, "FAILED")
    assert "filesystem store" in fault and "full" in fault, fault
    assert not any(backup_id in p.name for p in root.rglob("*"))
    assert tool_pids(plane, iid) == []
    plane.wait_status(iid, "ACTIVE")
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
