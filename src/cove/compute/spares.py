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

* :meth:`Spares.take` hands a ready spare to an instance: its image becomes the instance's
  (renamed into the volumes directory), its mount moves onto the instance's directory
  (``volumes.move_mount``: what runs there keeps its files), its group is renamed, and its
  user is recorded as the instance's (``owners/<id>``, root's: the instance keeps its user's
  name even after its directory is gone, for a delete cut short). Well under a millisecond
  of the kernel's work; the driver then writes the instance's settings, grows the volume to
  the size asked and starts the waiting agent as the instance's. None when no spare is
  ready: the driver makes the instance's place itself. A spare the kernel will not move (a
  host whose mounts are shared) is removed, and spares are given up for this process.
* A thread keeps ``size`` spares ready, making one at a time at a low CPU priority, once no
  spare was taken for ``QUIET`` seconds (creates and their servers go first: a burst of
  creates takes what is ready, the rest make their places themselves), and backs off after a
  failure.
* :meth:`Spares.close` removes every spare not taken; their agents exit as soon as their
  pipe closes, also when this process dies. Each process's spares live under a pool
  directory of their own, locked while the process lives: a pool whose lock is free (its
  process died) is removed when the next one starts.

Only as root, with volumes, control groups and the fork server: without them a spare would
save nothing worth its upkeep (the driver then makes no ``Spares``).
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
    def __init__(
        self,
        root: Path,
        size: int,
        *,
        images: Path,
        owners: Path,
        cgroups: Cgroups,
        forks: AgentForks,
        gid: int,
        subdirs: tuple[str, ...],
        agent_env: Callable[[Path], Mapping[str, str]],
    ) -> None:
        """``root``: ``<data>/spares``; ``images``: where instances' volume images live;
        ``owners``: where the names of instances' users are recorded."""
        self.root, self.size = root, size
        self.images, self.owners = images, owners
        self.cgroups, self.forks, self.gid = cgroups, forks, gid
        self.subdirs, self.agent_env = subdirs, agent_env
        for path in (root, owners):
            path.mkdir(parents=True, exist_ok=True)
        # Instances' users pass through to their spare's directory; nobody lists them.
        root.chmod(0o711)
        owners.chmod(0o700)
        self._sweep()
        self.pool = root / secrets.token_hex(4)
        self.pool.mkdir(mode=0o711)
        self.pool.chmod(0o711)
        self._lock_fd = os.open(
            self.pool.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.volumes = volumes.LoopVolumes(self.pool)
        self._ready: list[Spare] = []
        self._cond = threading.Condition()
        self._closed = False
        self._last_take = float("-inf")
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
            if isinstance(exc, VolumeError) and "EINVAL" in exc.message:
                with self._cond:
                    self.size = 0  # this host's mounts cannot be moved: spares save nothing
                    self._cond.notify_all()
            self._remove(spare)
            return None
        LOG.info("instance %s took a spare place (user %s)", instance_id, spare.user.name)
        return Taken(spare.user, spare.agent)

    def _hand_over(self, spare: Spare, instance_id: str, target: Path) -> None:
        """Each step first undoes what it did when it fails, so the spare can be removed as
        a spare; once the mount moved, the instance owns what is left to do."""
        image = self.images / f"{instance_id}.img"
        if image.exists() or os.path.lexists(target):
            raise FileExistsError(f"instance {instance_id} already has a place")
        record = self.owners / instance_id
        record.write_text(spare.user.name + "\n")
        record.chmod(0o600)
        try:
            os.mkdir(target, 0o700)
            try:
                self.volumes.image(spare.sid).rename(image)
                try:
                    volumes.move_mount(spare.base, target)
                except BaseException:
                    image.rename(self.volumes.image(spare.sid))
                    raise
            except BaseException:
                target.rmdir()
                raise
        except BaseException:
            record.unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):
            spare.base.rmdir()
        try:
            self.cgroups.rename(spare.group, instance_id)
        except OSError as exc:
            # The agent runs in the spare's group: the driver's reconcile moves it.
            LOG.warning(
                "the group of instance %s stays %s for now: %s", instance_id, spare.group, exc
            )

    # -- making ------------------------------------------------------------------------------

    def _fill(self) -> None:
        # Behind creates and their servers for the CPU: what this thread starts (useradd,
        # mkfs, mount) inherits its niceness.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        failures = 0
        while True:
            with self._cond:
                while not self._closed and len(self._ready) >= self.size:
                    self._cond.wait()
                # Not while creates run: a spare made meanwhile would slow them down. A burst
                # takes what is ready; the pool fills up again once it is over.
                while not self._closed and time.monotonic() - self._last_take < QUIET:
                    self._cond.wait(QUIET - (time.monotonic() - self._last_take))
                if self._closed:
                    return
            try:
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
                if not self._closed:
                    self._ready.append(spare)
                    continue
            self._remove(spare)
            return

    def _make(self) -> Spare:
        sid = secrets.token_hex(8)
        spare = Spare(sid, ensure_instance_user(sid, self.gid), self.pool / sid)
        try:
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
        if self._thread is not threading.current_thread():
            self._thread.join(60)
        with contextlib.suppress(OSError):
            self.pool.rmdir()
        with contextlib.suppress(OSError):
            self.pool.with_suffix(".lock").unlink()
            os.close(self._lock_fd)

    def _remove(self, spare: Spare) -> None:
        """Everything of a spare, best effort (what fails is logged)."""
        if spare.agent is not None:
            spare.agent.discard()
        self._kill(spare)
        _remove_spare_files(self.volumes, self.cgroups, spare.sid, spare.base)

    def _kill(self, spare: Spare) -> None:
        uid = spare.user.uid
        pids = set(self.cgroups.pids(spare.group)) | set(procfs.processes_of(uid))
        procs = [
            p
            for p in (localfs.Process.claim(pid, lambda q: procfs.owned_by(q, uid)) for pid in pids)
            if p is not None
        ]
        if procs:
            localfs.stop(procs, STOP, f"what ran in the spare place {spare.sid}")

    def _remove_left(self, images: volumes.LoopVolumes, sid: str, base: Path) -> None:
        """A spare of a process that died: its agent exited with it; what else runs as its
        user is killed before its files go."""
        name = instance_user_name(sid)
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            _remove_spare_files(images, self.cgroups, sid, base)
            return
        spare = Spare(sid, ServiceUser(name, uid, self.gid), base)
        self._kill(spare)
        _remove_spare_files(images, self.cgroups, sid, base)

    def _sweep(self) -> None:
        """Remove the pools of processes that died (their lock is free)."""
        for lock in sorted(self.root.glob("*.lock")):
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process's
                pool = lock.with_suffix("")
                images = volumes.LoopVolumes(pool)
                for image in sorted(pool.glob("*.img")) if pool.is_dir() else []:
                    LOG.warning("removing a spare place a stopped task manager left (%s)", image)
                    self._remove_left(images, image.stem, pool / image.stem)
                for leftover in sorted(pool.iterdir()) if pool.is_dir() else []:
                    with contextlib.suppress(OSError):
                        if leftover.is_dir() and not os.path.ismount(leftover):
                            leftover.rmdir()
                with contextlib.suppress(OSError):
                    pool.rmdir()
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)


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


def _remove_spare_files(
    images: volumes.LoopVolumes, cgroups: Cgroups, sid: str, base: Path
) -> None:
    try:
        if os.path.isdir(base):
            images.remove(sid, base)
            base.rmdir()
        else:
            images.image(sid).unlink(missing_ok=True)
    except (OSError, VolumeError) as exc:
        LOG.error("the volume of the spare place %s is left behind: %s", sid, exc)
    try:
        cgroups.remove(f"spare-{sid}")
    except OSError as exc:
        LOG.error("the control group of the spare place %s is left behind: %s", sid, exc)
    try:
        remove_instance_user(instance_user_name(sid))
    except OSError as exc:
        LOG.error("the user of the spare place %s is left behind: %s", sid, exc)
