"""The unprivileged users Cove runs things as, when it runs as root: the service user (the
embedded bus, HAProxy, the template data directories) and one user per instance, which runs
that instance's guest agent and database server, so that a server taken over through a bug
cannot read another instance's files.

An instance's user is ``cove-`` and the first 16 hex digits of its id, a system user without
a home or a shell whose primary group is the service user's: the group reaches what instances
share (the bus socket, the backup store, the templates), never another instance's directory
(mode 0700)."""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import subprocess
import threading
import time
from dataclasses import dataclass

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int

    @property
    def switch(self) -> bool:
        """Whether processes must be started as this user (we run as someone else)."""
        return os.geteuid() != self.uid

    @property
    def popen_user(self) -> int | None:
        return self.uid if self.switch else None

    @property
    def popen_group(self) -> int | None:
        return self.gid if self.switch else None

    @property
    def popen_extra_groups(self) -> list[int] | None:
        return [] if self.switch else None


def ensure_service_user(name: str) -> None:
    """Create the system user ``name`` if it is missing (needs root)."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    LOG.info("creating the service user %s", name)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


#: useradd and userdel lock /etc/passwd; processes of one host take turns, and retry when
#: another program holds the lock.
_USERS_LOCK = threading.Lock()
_RETRIES = 50


def instance_user_name(instance_id: str) -> str:
    return "cove-" + instance_id.replace("-", "")[:16]


def instance_user(instance_id: str) -> ServiceUser | None:
    """The instance's own user, or None when it has none (not made yet, or an instance from
    before instances had users of their own)."""
    name = instance_user_name(instance_id)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return ServiceUser(name, entry.pw_uid, entry.pw_gid)


def ensure_instance_user(instance_id: str, gid: int) -> ServiceUser:
    """The instance's own user, made (needs root) with ``gid`` as its group when missing.
    Raises OSError when it cannot be made."""
    with _USERS_LOCK:
        found = instance_user(instance_id)
        if found is not None:
            return found
        name = instance_user_name(instance_id)
        argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
        argv += ["--shell", "/usr/sbin/nologin", "--gid", str(gid), name]
        try:
            _run_locked(argv, f"cannot make the user {name}")
        except OSError:
            if instance_user(instance_id) is None:
                raise
            # Another task manager of the host made it meanwhile.
        found = instance_user(instance_id)
        if found is None:
            raise OSError(f"useradd made no user {name}")
        LOG.info("made the user %s (uid %d) for instance %s", name, found.uid, instance_id)
        return found


def remove_instance_user(instance_id: str) -> None:
    """Remove the instance's own user, if it has one (idempotent). Raises OSError."""
    with _USERS_LOCK:
        if instance_user(instance_id) is None:
            return
        name = instance_user_name(instance_id)
        _run_locked(["userdel", name], f"cannot remove the user {name}")
        LOG.info("removed the user %s", name)


def _run_locked(argv: list[str], what: str) -> None:
    for _ in range(_RETRIES):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OSError(f"{what}: {exc}") from exc
        if done.returncode == 0:
            return
        if "lock" not in done.stderr:  # "cannot lock /etc/passwd; try again later."
            raise OSError(f"{what}: {done.stderr.strip()[-300:]}")
        time.sleep(0.1)
    raise OSError(f"{what}: /etc/passwd stayed locked")


def service_user(configured: str) -> ServiceUser:
    """As root: the configured user, created if needed. Otherwise: whoever runs Cove."""
    if os.geteuid() == 0:
        ensure_service_user(configured)
        entry = pwd.getpwnam(configured)
        return ServiceUser(configured, entry.pw_uid, entry.pw_gid)
    return ServiceUser(getpass.getuser(), os.getuid(), os.getgid())
