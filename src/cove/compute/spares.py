"""Spare places: what the local driver needs from the host before an instance's server can
start, made ahead of time so that a create takes one ready-made (``docs/architecture.md``,
"Spare places").

A new instance needs, before its agent runs: its own OS user (``useradd``: 10 to 30 ms
here), its volume (an image with its filesystem, mounted: 15 to 20 ms) and its control group
with a guest agent forked into it (moving a process into a version 1 group waits for the
kernel: 5 to 25 ms). A spare is all of that for an instance not known yet: a user
``cove-<sid>``, a 1 GB volume mounted on ``<data>/spares/<pool>/<sid>/`` and laid out as an
instance's directory for that user, a group ``spare-<sid>``, and an agent forked into it,
waiting to be told which instance it is (``AgentForks.hold``).

* :meth:`Spares.take` hands a ready spare to an instance: its group is renamed, its mount
  moves onto the instance's directory (``volumes.move_mount``: what runs there keeps its
  files), then its user is recorded as the instance's (``owners/<id>``, root's: the instance
  keeps its user's name even once its directory is gone, for a delete cut short) and its image
  is renamed into the volumes directory. Well under a millisecond of the kernel's work; the
  driver then writes the instance's settings, grows the volume to the size asked and starts
  the waiting agent as the instance's. None when no spare is ready: the driver makes the
  instance's place itself. A step before the move that fails undoes the ones before it (the
  spare is then removed); after the move the spare is the instance's whatever happens. A
  ``<sid>.taking`` file names the instance meanwhile, so the next task manager finishes a
  hand-over cut short once the spare's own volume is on the instance's directory, and undoes
  one cut short before (only what nobody took up since).
* A thread keeps ``size`` spares ready, making one at a time at a low CPU priority, once no
  spare was taken for ``QUIET`` seconds (creates and their servers go first: a burst of
  creates takes what is ready, the rest make their places themselves), and backs off after a
  failure or while the fork server is given up.
* :meth:`Spares.close` removes every spare not taken; their agents exit as soon as their
  pipe closes, also when this process dies. Each process's spares live under a pool
  directory of their own, locked while the process lives (every spare is marked there by a
  ``<sid>.spare`` file before its user is made): a pool whose lock is free (its process died)
  is removed by the next task manager that starts, and its lock stays until it is empty.

Only as root, with volumes, control groups and the fork server, on a mount that is not
shared (the kernel moves no mount there: :func:`usable` says why not), and without them a
spare would save nothing worth its upkeep: the driver then makes no ``Spares``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cove.common import procfs
from cove.common.cgroups import Cgroups, LimitPending
from cove.common.errors import VolumeError
from cove.common.service_user import (
    ServiceUser,
    ensure_instance_user,
    instance_user_name,
    remove_instance_user,
)
from cove.compute import localfs, volumes
from cove.compute.agentforks import AgentForks, ForkServerError, WaitingAgent

LOG = logging.getLogger(__name__)

#: What a spare's volume holds until its instance grows it.
SPARE_GB = 1
#: Its group's limits until its instance's are written: room for a waiting agent.
SPARE_RAM_MB, SPARE_VCPUS = 256, 1
#: Seconds without a take before spares are made again.
QUIET = 1.0
#: The niceness spares are made with.
NICE = 10
#: Longest pause before making a spare again after a failure.
MAX_BACKOFF = 60.0
#: How long a removal waits for what ran in a spare to go.
STOP = ((signal.SIGKILL, 10.0),)


def usable(root: Path, images: Path) -> str | None:
    """Why spares cannot be handed over under ``root`` (a shared mount, or instances' images
    ``images`` on another filesystem: an image is renamed there), or None."""
    shared = volumes.shared_mount(root)
    if shared is not None:
        return (
            f"the mount {shared} that holds the data directory is shared, and the kernel moves "
            "no mount there (make it private: 'mount --make-rprivate "
            f"{shared}', or keep the data directory on a private bind mount)"
        )
    root.mkdir(parents=True, exist_ok=True)
    if os.stat(root).st_dev != os.stat(images).st_dev:
        return f"{root} and {images} are on different filesystems"
    return None


@dataclass
class Spare:
    sid: str
    user: ServiceUser
    base: Path
    agent: WaitingAgent | None = None

    @property
    def group(self) -> str:
        return f"spare-{self.sid}"


@dataclass(frozen=True)
class Taken:
    """A spare now an instance's: who runs it, and its agent, waiting to start."""

    owner: ServiceUser
    agent: WaitingAgent


class Spares:
    """The spare places of this process (see the module's notes)."""

    def __init__(
        self,
        root: Path,
        size: int,
        *,
        instances: Path,
        images: Path,
        owners: Path,
        cgroups: Cgroups,
        forks: AgentForks,
        gid: int,
        subdirs: tuple[str, ...],
        agent_env: Callable[[Path], Mapping[str, str]],
    ) -> None:
        """``root``: ``<data>/spares``; ``instances``: the instances' directories;
        ``images``: where instances' volume images live; ``owners``: where the names of
        instances' users are recorded."""
        self.root, self.size = root, size
        self.instances, self.images, self.owners = instances, images, owners
        self.cgroups, self.forks, self.gid = cgroups, forks, gid
        self.subdirs, self.agent_env = subdirs, agent_env
        for path in (root, owners):
            path.mkdir(parents=True, exist_ok=True)
        # Instances' users pass through to their spare's directory; nobody lists them.
        root.chmod(0o711)
        owners.chmod(0o700)
        self._sweep()
        self._ready: list[Spare] = []
        self._cond = threading.Condition()
        self._closed = False
        self._last_take = float("-inf")
        self._lock_fd = -1
        if size == 0:  # only the sweep: a host without spares now may have had some
            self._closed = True
            return
        # Locked before the pool exists: another task manager's sweep never takes it.
        while True:
            self.pool = root / secrets.token_hex(4)
            self._lock = self.pool.with_suffix(".lock")
            self._lock_fd = os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            # A sweep may have taken and removed the new file between open and lock.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self._lock).st_ino == os.fstat(self._lock_fd).st_ino:
                    break
            os.close(self._lock_fd)
        self.pool.mkdir(mode=0o711)
        self.pool.chmod(0o711)
        self.volumes = volumes.LoopVolumes(self.pool)
        self._thread = threading.Thread(target=self._fill, name="spares", daemon=True)
        self._thread.start()

    # -- taking ------------------------------------------------------------------------------

    def take(self, instance_id: str, target: Path) -> Taken | None:
        """Hand a ready spare to ``instance_id``, its volume mounted on ``target`` (which
        must not exist yet, in a directory only root changes); None when none is ready or
        handing one over failed (logged; the caller makes the instance's place itself)."""
        with self._cond:
            if not self._ready:
                return None
            spare = self._ready.pop(0)
            self._last_take = time.monotonic()
            self._cond.notify_all()
        assert spare.agent is not None
        try:
            self._hand_over(spare, instance_id, target)
        except (OSError, VolumeError) as exc:
            LOG.warning("a spare place could not be given to instance %s: %s", instance_id, exc)
            self._remove(spare)
            if isinstance(exc, volumes.MountNotMovable):
                self._give_up(exc.message)
            return None
        LOG.info("instance %s took a spare place (user %s)", instance_id, spare.user.name)
        return Taken(spare.user, spare.agent)

    def _hand_over(self, spare: Spare, instance_id: str, target: Path) -> None:
        """Each step undoes the ones before when it fails, so that the spare can be removed
        as a spare; once the mount moved, the spare is the instance's whatever happens next
        (what is left to do is logged when it fails, and a sweep finishes it)."""
        image = self.images / f"{instance_id}.img"
        if image.exists() or os.path.lexists(target):
            raise FileExistsError(f"instance {instance_id} already has a place")
        taking = self.pool / f"{spare.sid}.taking"
        _write_whole(taking, instance_id + "\n")
        try:
            self.cgroups.rename(spare.group, instance_id)
            try:
                os.mkdir(target, 0o700)
                try:
                    volumes.move_mount(spare.base, target)
                except BaseException:
                    target.rmdir()
                    raise
            except BaseException:
                self.cgroups.rename(instance_id, spare.group)
                raise
        except BaseException:
            taking.unlink(missing_ok=True)
            raise
        try:
            self._finish(self.pool, spare.sid, instance_id)
        except OSError as exc:
            LOG.error("the hand-over of a spare place to %s is unfinished: %s", instance_id, exc)

    def _finish(self, pool: Path, sid: str, instance_id: str) -> None:
        """The steps after the mount moved (also a sweep's, for a hand-over cut short):
        the user recorded as the instance's, the image renamed (never over another), the
        marks removed (the spare's first: without it no sweep takes the instance's user for
        a spare's). Raises OSError."""
        _write_whole(self.owners / instance_id, instance_user_name(sid) + "\n")
        image, target = pool / f"{sid}.img", self.images / f"{instance_id}.img"
        if image.exists() and not target.exists():
            image.rename(target)
        with contextlib.suppress(OSError):
            (pool / sid).rmdir()
        for name in (f"{sid}.spare", f"{sid}.taking"):
            (pool / name).unlink(missing_ok=True)

    def _give_up(self, why: str) -> None:
        """No more spares for this process: remove the ready ones (in the background)."""
        LOG.warning("no more spare places: %s", why)
        with self._cond:
            self.size = 0
            ready, self._ready = self._ready, []
            self._cond.notify_all()

        def remove_all() -> None:
            for spare in ready:
                self._remove(spare)

        threading.Thread(target=remove_all, name="spares-gone", daemon=True).start()

    # -- making ------------------------------------------------------------------------------

    def _fill(self) -> None:
        # Behind creates and their servers for the CPU: what this thread starts (useradd,
        # mkfs, mount) inherits its niceness.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        failures = 0
        while True:
            with self._cond:
                # Not while creates run either: a spare made meanwhile would slow them down.
                while not self._closed:
                    quiet = QUIET - (time.monotonic() - self._last_take)
                    if len(self._ready) >= self.size:
                        self._cond.wait()
                    elif quiet > 0:
                        self._cond.wait(quiet)
                    else:
                        break
                if self._closed:
                    return
            try:
                if self.forks.given_up:
                    raise ForkServerError("the agent fork server is given up for now")
                spare = self._make()
            except (OSError, VolumeError, ForkServerError) as exc:
                failures += 1
                pause = min(MAX_BACKOFF, 0.5 * 2**failures)
                LOG.warning("cannot make a spare place (again in %.0f s): %s", pause, exc)
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, pause)
                continue
            failures = 0
            with self._cond:
                if not self._closed and len(self._ready) < self.size:
                    self._ready.append(spare)
                    continue
            self._remove(spare)

    def _make(self) -> Spare:
        sid = secrets.token_hex(8)
        # Marked first: a sweep finds whatever of it was made before this process died.
        (self.pool / f"{sid}.spare").touch(0o600)
        user = ServiceUser(instance_user_name(sid), -1, self.gid)
        spare = Spare(sid, user, self.pool / sid)
        try:
            spare.user = ensure_instance_user(sid, self.gid)
            spare.base.mkdir(mode=0o700)
            self.volumes.ensure(sid, spare.base, SPARE_GB)
            localfs.make_dirs(spare.base, self.subdirs, spare.user.uid, spare.user.gid)
            with contextlib.suppress(LimitPending):
                self.cgroups.limit(spare.group, SPARE_RAM_MB, SPARE_VCPUS)
            fd = localfs.open_log(
                self.pool, (sid, "log", "guestagent.log"), spare.user.uid, spare.user.gid
            )
            try:
                spare.agent = self.forks.hold(
                    spare.base / "conf" / "guest.json",
                    spare.base,
                    self.agent_env(spare.base),
                    spare.user,
                    fd,
                    lambda pid: self.cgroups.join(spare.group, [pid]),
                )
            finally:
                os.close(fd)
        except BaseException:
            self._remove(spare)
            raise
        LOG.debug("made the spare place %s", sid)
        return spare

    # -- removing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every spare not taken and stop making them (idempotent)."""
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready, []
            self._cond.notify_all()
        for spare in ready:
            self._remove(spare)
        if self._lock_fd < 0:
            return  # no pool (only the sweep), or closed before
        if self._thread is not threading.current_thread():
            self._thread.join(60)
        with contextlib.suppress(OSError):
            self.pool.rmdir()
        if not self.pool.exists():
            self._lock.unlink(missing_ok=True)
        # Kept while something is left: the next task manager's sweep finds it.
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _remove(self, spare: Spare) -> None:
        """Everything of a spare, best effort (what fails is logged)."""
        if spare.agent is not None:
            spare.agent.discard()
        self._remove_sid(self.volumes, spare.sid)

    def _remove_sid(self, images: volumes.LoopVolumes, sid: str) -> None:
        """What runs as the spare's user is killed, then its volume, group, user and marks
        go (what fails is logged; the marks stay then, for the next sweep)."""
        pool = images.images
        base = pool / sid
        name = instance_user_name(sid)
        with contextlib.suppress(KeyError):
            self._kill(sid, pwd.getpwnam(name).pw_uid)
        left = False
        try:
            if os.path.isdir(base):
                images.remove(sid, base)
                base.rmdir()
            for suffix in (".img", ".new", ".grow"):
                (pool / f"{sid}{suffix}").unlink(missing_ok=True)
        except (OSError, VolumeError) as exc:
            LOG.error("the volume of the spare place %s is left behind: %s", sid, exc)
            left = True
        try:
            self.cgroups.remove(f"spare-{sid}")
        except OSError as exc:
            LOG.error("the control group of the spare place %s is left behind: %s", sid, exc)
            left = True
        try:
            remove_instance_user(name)
        except OSError as exc:
            LOG.error("the user of the spare place %s is left behind: %s", sid, exc)
            left = True
        if not left:
            (pool / f"{sid}.spare").unlink(missing_ok=True)

    def _kill(self, sid: str, uid: int) -> None:
        """SIGKILL what runs in the spare's group or as its user, and wait for it."""

        def belongs(pid: int) -> bool:
            return procfs.owned_by(pid, uid)

        pids = set(self.cgroups.pids(f"spare-{sid}")) | set(procfs.processes_of(uid))
        procs = [p for p in (localfs.Process.claim(pid, belongs) for pid in pids) if p]
        if procs:
            localfs.stop(procs, STOP, f"what ran in the spare place {sid}")

    def _sweep(self) -> None:
        """Remove the pools of processes that died (their lock is free), finishing first the
        hand-overs they cut short once the mount had moved."""
        for lock in sorted(self.root.glob("*.lock")):
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's
                pool = lock.with_suffix("")
                if pool.is_dir():
                    try:
                        self._sweep_pool(pool)
                    except (OSError, VolumeError, ValueError) as exc:
                        LOG.error("cannot remove the spare places in %s: %s", pool, exc)
                with contextlib.suppress(OSError):
                    pool.rmdir()
                if not pool.exists():
                    lock.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def _moved(self, pool: Path, sid: str, instance_id: str, target: Path) -> bool:
        """Whether the spare's own volume is what is mounted on ``target`` (its mount moved
        there), whichever name its image has now."""
        if os.path.ismount(pool / sid):
            return False
        device = volumes.mounted_device(target)
        backing = volumes.backing_file(device) if device else None
        if backing is None:
            return False
        names = {
            str(pool / f"{sid}.img"),
            str(pool.parent.parent / "volumes" / f"{instance_id}.img"),
        }
        return backing in names or backing.removesuffix(" (deleted)") in names

    def _sweep_pool(self, pool: Path) -> None:
        images = volumes.LoopVolumes(pool)
        for taking in sorted(pool.glob("*.taking")):
            sid, instance_id = taking.stem, taking.read_text().strip()
            if not instance_id or "/" in instance_id or instance_id in (".", ".."):
                taking.unlink()  # cut short while being written: nothing was done yet
                continue
            target = self.instances / instance_id
            if self._moved(pool, sid, instance_id, target):
                LOG.warning("finishing the hand-over of a spare place to instance %s", instance_id)
                self._finish(pool, sid, instance_id)
                continue
            # Cut short before the mount moved: the instance's create makes its place again.
            # Its directory and group are undone only while nobody else took them up.
            if os.path.isdir(target) and not os.path.ismount(target) and not any(target.iterdir()):
                target.rmdir()
            if not os.path.lexists(target):
                with contextlib.suppress(OSError):
                    self.cgroups.rename(instance_id, f"spare-{sid}")
            taking.unlink()
        sids = {p.stem for p in pool.glob("*.spare")}
        sids |= {p.stem for p in pool.glob("*.img")}
        sids |= {p.name for p in pool.iterdir() if p.is_dir()}
        for sid in sorted(sids):
            LOG.warning("removing the spare place %s a stopped task manager left", sid)
            self._remove_sid(images, sid)


def _write_whole(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole or not at all (root's, 0600)."""
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text)
    partial.chmod(0o600)
    os.replace(partial, path)


def recorded_owner(owners: Path, instance_id: str) -> str | None:
    """The recorded name of the user of an instance that took a spare, or None."""
    try:
        name = (owners / instance_id).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return name or None


def forget_owner(owners: Path, instance_id: str) -> None:
    """Drop the record of an instance's user (its user is gone)."""
    (owners / instance_id).unlink(missing_ok=True)
