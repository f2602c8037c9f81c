"""The local compute driver: every instance is a directory on this host, its own loopback
address, and a guest agent process running as an unprivileged user: as root, a user of the
instance's own (``cove.common.service_user``), so that a server taken over through a bug
cannot read another instance's files; otherwise whoever runs Cove.

Layout of ``<data>/instances/<id>/`` (mode 0700, owned by the instance's user; the mounted
volume where the host allows it, see ``compute/volumes.py``): ``data/`` (the server's data),
``conf/`` (``guest.json`` and the server's files), ``log/``, ``run/`` (sockets and the agent's
lock) and ``tmp/``.

When Cove runs as root, everything inside an instance directory belongs to the instance's
user, who may be hostile. So the driver touches those files only through ``localfs`` (no
symbolic link is ever followed, only files root creates are chowned), signals a pid read from
them only once it is known to be the instance's process, and a delete first takes away the
agent's config so that nothing can start the agent again.

Where the host allows it (``cove.common.cgroups``), every instance runs in a control group of
its own, limited to its flavor's memory and CPU: the agent is moved into it as soon as it is
started, before it starts any server, so everything it starts is born there; a resize
rewrites the limits live; re-attaching to an instance that runs elsewhere (after a restart
of the host, say) moves the agent and everything it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cove.common import cgroups, procfs
from cove.common.errors import ConfigurationError, UnsafePath, VolumeError
from cove.common.service_user import (
    ServiceUser,
    ensure_instance_user,
    instance_user,
    instance_user_name,
    is_instance_user_name,
    remove_instance_user,
    service_user,
)
from cove.common.settings import Settings
from cove.compute import firewall as host_firewall
from cove.compute import localfs, spares, templates, volumes
from cove.compute.agentforks import AgentForks, AgentProcess, ForkServerError, WaitingAgent
from cove.compute.base import ComputeDriver
from cove.compute.endpoints import ClusterEndpoint, GroupEndpoint, HAProxy, PublishedEndpoint
from cove.compute.firewall import Guarded
from cove.domain.datastores import DATASTORES, StrayServer
from cove.domain.guest import GuestSettings
from cove.domain.status import ComputeState
from cove.rpc.codec import from_wire, to_wire

LOG = logging.getLogger(__name__)

SUBDIRS = ("data", "conf", "log", "run", "tmp")
LOCK_NAME = "guestagent.lock"
#: The kernel's limit on a unix socket path, less the server's socket file name.
MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
STOP_TIMEOUT = 60.0
AGENT_STOP = ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10.0))
#: A fence kills at once: a paused process never handles a gentler signal.
FENCE_STOP = ((signal.SIGKILL, 10.0),)


class LocalDriver(ComputeDriver):
    name = "local"

    def __init__(self, settings: Settings, *, check: bool = True) -> None:
        self.root = settings.instances_dir
        self.templates = settings.templates_dir
        # One lock per instance, held to start its agent, mount its volume or remove it: an
        # instance waits for its own, never for another's, so creates overlap.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Agents this process started: one still starting up holds no lock yet, but is alive.
        self._spawned: dict[str, AgentProcess] = {}
        # Forks new agents from a process that imported their code once.
        self.forks = AgentForks()
        # Instances being destroyed: no agent may be started for them (guarded by their lock).
        self._destroying: set[str] = set()
        self.identity = service_user(settings.service_user)
        self.user, self.uid, self.gid = self.identity.name, self.identity.uid, self.identity.gid
        # Instances' own users, once looked up (see _owner).
        self._owners: dict[str, ServiceUser] = {}
        #: Names of the users of instances that took a spare place (``compute/spares.py``).
        self.owners_dir = settings.data_dir / "owners"
        # Agents of spare places taken, waiting for their instance's settings.
        self._waiting: dict[str, WaitingAgent] = {}
        self.spares: spares.Spares | None = None
        self.endpoints = HAProxy(
            settings.data_dir / "run" / "haproxy", self.user if self.identity.switch else None
        )
        self.root.mkdir(parents=True, exist_ok=True)
        if self.identity.switch:
            # Only then does anyone else (the service user) work below these directories.
            self._check_trusted(self.root.parent)
            self._check_trusted(self.root)
        self.root.chmod(0o711)
        self.templates.mkdir(parents=True, exist_ok=True)
        if self.identity.switch:
            # Root's: root makes the templates (compute/templates.py), instances' users read.
            os.chown(self.templates, 0, self.gid)
            self.templates.chmod(0o750)
        else:
            self.templates.chmod(0o700)
        if settings.backup_store == "filesystem":
            store = Path(settings.backup_location)
            store.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.identity.switch:
                containers = [settings.backup_container, *settings.allowed_containers]
                self._share_store(store, containers)
            else:
                store.chmod(0o700)
        self.cgroups, found = cgroups.detect(settings.cgroup_parent)
        self.volumes, volumes_found = volumes.detect(settings.data_dir / "volumes")
        #: Where instances on volumes keep their commit logs (``_place_journal``).
        self.journals = settings.data_dir / "journals"
        self.firewall, firewall_found = host_firewall.detect(settings.data_dir)
        # Instances whose memory limit the kernel could not lower yet: asked again later.
        self._pending: set[str] = set()
        if check:
            self.forks.warm()  # its imports run while the rest of the service starts
            self.check_access()
            # Say once, loudly, what is not enforced instead of pretending.
            if self.cgroups is None:
                LOG.warning(
                    "memory and CPU limits are NOT enforced: %s; a flavor only sizes the "
                    "database server's settings",
                    found,
                )
            else:
                LOG.info("each instance's memory and CPU are limited by its flavor (%s)", found)
            if self.volumes is None:
                LOG.warning(
                    "volume sizes are NOT enforced: %s; an instance's files are a directory "
                    "of the host's filesystem",
                    volumes_found,
                )
            else:
                LOG.info("each instance's files are a volume of its own (%s)", volumes_found)
            if not self.address_usable(settings.public_address, 0):
                LOG.warning(
                    "public_address %s is not an address of this host: public instances "
                    "cannot be published",
                    settings.public_address,
                )
            if self.firewall is None:
                LOG.warning(
                    "access.allowed_cidrs is NOT enforced: %s; only the database servers' "
                    "own authentication keeps clients out",
                    firewall_found,
                )
            else:
                LOG.info(
                    "who may connect to an instance is filtered by the host (%s)", firewall_found
                )
        self._mount_all()
        if check:
            self.spares = self._make_spares(settings.spare_instances, settings.data_dir)

    def _make_spares(self, size: int, data_dir: Path) -> spares.Spares | None:
        """Spare places, where they save something (see ``compute/spares.py``); where they do
        not (any more), only the sweep of what a task manager before left."""
        if not self.identity.switch or self.volumes is None or self.cgroups is None:
            return None
        root = data_dir / "spares"
        why = spares.usable(root, self.volumes.images) if size else "spare_instances is 0"
        if why is not None and size:
            LOG.warning("no spare places for new instances: %s", why)
        made = spares.Spares(
            root,
            size if why is None else 0,
            instances=self.root,
            images=self.volumes.images,
            owners=self.owners_dir,
            cgroups=self.cgroups,
            forks=self.forks,
            gid=self.gid,
            subdirs=SUBDIRS,
            agent_env=self._agent_env,
        )
        if why is None:
            return made
        made.close()
        return None

    def close(self) -> None:
        if self.spares is not None:
            self.spares.close()

    def _share_store(self, store: Path, containers: list[str]) -> None:
        """Make the filesystem backup store the instances' to share: guest agents write their
        backups there themselves, each as its instance's user (``storage/filesystem.py``).
        The store, each container and its ``wal/`` are root's, mode 3770: every instance's
        user (the service user's group) makes its own directory there (2750: the group reads,
        to restore a backup into another instance, and writes nothing), and the sticky bit
        keeps one from renaming or removing another's. Backups made when all instances ran as
        the service user become the group's to read. Raises UnsafePath when a link stands
        where a directory should be."""
        localfs.set_tree(store, self.gid, 0o2750, 0o640)
        os.chown(store, 0, self.gid)
        store.chmod(0o3770)
        for name in containers:
            for parts in ((name,), (name, "wal")):
                with localfs.open_dir(store, *parts[:-1]) as parent:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(parts[-1], 0o700, dir_fd=parent)
                    with localfs.open_dir(store, *parts) as fd:
                        os.fchown(fd, 0, self.gid)
                        os.fchmod(fd, 0o3770)

    # -- checks ------------------------------------------------------------------------------

    def _check_trusted(self, path: Path) -> None:
        """The directories above the instances are what every safety check of this driver
        leans on: they must be real directories that only we can change.

        Raises ConfigurationError naming the directory and what is wrong with it.
        """
        st = path.lstat()
        owner_ok = st.st_uid == os.geteuid()
        if not stat.S_ISDIR(st.st_mode) or not owner_ok or st.st_mode & 0o022:
            raise ConfigurationError(
                f"{path} must be a directory owned by the user running Cove and writable by "
                "no one else (not a symbolic link)"
            )

    def check_access(self) -> None:
        """Make sure the service user can run the guest agent from here.

        Raises ConfigurationError explaining what to change when it cannot.
        """
        try:
            subprocess.run(
                [sys.executable, "-c", "import cove.guestagent.main"],
                cwd=self.root,
                env=self._agent_env(self.root),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                user=self.identity.popen_user,
                group=self.identity.popen_group,
                extra_groups=self.identity.popen_extra_groups,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise ConfigurationError(
                f"the service user '{self.user}' cannot run the guest agent "
                f"({detail.strip().splitlines()[-1] if detail.strip() else exc}). Cove's "
                f"installation ({sys.prefix}) and its data directory ({self.root.parent}) must "
                "be readable and enterable by that user: install Cove outside /root and keep "
                "COVE_DATA_DIR in a directory every user can enter."
            ) from exc

    # -- paths -------------------------------------------------------------------------------

    def address_usable(self, address: str, port: int) -> bool:
        """Loopback addresses are shared by every process of the host (another Cove, say):
        an address whose port is already bound is not handed out."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
        return True

    def instance_dir(self, instance_id: str) -> Path:
        if "/" in instance_id or instance_id in ("", ".", ".."):
            raise ValueError(f"bad instance id {instance_id!r}")
        return self.root / instance_id

    def _held(self, instance_id: str) -> threading.Lock:
        """The instance's lock (see ``__init__``)."""
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    def config_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "conf" / "guest.json"

    def _parts(self, path: Path) -> tuple[str, ...]:
        """The parts of ``path`` below the instances directory: the ones not to be trusted."""
        return path.relative_to(self.root).parts

    def _has_config(self, instance_id: str) -> bool:
        """Raises UnsafePath when the config is not a regular file."""
        return localfs.regular_file(self.root, *self._parts(self.config_path(instance_id)))

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, spec: GuestSettings) -> None:
        """Raises ConfigurationError for a too long path, UnsafePath for a tampered directory,
        OSError when the instance's user cannot be made."""
        if self.identity.switch:
            taken = self._take_spare(spec.instance_id)
            if taken is not None:
                self._owners[spec.instance_id] = taken.owner
            elif self.owner(spec.instance_id).uid == self.uid:
                self._owners.pop(spec.instance_id, None)
                self._owners[spec.instance_id] = ensure_instance_user(spec.instance_id, self.gid)
            # else: placed by an earlier run of this create (perhaps from a spare): its user.
            try:
                templates.ensure(spec, self.templates, self.identity)
            except (OSError, subprocess.SubprocessError) as exc:
                LOG.warning("no template data directory for %s (%s)", spec.instance_id, exc)
        self._lay_out(spec)
        self._limit(spec)
        self.ensure_running(spec.instance_id)

    def _take_spare(self, instance_id: str) -> spares.Taken | None:
        """A spare place for a new instance (one whose directory is not there yet), its agent
        kept for ``_spawn``; None when there is none."""
        if self.spares is None:
            return None
        base = self.instance_dir(instance_id)
        with self._held(instance_id):
            if instance_id in self._destroying or os.path.lexists(base):
                return None
            taken = self.spares.take(instance_id, base)
            if taken is not None:
                self._waiting[instance_id] = taken.agent
            return taken

    def update(self, spec: GuestSettings) -> GuestSettings | None:
        """Rewrite guest.json, grow the volume to the spec's size and write the flavor's
        limits. Raises UnsafePath for a tampered directory, VolumeError when the volume cannot
        be grown."""
        with self._held(spec.instance_id):
            self._mount_volume(spec.instance_id)
        if not self._has_config(spec.instance_id):
            raise ConfigurationError(f"instance {spec.instance_id} has no guest config")
        previous = self._read_spec(spec.instance_id)
        self._lay_out(spec)
        self._limit(spec)
        return previous

    def owner(self, instance_id: str) -> ServiceUser:
        """Who runs the instance and owns its files: whoever runs Cove when it is not root;
        as root, whom its directory belongs to (only root gives it away: ``make_dirs``), so
        an instance made before instances had users of their own keeps the service user, and
        a user that cannot be looked up by name (an NSS hiccup) is still told by its uid.
        Before the directory is given, the instance's own user (``create`` made it)."""
        if not self.identity.switch:
            return self.identity
        owner = self._owners.get(instance_id)
        if owner is not None:
            return owner
        st = localfs.lstat(self.root, instance_id)
        if st is not None and st.st_uid not in (0, self.uid):
            try:
                name = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                name = str(st.st_uid)
            owner = ServiceUser(name, st.st_uid, self.gid)
        elif st is not None and st.st_uid == self.uid:
            return self.identity
        else:
            owner = self._recorded_owner(instance_id) or instance_user(instance_id)
            if owner is None:
                return self.identity
        self._owners[instance_id] = owner
        return owner

    def _recorded_owner(self, instance_id: str) -> ServiceUser | None:
        """The user of an instance that took a spare place, as recorded (``spares``)."""
        name = spares.recorded_owner(self.owners_dir, instance_id)
        if name is None:
            return None
        try:
            return ServiceUser(name, pwd.getpwnam(name).pw_uid, self.gid)
        except KeyError:
            return None

    def _limit(self, spec: GuestSettings) -> bool:
        """Make the instance's control group and write its flavor's limits; whether they
        hold now (a memory limit the kernel could not lower yet is asked again by
        ``ensure_running``)."""
        if self.cgroups is None:
            return False
        try:
            self.cgroups.limit(spec.instance_id, spec.ram_mb, spec.vcpus)
        except cgroups.LimitPending as exc:
            if spec.instance_id not in self._pending:
                LOG.warning("%s", exc)
            self._pending.add(spec.instance_id)
            return True  # the group is there, with its old memory limit for now
        except OSError as exc:
            LOG.error("cannot limit instance %s: %s", spec.instance_id, exc)
            return False
        self._pending.discard(spec.instance_id)
        return True

    def reconcile(self, instance_id: str) -> None:
        """A memory limit still pending is asked again (with the settings guest.json holds
        now: a later resize wins), and an agent found outside its group is moved back with
        everything it started (one small read of /proc when all holds)."""
        if self.cgroups is None:
            return
        with self._held(instance_id):
            if instance_id in self._destroying:
                return
            try:
                pid = self.agent_pid(instance_id)
            except UnsafePath as exc:
                LOG.warning("instance %s: %s", instance_id, exc.message)
                return
            pending = instance_id in self._pending
            if pid is None or pid <= 0 or not procfs.owned_by(pid, self.owner(instance_id).uid):
                return
            if not pending and self.cgroups.contains(instance_id, pid):
                return
            spec = self._read_spec(instance_id)
            if spec is None or not self._limit(spec):
                return
            self._confine(instance_id, pid)

    def _confine(self, instance_id: str, pid: int) -> None:
        """Move the agent ``pid`` and everything it started into the instance's group; again
        until a pass finds none outside (one may fork while the others move)."""
        assert self.cgroups is not None
        moved: set[int] = set()
        for _ in range(10):
            outside = [
                p
                for p in (pid, *procfs.descendants(pid))
                if not self.cgroups.contains(instance_id, p)
            ]
            if not outside:
                break
            try:
                self.cgroups.join(instance_id, outside)
            except OSError as exc:
                LOG.error("cannot move instance %s into its control group: %s", instance_id, exc)
                return
            moved.update(outside)
        if moved:
            LOG.warning(
                "moved %d processes of instance %s into its control group",
                len(moved),
                instance_id,
            )

    def _read_spec(self, instance_id: str) -> GuestSettings | None:
        """The settings guest.json holds now, or None when they cannot be read."""
        path = self.config_path(instance_id)
        try:
            text = localfs.read_owned(
                self.root, self._parts(path), self.owner(instance_id).uid, limit=1 << 20
            )
            settings: GuestSettings = from_wire(GuestSettings, json.loads(text), "guest")
        except (OSError, UnsafePath, ValueError) as exc:
            LOG.warning("cannot read the settings of instance %s: %s", instance_id, exc)
            return None
        return settings

    def _lay_out(self, spec: GuestSettings) -> None:
        base = self.instance_dir(spec.instance_id)
        if len(str(base / "run")) > MAX_SOCKET_DIR:
            raise ConfigurationError(
                f"the data directory path is too long for unix sockets ({base / 'run'}); "
                "choose a shorter COVE_DATA_DIR"
            )
        self._place_volume(spec, base)
        owner = self.owner(spec.instance_id)
        localfs.make_dirs(base, SUBDIRS, owner.uid, owner.gid)
        placed = replace(
            spec,
            instance_dir=str(base),
            template_dir=str(self.templates),
            journal_dir=self._place_journal(spec.instance_id, base, owner),
        )
        text = json.dumps(to_wire(placed), indent=2)
        self._write_private(self.config_path(spec.instance_id), text)
        lock = base / "run" / LOCK_NAME
        st = localfs.lstat(self.root, *self._parts(lock))
        # A lock the agent could not have made (a link, another owner's file) is replaced.
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_uid != owner.uid:
            self._write_private(lock, "")

    def _place_volume(self, spec: GuestSettings, base: Path) -> None:
        """Mount the instance's volume on its directory, made or grown to the spec's size;
        an instance made before volumes keeps its plain directory. Raises VolumeError."""
        if self.volumes is None:
            return
        with self._held(spec.instance_id):
            if spec.instance_id in self._destroying:
                raise VolumeError(f"instance {spec.instance_id} is being removed")
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700)
            if not self.volumes.exists(spec.instance_id) and any(base.iterdir()):
                return  # made before this host had volumes: its files stay where they are
            self.volumes.ensure(spec.instance_id, base, spec.volume_gb)

    def _place_journal(self, instance_id: str, base: Path, owner: ServiceUser) -> str:
        """The instance's journal directory (``GuestSettings.journal_dir``) on the host's
        filesystem, made when its directory is a volume; "" when it is not."""
        if not os.path.ismount(base):
            return ""
        self.journals.mkdir(mode=0o711, exist_ok=True)
        self.journals.chmod(0o711)  # instances' users pass through to their own
        localfs.make_dirs(self.journals / instance_id, (), owner.uid, owner.gid)
        return str(self.journals / instance_id)

    def _mount_volume(self, instance_id: str) -> None:
        """Mount an existing volume that is not (the host restarted); its size as it is.
        Runs under the instance's lock (``_held``). Raises VolumeError, also for an instance
        being removed (a settings push must not mount it again under the delete)."""
        if self.volumes is None or not self.volumes.exists(instance_id):
            return
        if instance_id in self._destroying:
            raise VolumeError(f"instance {instance_id} is being removed")
        base = self.instance_dir(instance_id)
        if os.path.isdir(base) and not os.path.ismount(base):
            size = self.volumes.image(instance_id).stat().st_size // volumes.GIB
            self.volumes.ensure(instance_id, base, size)
            owner = self.owner(instance_id)
            localfs.make_dirs(base, SUBDIRS, owner.uid, owner.gid)

    def _mount_all(self) -> None:
        """Mount the volumes of this host's instances that are not (the host restarted):
        their config lives on them, and nothing else would find it."""
        images = sorted(self.root.parent.joinpath("volumes").glob("*.img"))
        if self.volumes is None:
            if images:
                LOG.error(
                    "%d instance volume(s) are in %s but cannot be mounted here; those "
                    "instances stay down until they can",
                    len(images),
                    images[0].parent,
                )
            return
        for image in images:
            try:
                with self._held(image.stem):
                    self._mount_volume(image.stem)
            except (VolumeError, ValueError, OSError) as exc:
                LOG.error("cannot mount the volume of instance %s: %s", image.stem, exc)

    def _write_private(self, path: Path, text: str) -> None:
        """Replace ``path`` in an instance directory by a file of the service user (mode 0600).

        Raises UnsafePath when a directory on the way is not a real directory.
        """
        parts = self._parts(path)
        owner = self.owner(parts[0])
        localfs.write_private(self.root, parts, text, owner.uid, owner.gid)

    def agent_pid(self, instance_id: str) -> int | None:
        """The pid the live guest agent wrote, or None when none holds the lock.

        The pid is what the service user wrote: check it before signalling it. Raises
        UnsafePath when the lock is not a regular file of the service user.
        """
        lock = self.instance_dir(instance_id) / "run" / LOCK_NAME
        try:
            fd = localfs.open_owned(
                self.root, self._parts(lock), os.O_RDONLY, self.owner(instance_id).uid
            )
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "r") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = fh.read(32).strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None

    def _starting(self, instance_id: str) -> bool:
        proc = self._spawned.get(instance_id)
        # poll() answers None while the reaping thread waits on the process, also once it
        # has exited: /proc tells (a zombie is not starting anything).
        return proc is not None and proc.poll() is None and procfs.alive(proc.pid)

    def ensure_running(self, instance_id: str) -> bool:
        """Raises ConfigurationError without a guest config, UnsafePath for a tampered one."""
        with self._held(instance_id):
            if instance_id in self._destroying:
                LOG.info("instance %s is being removed; not starting its agent", instance_id)
                return False
            self._mount_volume(instance_id)
            if self.agent_pid(instance_id) is not None or self._starting(instance_id):
                return False
            if not self._has_config(instance_id):
                raise ConfigurationError(f"instance {instance_id} has no guest config")
            self._spawn(instance_id, self.config_path(instance_id))
            return True

    def _agent_env(self, home: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, instance_id: str, config: Path) -> None:
        """Start the agent: forked from the fork server (``compute/agentforks.py``), or, when
        that fails, as a new process."""
        base = self.instance_dir(instance_id)
        log_path = base / "log" / "guestagent.log"
        owner = self.owner(instance_id)
        env = self._agent_env(base)
        waiting = self._waiting.pop(instance_id, None)
        if waiting is not None:
            # A spare place's agent: forked, logging, and in the group it was made in, which
            # became the instance's (moved now if it was not).
            if self.cgroups is not None and not self.cgroups.contains(instance_id, waiting.pid):
                self._join(instance_id, waiting.pid)
            try:
                spare_agent = waiting.start(config, base, env)
            except ForkServerError as exc:
                LOG.warning("the spare agent of instance %s is gone (%s)", instance_id, exc)
            else:
                self._spawned[instance_id] = spare_agent
                LOG.info(
                    "started the spare agent of instance %s (pid %d)", instance_id, waiting.pid
                )
                return
        fd = localfs.open_log(self.root, self._parts(log_path), owner.uid, owner.gid)
        try:
            try:
                agent: AgentProcess = self.forks.hold(
                    config, base, env, owner, fd, lambda pid: self._join(instance_id, pid)
                ).start()
                how = "forked"
            except ForkServerError:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cove.guestagent.main", "--config", str(config)],
                    cwd=base,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    start_new_session=True,
                    user=owner.popen_user,
                    group=owner.popen_group,
                    extra_groups=owner.popen_extra_groups,
                )
                # Before the agent gets to start a server (its imports alone take longer
                # than this): what it starts is born in the group.
                self._join(instance_id, proc.pid)
                # Reap the agent when it exits so it never lingers as a zombie of this process.
                threading.Thread(target=proc.wait, daemon=True).start()
                agent, how = proc, "started"
        finally:
            os.close(fd)
        self._spawned[instance_id] = agent
        LOG.info("%s the guest agent of instance %s (pid %d)", how, instance_id, agent.pid)

    def _join(self, instance_id: str, pid: int) -> None:
        """Move a new agent into the instance's control group (an error is logged: the
        instance runs without its limits, and ``reconcile`` tries again)."""
        if self.cgroups is None:
            return
        try:
            self.cgroups.join(instance_id, [pid])
        except OSError as exc:
            LOG.error("instance %s runs without its limits: %s", instance_id, exc)

    def state(self, instance_id: str) -> ComputeState:
        try:
            if not self._has_config(instance_id):
                # A volume that is not mounted holds the config; mounting it is repaired by
                # ensure_running, which the monitor calls for an instance whose agent is down.
                if self.volumes is not None and self.volumes.exists(instance_id):
                    return ComputeState.SHUTDOWN
                LOG.warning("instance %s has neither a guest config nor a volume", instance_id)
                return ComputeState.ERROR
            alive = self.agent_pid(instance_id) is not None or self._starting(instance_id)
        except UnsafePath as exc:
            LOG.warning("instance %s: %s", instance_id, exc.message)
            return ComputeState.ERROR
        return ComputeState.ACTIVE if alive else ComputeState.SHUTDOWN

    def destroy(self, instance_id: str) -> None:
        """Raises OSError when the directory or the control group cannot be removed,
        VolumeError when the volume cannot."""
        base = self.instance_dir(instance_id)
        if not os.path.lexists(base):
            # A delete cut short after the directory went.
            self._remove_group(instance_id)
            if self.volumes is not None:
                self.volumes.image(instance_id).unlink(missing_ok=True)
            shutil.rmtree(self.journals / instance_id, ignore_errors=True)
            self._remove_user(instance_id)
            return
        try:
            with self._held(instance_id):
                # Without its config no task manager of this host starts the agent again (they
                # all look for it first), so a monitor cannot undo the delete.
                self._destroying.add(instance_id)
                localfs.remove_file(self.root, *self._parts(self.config_path(instance_id)))
            self._stop_agent(instance_id)
            self._stop_server(instance_id)
            self._remove_group(instance_id)
            if self.volumes is not None:
                self.volumes.remove(instance_id, base)
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(self.journals / instance_id, ignore_errors=True)
            for left in (base, self.journals / instance_id):
                if os.path.lexists(left):
                    raise OSError(f"could not remove {left}")
            self._remove_user(instance_id)
        finally:
            with self._held(instance_id):
                self._destroying.discard(instance_id)
                self._spawned.pop(instance_id, None)
                waiting = self._waiting.pop(instance_id, None)
                if waiting is not None:
                    waiting.discard()
                self._pending.discard(instance_id)
                self._owners.pop(instance_id, None)
        LOG.info("removed instance %s", instance_id)

    def _remove_user(self, instance_id: str) -> None:
        """Kill what still runs as the instance's own user (a process that left its control
        group, or a host without groups; again while one forks), then remove the user. Its
        uid is never given to another user (``ensure_instance_user``), so what it may have
        left (a backup it wrote) stays nobody's. A user that cannot be removed is logged, not
        raised: it owns nothing that runs, and the delete must end."""
        owner = self.owner(instance_id)
        if not self.identity.switch or owner.uid == self.uid:
            return  # nobody's own: the service user runs it
        for _ in range(10):
            pids = procfs.processes_of(owner.uid)
            what = f"what runs as the user of instance {instance_id}"
            if not _kill(pids, lambda p: owner.uid in procfs.uids(p), what):
                break
        name = owner.name
        if not is_instance_user_name(name):  # its name could not be looked up just now
            name = spares.recorded_owner(self.owners_dir, instance_id) or instance_user_name(
                instance_id
            )
        try:
            remove_instance_user(name)
        except (OSError, ValueError) as exc:
            LOG.error("the user of instance %s is left behind: %s", instance_id, exc)
        else:
            spares.forget_owner(self.owners_dir, instance_id)

    def _remove_group(self, instance_id: str) -> None:
        """Kill what is left in the instance's control group (only the instance's own
        processes are ever put there), then remove it."""
        if self.cgroups is None:
            return
        uid = self.owner(instance_id).uid
        pids = self.cgroups.pids(instance_id)
        _kill(pids, lambda p: procfs.owned_by(p, uid), f"what is left of instance {instance_id}")
        try:
            self.cgroups.remove(instance_id)
        except OSError as exc:
            # The delete fails and is asked again: no group is left behind unnoticed.
            raise OSError(f"cannot remove the control group of {instance_id}: {exc}") from exc

    def serve_endpoints(
        self,
        groups: Sequence[GroupEndpoint],
        clusters: Sequence[ClusterEndpoint] = (),
        published: Sequence[PublishedEndpoint] = (),
    ) -> bool:
        if not self.endpoints.available:
            return False
        self.endpoints.apply(groups, clusters, published)
        return True

    def guard(self, guarded: Sequence[Guarded]) -> bool:
        if self.firewall is None:
            return False
        self.firewall.apply(guarded)
        return True

    def fence(self, instance_id: str) -> bool:
        """SIGKILL to the agent and to the server's whole process group (its backends go
        with it, so none finishes a commit after the fence)."""
        try:
            self._stop_agent(instance_id, FENCE_STOP)
            self._stop_server(instance_id, fence=True)
        except UnsafePath as exc:
            LOG.warning("instance %s: %s; cannot fence it", instance_id, exc.message)
            return False
        LOG.warning("fenced instance %s: its guest agent and server were killed", instance_id)
        return True

    def _stop_agent(
        self, instance_id: str, signals: tuple[tuple[int, float], ...] = AGENT_STOP
    ) -> None:
        config = str(self.config_path(instance_id))
        uid = self.owner(instance_id).uid
        procs: list[localfs.Process] = []
        starting = self._spawned.get(instance_id)
        if starting is not None and starting.poll() is None:
            # Ours, maybe not yet running the agent's code nor holding the lock: a process we
            # started is ours until we collect it; a forked one while it is an agent.
            child = localfs.Process.claim(
                starting.pid,
                lambda pid: (
                    isinstance(starting, subprocess.Popen) or self._is_agent(pid, config, uid)
                ),
            )
            procs += [child] if child is not None else []
        # An agent still starting up (perhaps by another task manager) holds no lock yet.
        pids = set(procfs.processes_with_arg(uid, config))
        try:
            locked = self.agent_pid(instance_id)
        except UnsafePath as exc:
            LOG.warning("instance %s: %s", instance_id, exc.message)
            locked = None
        if locked is not None and locked > 0:
            pids.add(locked)
        for pid in sorted(pids - {p.pid for p in procs}):
            proc = localfs.Process.claim(pid, lambda p: self._is_agent(p, config, uid))
            if proc is not None:
                procs.append(proc)
            elif pid == locked and procfs.alive(pid):
                LOG.warning(
                    "the agent lock of instance %s names pid %d, which is not its guest agent; "
                    "not signalling it",
                    instance_id,
                    pid,
                )
        if not localfs.stop(procs, signals, f"the guest agent of instance {instance_id}"):
            LOG.warning("the guest agent of instance %s did not stop", instance_id)

    def _is_agent(self, pid: int, config: str, uid: int) -> bool:
        return procfs.owned_by(pid, uid) and config in procfs.cmdline(pid)

    def _stop_server(self, instance_id: str, fence: bool = False) -> None:
        """Stop a database server the agent left running (it was killed, not stopped); with
        ``fence``, kill its process group at once.

        The instance's settings are gone by now (the delete removes them first) and the
        service user could have rewritten them anyway, so the pid file of every datastore is
        looked at; a pid is signalled only once it is known to be this instance's process.
        """
        for descriptor in DATASTORES.values():
            proc = self._stray_server(instance_id, descriptor.stray)
            if proc is not None:
                LOG.warning(
                    "stopping the orphaned %s server of %s (pid %d)",
                    descriptor.title,
                    instance_id,
                    proc.pid,
                )
                what = f"the {descriptor.title} server of instance {instance_id}"
                if fence:
                    # The agent starts every server as a session leader: its group is its own.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        if os.getpgid(proc.pid) == proc.pid:
                            os.killpg(proc.pid, signal.SIGKILL)
                localfs.stop([proc], FENCE_STOP if fence else descriptor.stray.stop, what)
            self._kill_leftovers(instance_id, descriptor.stray)

    def _kill_leftovers(self, instance_id: str, stray: StrayServer) -> None:
        """SIGKILL every process of the service user still working in the server's working
        directory once the server is gone: a server's children may live in groups of their
        own (PostgreSQL's do), and a paused one never notices its parent's death."""
        base = self.instance_dir(instance_id)
        uid = self.owner(instance_id).uid
        try:
            with localfs.open_dir(self.root, *self._parts(base.joinpath(*stray.workdir))) as fd:
                workdir = os.fstat(fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except UnsafePath as exc:
            LOG.warning("instance %s: %s; not looking for its leftovers", instance_id, exc.message)
            return
        for pid in procfs.working_in(uid, workdir):
            proc = localfs.Process.claim(
                pid, lambda p: procfs.owned_by(p, uid) and procfs.cwd_is(p, workdir)
            )
            if proc is None:
                continue
            LOG.warning("killing pid %d left in the data directory of %s", pid, instance_id)
            proc.signal(signal.SIGKILL)
            proc.close()

    def _stray_server(self, instance_id: str, stray: StrayServer) -> localfs.Process | None:
        """The live server named by ``stray``'s pid file, or None when there is none or the
        pid is not this instance's process: one of the service user's, working in the
        instance's ``stray.workdir`` (a stale pid file can name any process)."""
        base = self.instance_dir(instance_id)
        uid = self.owner(instance_id).uid
        pidfile = base.joinpath(*stray.pid_file)
        try:
            text = localfs.read_owned(self.root, self._parts(pidfile), uid)
            with localfs.open_dir(self.root, *self._parts(base.joinpath(*stray.workdir))) as fd:
                workdir = os.fstat(fd)
        except FileNotFoundError:
            return None
        except UnsafePath as exc:
            LOG.warning("instance %s: %s; not stopping its server", instance_id, exc.message)
            return None
        try:
            pid = int(text.split()[0])
        except (ValueError, IndexError):
            return None
        proc = localfs.Process.claim(
            pid, lambda p: procfs.owned_by(p, uid) and procfs.cwd_is(p, workdir)
        )
        if proc is None and procfs.alive(pid):
            LOG.warning(
                "the %s of instance %s names pid %d, which is not its database server; not "
                "signalling it",
                pidfile.name,
                instance_id,
                pid,
            )
        return proc


def _kill(pids: Sequence[int], belongs: Callable[[int], bool], what: str) -> int:
    """SIGKILL those of ``pids`` that ``belongs`` claims (checked through a pidfd, so a pid
    reused meanwhile is spared) and wait for them; how many there were."""
    procs = [p for p in (localfs.Process.claim(pid, belongs) for pid in pids) if p is not None]
    if procs:
        LOG.warning("killing %d processes: %s", len(procs), what)
        localfs.stop(procs, FENCE_STOP, what)
    return len(procs)
