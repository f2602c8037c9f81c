"""The local compute driver: every instance is a directory on this host, its own loopback
address, and a guest agent process running as the unprivileged service user.

Layout of ``<data>/instances/<id>/`` (mode 0700, owned by the service user): ``data/`` (the
volume), ``conf/`` (``guest.json`` and the server's files), ``log/``, ``run/`` (sockets and the
agent's lock) and ``tmp/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from cove.common.errors import ConfigurationError
from cove.common.service_user import service_user
from cove.common.settings import Settings
from cove.compute.base import ComputeDriver, GuestSpec
from cove.domain.status import ComputeState

LOG = logging.getLogger(__name__)

SUBDIRS = ("data", "conf", "log", "run", "tmp")
LOCK_NAME = "guestagent.lock"
#: The kernel's limit on a unix socket path, less the server's socket file name.
MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535")
STOP_TIMEOUT = 60.0


class LocalDriver(ComputeDriver):
    name = "local"

    def __init__(self, settings: Settings, *, check: bool = True) -> None:
        self.root = settings.instances_dir
        self.templates = settings.templates_dir
        self._spawn_lock = threading.Lock()
        # Agents this process started: one still starting up holds no lock yet, but is alive.
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}
        self.identity = service_user(settings.service_user)
        self.user, self.uid, self.gid = self.identity.name, self.identity.uid, self.identity.gid
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self.templates.mkdir(parents=True, exist_ok=True)
        os.chown(self.templates, self.uid, self.gid)
        self.templates.chmod(0o700)
        if check:
            self.check_access()

    # -- checks ------------------------------------------------------------------------------

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

    def config_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "conf" / "guest.json"

    def instance_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "conf").is_dir())

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, spec: GuestSpec) -> None:
        base = self.instance_dir(spec.instance_id)
        if len(str(base / "run")) > MAX_SOCKET_DIR:
            raise ConfigurationError(
                f"the data directory path is too long for unix sockets ({base / 'run'}); "
                "choose a shorter COVE_DATA_DIR"
            )
        base.mkdir(mode=0o700, exist_ok=True)
        os.chown(base, self.uid, self.gid)
        for sub in SUBDIRS:
            path = base / sub
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
        config = {
            **asdict(spec),
            "instance_dir": str(base),
            "template_dir": str(self.templates),
        }
        self._write_private(self.config_path(spec.instance_id), json.dumps(config, indent=2))
        lock = base / "run" / LOCK_NAME
        if not lock.exists():
            self._write_private(lock, "")
        self.ensure_running(spec.instance_id)

    def _write_private(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(tmp, self.uid, self.gid)
        tmp.replace(path)

    def agent_pid(self, instance_id: str) -> int | None:
        """The pid of the live guest agent, or None when none holds the lock."""
        lock = self.instance_dir(instance_id) / "run" / LOCK_NAME
        try:
            fh = lock.open("r")
        except OSError:
            return None
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = fh.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None

    def _starting(self, instance_id: str) -> bool:
        proc = self._spawned.get(instance_id)
        return proc is not None and proc.poll() is None

    def ensure_running(self, instance_id: str) -> bool:
        with self._spawn_lock:
            if self.agent_pid(instance_id) is not None or self._starting(instance_id):
                return False
            config = self.config_path(instance_id)
            if not config.is_file():
                raise ConfigurationError(f"instance {instance_id} has no guest config")
            self._spawn(instance_id, config)
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
        base = self.instance_dir(instance_id)
        log_path = base / "log" / "guestagent.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchown(fd, self.uid, self.gid)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cove.guestagent.main", "--config", str(config)],
                cwd=base,
                env=self._agent_env(base),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                user=self.identity.popen_user,
                group=self.identity.popen_group,
                extra_groups=self.identity.popen_extra_groups,
            )
        finally:
            os.close(fd)
        self._spawned[instance_id] = proc
        # Reap the agent when it exits so it never lingers as a zombie of this process.
        threading.Thread(target=proc.wait, daemon=True).start()
        LOG.info("started the guest agent of instance %s (pid %d)", instance_id, proc.pid)

    def state(self, instance_id: str) -> ComputeState:
        if not self.config_path(instance_id).is_file():
            return ComputeState.ERROR
        alive = self.agent_pid(instance_id) is not None or self._starting(instance_id)
        return ComputeState.ACTIVE if alive else ComputeState.SHUTDOWN

    def destroy(self, instance_id: str) -> None:
        base = self.instance_dir(instance_id)
        if not base.exists():
            return
        starting = self._spawned.get(instance_id)
        if starting is not None and starting.poll() is None and self.agent_pid(instance_id) is None:
            starting.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                starting.wait(STOP_TIMEOUT)
        pid = self.agent_pid(instance_id)
        if pid and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait(lambda: self.agent_pid(instance_id) is None, STOP_TIMEOUT):
                LOG.warning("guest agent of %s ignored SIGTERM; killing it", instance_id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait(lambda: self.agent_pid(instance_id) is None, 10)
        _stop_server(base / "data" / "postmaster.pid")
        self._spawned.pop(instance_id, None)
        shutil.rmtree(base, ignore_errors=True)
        if base.exists():
            raise OSError(f"could not remove {base}")
        LOG.info("removed instance %s", instance_id)


def _wait(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _stop_server(pidfile: Path) -> None:
    """Stop a database server the agent left running (it was killed, not stopped)."""
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _pid_alive(pid):
        return
    LOG.warning("stopping the orphaned database server (pid %d)", pid)
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait(lambda: not _pid_alive(pid), wait):
            return
