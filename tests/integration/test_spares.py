"""Spare places (``compute/spares.py``) with the real local driver as root: a create takes a
ready user, volume, control group and waiting agent, and nothing of a spare outlives it."""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from guesthost import Host

from cove.common import procfs
from cove.common.service_user import instance_user, instance_user_name
from cove.compute import volumes
from cove.compute.local import LocalDriver
from cove.compute.spares import Spare, Spares
from cove.domain.guest import GuestSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root makes spare places"),
]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _spares(driver: LocalDriver) -> Spares:
    if driver.spares is None:
        pytest.skip("this host cannot make spare places (no volumes or control groups)")
    return driver.spares


def _ready(spares: Spares) -> list[Spare]:
    wait_for(lambda: len(spares._ready) == spares.size, 60, "spare places to be ready")
    return list(spares._ready)


def _gone(spare: Spare, spares: Spares) -> None:
    """Nothing of ``spare`` is left: user, processes, mount, image, group."""
    with pytest.raises(KeyError):
        pwd.getpwnam(spare.user.name)
    assert not procfs.processes_of(spare.user.uid)
    assert not os.path.ismount(spare.base) and not spare.base.exists()
    assert not spares.volumes.image(spare.sid).exists()
    assert not spares.cgroups.pids(spare.group)
    for group in spares.cgroups._dirs(spare.group).values():
        assert not group.exists()


def test_a_create_takes_a_ready_spare_and_its_agent_serves(host: Host) -> None:
    driver = host.driver
    spares = _spares(driver)
    spare = _ready(spares)[0]
    assert spare.agent is not None
    waiting = spare.agent.pid
    # Confined and shown as an agent before it knows its instance.
    assert spares.cgroups.contains(spare.group, waiting)
    assert procfs.owned_by(waiting, spare.user.uid)
    spec = host.spec_of("redis")
    host.create(spec, prepare=True)
    base = driver.instance_dir(spec.instance_id)
    # The spare's volume, user, group and agent are the instance's now.
    assert os.path.ismount(base) and volumes.mounted_device(base) is not None
    assert driver.volumes is not None and driver.volumes.exists(spec.instance_id)
    assert not spare.base.exists() and not spares.volumes.image(spare.sid).exists()
    assert (
        driver.owner(spec.instance_id).name
        == spare.user.name
        != instance_user_name(spec.instance_id)
    )
    assert base.stat().st_uid == spare.user.uid
    assert driver.agent_pid(spec.instance_id) == waiting
    assert str(driver.config_path(spec.instance_id)) in procfs.cmdline(waiting)
    assert driver.cgroups is not None and driver.cgroups.contains(spec.instance_id, waiting)
    assert host.call(spec.instance_id, "get_status") == "healthy"
    # The flavor's limits, written on the renamed group.
    assert driver.cgroups.limits(spec.instance_id).memory_bytes == spec.ram_mb << 20
    # The pool fills up again, with new spares.
    assert spare.sid not in {s.sid for s in _ready(spares)}


def test_a_larger_volume_is_grown_from_the_spare_size(host: Host) -> None:
    spares = _spares(host.driver)
    _ready(spares)
    spare = _ready(spares)[0]
    spec = dataclasses.replace(host.spec_of("redis"), volume_gb=2)
    host.create(spec)
    assert host.driver.owner(spec.instance_id).name == spare.user.name
    assert host.driver.volumes is not None
    image = host.driver.volumes.image(spec.instance_id)
    assert image.stat().st_size == 2 * volumes.GIB
    assert os.statvfs(host.driver.instance_dir(spec.instance_id)).f_blocks * os.statvfs(
        host.driver.instance_dir(spec.instance_id)
    ).f_frsize > int(1.5 * volumes.GIB)


def test_deleting_an_instance_made_from_a_spare_removes_its_user(host: Host) -> None:
    driver = host.driver
    spares = _spares(driver)
    spare = _ready(spares)[0]
    spec = host.spec_of("redis")
    host.create(spec, prepare=True)
    assert driver.owner(spec.instance_id).name == spare.user.name
    host.created.remove(spec.instance_id)
    driver.destroy(spec.instance_id)
    with pytest.raises(KeyError):
        pwd.getpwnam(spare.user.name)
    assert not driver.instance_dir(spec.instance_id).exists()
    assert not (driver.owners_dir / spec.instance_id).exists()
    assert driver.volumes is not None and not driver.volumes.exists(spec.instance_id)


def test_a_delete_cut_short_after_the_directory_went_still_finds_the_user(host: Host) -> None:
    driver = host.driver
    spare = _ready(_spares(driver))[0]
    spec = host.spec_of("redis")
    host.create(spec)
    host.created.remove(spec.instance_id)
    driver.destroy(spec.instance_id)
    # As if the task manager died after the directory went, before the user did.
    (driver.owners_dir / spec.instance_id).write_text(spare.user.name + "\n")
    driver._owners.clear()
    uid = _make_user(spare.user.name, driver.gid)
    try:
        driver.destroy(spec.instance_id)
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
        assert not (driver.owners_dir / spec.instance_id).exists()
    finally:
        subprocess.run(["userdel", spare.user.name], capture_output=True, check=False)


def _make_user(name: str, gid: int) -> int:
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "-g", str(gid), name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name).pw_uid


def test_close_removes_every_spare_not_taken(host: Host) -> None:
    spares = _spares(host.driver)
    ready = _ready(spares)
    host.driver.close()
    for spare in ready:
        _gone(spare, spares)
    assert not spares.pool.exists()
    host.driver.close()  # idempotent


def test_the_spares_of_a_task_manager_that_died_are_removed_by_the_next(host: Host) -> None:
    driver = host.driver
    spares = _spares(driver)
    ready = _ready(spares)
    _die(spares)
    assert all(os.path.ismount(spare.base) for spare in ready)
    again = LocalDriver(host.settings)
    try:
        for spare in ready:
            _gone(spare, spares)
        assert not spares.pool.exists()
        assert again.spares is not None and again.spares.pool != spares.pool
    finally:
        again.close()
    driver.spares = None  # already gone


def test_a_live_task_manager_keeps_its_spares_when_another_starts(host: Host) -> None:
    spares = _spares(host.driver)
    ready = _ready(spares)
    again = LocalDriver(host.settings)
    try:
        assert all(os.path.ismount(spare.base) for spare in ready)
        assert all(s.agent is not None and procfs.alive(s.agent.pid) for s in ready)
    finally:
        again.close()


def test_creates_at_once_take_spares_or_make_their_own(host: Host) -> None:
    spares = _spares(host.driver)
    ready = {s.user.name for s in _ready(spares)}
    specs = [host.spec_of("redis") for _ in range(spares.size + 2)]
    errors: list[BaseException] = []

    def one(spec: GuestSettings) -> None:
        try:
            host.create(spec, prepare=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(spec,)) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    names = {spec.instance_id: host.driver.owner(spec.instance_id).name for spec in specs}
    # Every spare went to one of them; the others made their own users.
    assert sorted(n for n in names.values() if n in ready) == sorted(ready)
    made = [i for i, n in names.items() if n not in ready]
    assert len(made) == 2 and all(names[i] == instance_user_name(i) for i in made)
    for spec in specs:
        assert host.call(spec.instance_id, "get_status") == "healthy"


def test_a_create_asked_again_keeps_the_spare_it_took(host: Host) -> None:
    driver = host.driver
    spare = _ready(_spares(driver))[0]
    spec = host.spec_of("redis")
    host.create(spec, prepare=True)
    agent = driver.agent_pid(spec.instance_id)
    # The task manager died after placing it; the next one runs the create again.
    driver._owners.clear()
    driver.create(spec)
    assert driver.owner(spec.instance_id).name == spare.user.name
    assert driver.agent_pid(spec.instance_id) == agent
    assert instance_user(spec.instance_id) is None  # no second user
    assert host.call(spec.instance_id, "get_status") == "healthy"


def test_a_host_that_cannot_move_mounts_gives_spares_up(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    spares = _spares(host.driver)
    ready = _ready(spares)

    def refuse(source: Path, target: Path) -> None:
        raise volumes.MountNotMovable("cannot move the volume: Invalid argument (EINVAL)")

    monkeypatch.setattr(volumes, "move_mount", refuse)
    spec = host.spec_of("redis")
    host.create(spec, prepare=True)
    # Made its own place, and no spare is left or made again.
    assert host.driver.owner(spec.instance_id).name == instance_user_name(spec.instance_id)
    assert spares.size == 0
    for spare in ready:
        # Its mark goes last, once everything of it went.
        mark = spares.pool / f"{spare.sid}.spare"
        wait_for(lambda m=mark: not m.exists(), 60, "the spares removed")
        _gone(spare, spares)
    assert host.call(spec.instance_id, "get_status") == "healthy"


def test_no_spares_when_turned_off(host: Host) -> None:
    driver = LocalDriver(host.settings.model_copy(update={"spare_instances": 0}))
    assert driver.spares is None
    spec = host.spec_of("redis")
    host.driver.close()
    host.driver = driver
    host.create(spec, prepare=True)
    assert driver.owner(spec.instance_id).name == instance_user_name(spec.instance_id)


def _die(spares: Spares) -> None:
    """As if the task manager died: the filler stops, every agent's go pipe closes, the
    pool's lock is let go; nothing is cleaned up."""
    with spares._cond:
        spares._closed = True
        spares._cond.notify_all()
    spares._thread.join(60)
    for spare in spares._ready:
        assert spare.agent is not None
        spare.agent.discard()
    os.close(spares._lock_fd)
    spares._lock_fd = -1


def test_a_hand_over_cut_short_after_the_mount_moved_is_finished_by_the_next(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = host.driver
    spares = _spares(driver)
    spare = _ready(spares)[0]
    spec = host.spec_of("redis")
    target = driver.instance_dir(spec.instance_id)
    # The task manager dies right after the mount moved: nothing after it runs.
    monkeypatch.setattr(spares, "_finish", lambda *args: None)
    taken = spares.take(spec.instance_id, target)
    assert taken is not None and taken.owner == spare.user and os.path.ismount(target)
    taken.agent.discard()
    _die(spares)
    assert (spares.pool / f"{spare.sid}.taking").exists()
    assert not (driver.owners_dir / spec.instance_id).exists()
    again = LocalDriver(host.settings)
    try:
        # The instance keeps its volume, user and group; the rest of the pool is gone.
        assert driver.volumes is not None and driver.volumes.exists(spec.instance_id)
        assert os.path.ismount(target)
        assert pwd.getpwnam(spare.user.name).pw_uid == spare.user.uid
        assert (driver.owners_dir / spec.instance_id).read_text().strip() == spare.user.name
        assert again.owner(spec.instance_id).name == spare.user.name
        assert not spares.pool.exists()
        # Its create, run again by the new task manager, starts it.
        host.driver = again
        host.create(spec, prepare=True)
        assert host.call(spec.instance_id, "get_status") == "healthy"
        assert again.owner(spec.instance_id).name == spare.user.name
        assert again.cgroups is not None
        assert again.cgroups.contains(spec.instance_id, again.agent_pid(spec.instance_id) or 0)
    finally:
        again.destroy(spec.instance_id)
        host.created.remove(spec.instance_id)
        again.close()
    with pytest.raises(KeyError):
        pwd.getpwnam(spare.user.name)
    driver.spares = None  # already gone


def test_a_hand_over_cut_short_before_the_mount_moved_is_undone_even_without_spares(
    host: Host,
) -> None:
    driver = host.driver
    spares = _spares(driver)
    spare = _ready(spares)[0]
    instance_id = host.spec_of("redis").instance_id
    # Its first steps, as _hand_over takes them, then death before the move.
    (spares.pool / f"{spare.sid}.taking").write_text(instance_id + "\n")
    assert driver.cgroups is not None
    driver.cgroups.rename(spare.group, instance_id)
    driver.instance_dir(instance_id).mkdir(mode=0o700)
    # And one whose mark was cut short while it was written.
    other = _ready(spares)[1]
    (spares.pool / f"{other.sid}.taking").write_text("")
    _die(spares)
    # A task manager that makes no spares still sweeps what one before left.
    again = LocalDriver(host.settings.model_copy(update={"spare_instances": 0}))
    assert again.spares is None
    _gone(spare, spares)
    _gone(other, spares)
    assert not driver.instance_dir(instance_id).exists()
    assert not (driver.owners_dir / instance_id).exists()
    for group in driver.cgroups._dirs(instance_id).values():
        assert not group.exists()
    assert not spares.pool.exists()
    driver.spares = None
