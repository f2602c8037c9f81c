"""The local driver's host-level checks that need no agent, and its care inside instance
directories, whose contents belong to a service user that may be hostile: planted links are
never followed and pids read from the instance's files are signalled only when they are the
instance's own processes. Real files and real processes throughout."""

import dataclasses
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.common.errors import UnsafePath
from cove.common.settings import load_settings
from cove.compute.local import LocalDriver
from cove.domain.guest import GuestSettings
from cove.domain.status import ComputeState

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs a service user other than us")

PRECIOUS = "precious\n"


def test_an_address_bound_by_someone_else_is_not_usable(tmp_path):
    tmp_path.chmod(0o755)
    driver = LocalDriver(load_settings(data_dir=tmp_path), check=False)
    with socket.socket() as holder:
        holder.bind(("127.42.250.7", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not driver.address_usable("127.42.250.7", port)
        assert driver.address_usable("127.42.250.8", port)


def test_instances_dir_layout(tmp_path):
    tmp_path.chmod(0o755)
    LocalDriver(load_settings(data_dir=tmp_path), check=False)
    assert list((tmp_path / "instances").iterdir()) == []
    assert (tmp_path / "instances").stat().st_mode & 0o777 == 0o711
    # As root, the service user makes templates and every instance's user reads them.
    shared = 0o750 if os.geteuid() == 0 else 0o700
    assert (tmp_path / "templates").stat().st_mode & 0o777 == shared


# -- an instance laid out without an agent ---------------------------------------------------


class Placed:
    def __init__(self, tmp_path: Path) -> None:
        tmp_path.chmod(0o755)
        self.driver = LocalDriver(load_settings(data_dir=tmp_path / "d"), check=False)
        self.spec = GuestSettings(
            instance_id="inst-1",
            datastore="postgresql",
            datastore_version="15",
            bin_dir="/nonexistent",
            address="127.42.250.9",
            port=5432,
            ram_mb=256,
            vcpus=1,
            volume_gb=1,
            transport_url="redis://127.0.0.1:1",
            heartbeat_interval=5,
        )
        self.id = self.spec.instance_id
        self.base = self.driver.instance_dir(self.id)
        self.config = self.driver.config_path(self.id)
        self.lock = self.base / "run" / "guestagent.lock"
        self.pidfile = self.base / "data" / "postmaster.pid"
        self.driver._lay_out(self.spec)
        # Files and a directory outside the instance, as root leaves them.
        self.outside = tmp_path / "outside"
        self.outside.write_text(PRECIOUS)
        self.outside.chmod(0o644)
        self.elsewhere = tmp_path / "elsewhere"
        self.elsewhere.mkdir(mode=0o755)
        (self.elsewhere / "file").write_text(PRECIOUS)
        self.before = {p: p.stat() for p in (self.outside, self.elsewhere)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def plant_link(self, path: Path, target: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            os.rename(path, path.with_name(path.name + ".moved"))
        else:
            path.unlink(missing_ok=True)
        path.symlink_to(target)

    def assert_outside_untouched(self) -> None:
        assert self.outside.read_text() == PRECIOUS
        assert sorted(p.name for p in self.elsewhere.iterdir()) == ["file"]
        assert (self.elsewhere / "file").read_text() == PRECIOUS
        for path, before in self.before.items():
            st = path.stat()
            assert (st.st_uid, st.st_gid, st.st_mode) == (
                before.st_uid,
                before.st_gid,
                before.st_mode,
            )

    def start(self, argv: list[str], *, service_user: bool, cwd: Path | str = "/") -> int:
        switch = service_user and self.driver.identity.switch
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            user=self.driver.uid if switch else None,
            group=self.driver.gid if switch else None,
            extra_groups=[] if switch else None,
            start_new_session=True,
            # A run started in the background by a shell ignores SIGINT, and its children
            # would too: these stand for servers, which take SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.procs.append(proc)
        # Until it has run exec, the child is still a copy of this test.
        expected = b"".join(arg.encode() + b"\0" for arg in argv)
        _wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes() == expected)
        return proc.pid

    def write_pid(self, path: Path, pid: int) -> None:
        path.write_text(f"{pid}\n")
        os.chown(path, self.driver.uid, self.driver.gid)

    def hold_lock(self, pid: int) -> int:
        """Hold the agent lock the way a live agent does, with ``pid`` written in it."""
        fd = os.open(self.lock, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{pid}\n".encode())
        return fd

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def placed(tmp_path: Path) -> Iterator[Placed]:
    p = Placed(tmp_path)
    try:
        yield p
    finally:
        p.close()


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_lay_out_makes_the_instance_directory_for_the_service_user(placed):
    for path in (
        placed.base,
        *(placed.base / sub for sub in ("data", "conf", "log", "run", "tmp")),
    ):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (placed.driver.uid, placed.driver.gid)
    for path in (placed.config, placed.lock):
        st = os.lstat(path)
        assert st.st_uid == placed.driver.uid
        assert st.st_mode & 0o777 == 0o600
    assert [p.name for p in placed.driver.root.iterdir()] == [placed.id]
    assert placed.driver.agent_pid(placed.id) is None
    assert placed.driver.state(placed.id) is ComputeState.SHUTDOWN


def test_write_private_never_writes_through_a_planted_temporary_link(placed):
    placed.plant_link(placed.config.with_name("guest.json.tmp"), placed.outside)
    placed.driver._write_private(placed.config, '{"written": true}')
    placed.assert_outside_untouched()
    assert not placed.config.is_symlink()
    assert placed.config.read_text() == '{"written": true}'
    assert placed.config.stat().st_uid == placed.driver.uid
    assert not os.path.lexists(placed.config.with_name("guest.json.tmp"))


def test_write_private_refuses_a_linked_directory(placed):
    placed.plant_link(placed.base / "conf", placed.elsewhere)
    with pytest.raises(UnsafePath, match="conf"):
        placed.driver._write_private(placed.config, "{}")
    placed.assert_outside_untouched()


def test_lay_out_replaces_planted_links(placed):
    placed.plant_link(placed.base / "log", placed.elsewhere)
    placed.plant_link(placed.base / "conf", placed.elsewhere)
    placed.plant_link(placed.lock, placed.outside)
    placed.driver._lay_out(placed.spec)
    placed.assert_outside_untouched()
    for sub in ("log", "conf"):
        st = os.lstat(placed.base / sub)
        assert os.path.isdir(placed.base / sub) and not (placed.base / sub).is_symlink()
        assert st.st_uid == placed.driver.uid
    assert placed.config.is_file() and not placed.config.is_symlink()
    assert placed.lock.is_file() and not placed.lock.is_symlink()
    assert placed.driver.agent_pid(placed.id) is None


def test_a_linked_instance_directory_is_refused(placed):
    other = placed.driver.instance_dir("inst-2")
    other.symlink_to(placed.elsewhere)
    with pytest.raises(UnsafePath):
        placed.driver._lay_out(dataclasses.replace(placed.spec, instance_id="inst-2"))
    placed.assert_outside_untouched()


def test_the_agent_log_is_never_opened_through_a_link(placed):
    placed.plant_link(placed.base / "log" / "guestagent.log", placed.outside)
    with pytest.raises(UnsafePath, match=r"guestagent\.log"):
        placed.driver.ensure_running(placed.id)
    assert placed.id not in placed.driver._spawned
    placed.assert_outside_untouched()


@as_root
def test_the_agent_log_is_never_a_hard_link_to_a_foreign_file(placed):
    os.link(placed.outside, placed.base / "log" / "guestagent.log")
    with pytest.raises(UnsafePath, match="owned by uid"):
        placed.driver.ensure_running(placed.id)
    assert placed.id not in placed.driver._spawned
    placed.assert_outside_untouched()


@as_root
def test_a_start_killed_while_making_the_log_leaves_no_log_of_the_wrong_owner(placed, monkeypatch):
    """A task manager killed between creating the agent's log and giving it to the service
    user must not leave a log every later start refuses."""
    from cove.compute import localfs

    log = placed.base / "log" / "guestagent.log"
    real_fchown = os.fchown

    def killed(fd: int, uid: int, gid: int) -> None:
        raise KeyboardInterrupt  # stands for the SIGKILL in the middle

    monkeypatch.setattr(os, "fchown", killed)
    with pytest.raises(KeyboardInterrupt):
        localfs.open_log(placed.driver.root, placed.driver._parts(log), placed.driver.uid, 0)
    monkeypatch.setattr(os, "fchown", real_fchown)
    assert not log.exists()
    fd = localfs.open_log(
        placed.driver.root, placed.driver._parts(log), placed.driver.uid, placed.driver.gid
    )
    os.close(fd)
    assert log.stat().st_uid == placed.driver.uid
    assert [p.name for p in log.parent.iterdir()] == ["guestagent.log"]


def test_the_agent_lock_is_never_read_through_a_link_or_a_fifo(placed):
    placed.plant_link(placed.lock, placed.outside)
    with pytest.raises(UnsafePath, match=r"guestagent\.lock"):
        placed.driver.agent_pid(placed.id)
    assert placed.driver.state(placed.id) is ComputeState.ERROR
    placed.lock.unlink()
    os.mkfifo(placed.lock)
    started = time.monotonic()
    with pytest.raises(UnsafePath, match="not a regular file"):
        placed.driver.agent_pid(placed.id)
    assert time.monotonic() - started < 5
    placed.assert_outside_untouched()
    # Destroy still removes everything.
    placed.driver.destroy(placed.id)
    assert not os.path.lexists(placed.base)


def test_destroy_does_not_signal_processes_of_someone_else(placed):
    # Our own processes (root's, when the tests run as root) named in the instance's files.
    in_lock = placed.start(["sleep", "600"], service_user=False)
    in_pidfile = placed.start(["sleep", "600"], service_user=False)
    fd = placed.hold_lock(in_lock)
    try:
        assert placed.driver.agent_pid(placed.id) == in_lock
        placed.write_pid(placed.pidfile, in_pidfile)
        placed.driver.destroy(placed.id)
    finally:
        os.close(fd)
    assert not os.path.lexists(placed.base)
    assert all(_alive(p) for p in placed.procs)


@as_root
def test_destroy_does_not_signal_other_processes_of_the_service_user(placed):
    # The service user's processes, but neither this instance's agent nor its server.
    in_lock = placed.start(["sleep", "600"], service_user=True)
    in_pidfile = placed.start(["sleep", "600"], service_user=True, cwd=placed.elsewhere)
    fd = placed.hold_lock(in_lock)
    try:
        placed.write_pid(placed.pidfile, in_pidfile)
        placed.driver.destroy(placed.id)
    finally:
        os.close(fd)
    assert not os.path.lexists(placed.base)
    assert all(_alive(p) for p in placed.procs)


def test_destroy_stops_the_instance_s_own_processes(placed):
    agent = placed.start(
        [sys.executable, "-c", "import time; time.sleep(600)", "--config", str(placed.config)],
        service_user=True,
    )
    server = placed.start(["sleep", "600"], service_user=True, cwd=placed.base / "data")
    fd = placed.hold_lock(agent)
    try:
        placed.write_pid(placed.pidfile, server)
        placed.driver.destroy(placed.id)
    finally:
        os.close(fd)
    assert not os.path.lexists(placed.base)
    for proc, sig in zip(placed.procs, (signal.SIGTERM, signal.SIGINT), strict=True):
        assert proc.wait(10) == -sig


def test_a_fence_kills_what_the_server_left_paused_in_its_data_directory(placed):
    # A server's child in a session of its own (as PostgreSQL's are), paused with its
    # server: the server's death does not reach it.
    server = placed.start(["sleep", "600"], service_user=True, cwd=placed.base / "data")
    child = placed.start(["sleep", "600"], service_user=True, cwd=placed.base / "data")
    os.kill(child, signal.SIGSTOP)
    placed.write_pid(placed.pidfile, server)
    placed.driver.fence(placed.id)
    server_proc, child_proc = placed.procs
    assert server_proc.wait(10) == -signal.SIGKILL
    assert child_proc.wait(10) == -signal.SIGKILL


def test_destroy_stops_an_agent_that_does_not_hold_the_lock_yet(placed):
    # Started by another task manager, say, and not yet holding the lock.
    placed.start(
        [sys.executable, "-c", "import time; time.sleep(600)", "--config", str(placed.config)],
        service_user=True,
    )
    placed.driver.destroy(placed.id)
    assert placed.procs[0].wait(10) == -signal.SIGTERM
    assert not os.path.lexists(placed.base)


def test_remove_file_also_removes_a_planted_directory(tmp_path):
    from cove.compute.localfs import remove_file

    (tmp_path / "inst" / "conf" / "guest.json").mkdir(parents=True)
    (tmp_path / "inst" / "conf" / "guest.json" / "x").write_text("x")
    remove_file(tmp_path, "inst", "conf", "guest.json")
    assert not (tmp_path / "inst" / "conf" / "guest.json").exists()


def test_a_data_directory_others_can_change_is_refused(tmp_path):
    from cove.common.errors import ConfigurationError
    from cove.common.settings import load_settings as _load

    data = tmp_path / "d"
    data.mkdir()
    data.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable by no one else"):
        LocalDriver(_load(data_dir=data), check=False)


def test_redis_is_found_with_its_version():
    from cove.compute.discovery import find_redis

    found = find_redis()
    assert found, "redis-server is installed by the install step"
    assert found[0].datastore == "redis" and found[0].name.count(".") == 1
    assert found[0].version.startswith(found[0].name + ".")


def test_update_rewrites_the_settings_and_returns_the_old_ones(placed):
    import dataclasses

    def unplaced(settings: GuestSettings | None) -> GuestSettings | None:
        # The driver fills in where the instance lives; the rest is the caller's.
        if settings is None:
            return None
        assert settings.instance_dir == str(placed.driver.instance_dir(settings.instance_id))
        return dataclasses.replace(settings, instance_dir="", template_dir=None)

    bigger = dataclasses.replace(placed.spec, ram_mb=1024, overrides={"work_mem": 4096})
    assert unplaced(placed.driver.update(bigger)) == placed.spec
    written = json.loads(placed.config.read_text())
    assert written["ram_mb"] == 1024 and written["overrides"] == {"work_mem": 4096}
    assert unplaced(placed.driver.update(placed.spec)) == bigger
    # Settings it cannot read are reported as unknown, never guessed.
    placed.config.write_text("{not json")
    assert placed.driver.update(bigger) is None


def test_an_instance_is_run_by_whom_its_directory_belongs_to(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    driver = LocalDriver(load_settings(data_dir=tmp_path), check=False)
    base = driver.instance_dir("made-before")
    base.mkdir()
    if os.geteuid() != 0:
        assert driver.owner("made-before") == driver.identity  # whoever runs Cove
        return
    # Made before instances had users of their own: the service user's.
    os.chown(base, driver.uid, driver.gid)
    assert driver.owner("made-before") == driver.identity
    # Given to another user: that one, told by its uid even without a name.
    other = driver.instance_dir("another")
    other.mkdir()
    os.chown(other, 2_099_999_999, driver.gid)
    owner = driver.owner("another")
    assert (owner.uid, owner.gid, owner.name) == (2_099_999_999, driver.gid, "2099999999")


def test_a_tree_is_changed_without_following_links(tmp_path: Path) -> None:
    from cove.compute import localfs

    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o600)
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "file").write_text("y")
    (top / "link").symlink_to(outside)
    gid = os.getgid()
    assert localfs.set_tree(top, gid, 0o750, 0o640) == 2
    assert (top / "sub").stat().st_mode & 0o7777 == 0o750
    assert (top / "sub" / "file").stat().st_mode & 0o777 == 0o640
    assert outside.stat().st_mode & 0o777 == 0o600  # the link's target is left alone
    assert localfs.set_tree(top, gid, 0o750, 0o640) == 0  # nothing more to change


def test_a_host_lock_is_root_s_alone_and_no_link(tmp_path: Path) -> None:
    from cove.compute import localfs

    path = tmp_path / "locks" / "a.lock"
    with localfs.host_lock(path):
        assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    planted = tmp_path / "locks" / "b.lock"
    planted.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError), localfs.host_lock(planted):
        pass
    assert not (tmp_path / "elsewhere").exists()
