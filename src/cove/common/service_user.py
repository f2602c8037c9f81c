"""The unprivileged users Cove runs things as, when it runs as root: the service user (the
embedded bus, HAProxy, the template data directories) and one user per instance, which runs
that instance's guest agent and database server, so that a server taken over through a bug
cannot read another instance's files.

An instance's user is ``cove-`` and the first 16 hex digits of its id, a system user without
a home or a shell whose primary group is the service user's: the group reaches what instances
share (the bus socket, the backup store, the templates), never another instance's directory
(mode 0700). Its uid comes from ``FIRST_UID`` upwards and is never given again on this host
(``UID_RECORD`` keeps the last one given), so nothing a deleted instance left behind (a backup
it wrote, say) ever belongs to a new one."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
HEX = frozenset("0123456789abcdef")
#: Instances' uids start here, far above the ranges useradd gives out by itself.
FIRST_UID = 2_000_000
LAST_UID = 2_100_000_000
#: The last uid given to an instance's user on this host (root's, for every Cove of the host).
UID_RECORD = Path("/var/lib/cove/last-instance-uid")


def instance_user_name(instance_id: str) -> str:
    """The name of the instance's own user."""
    return "cove-" + instance_id.replace("-", "")[:16]


def is_instance_user_name(name: str) -> bool:
    """Whether ``name`` has the shape of an instance's own user's: ``cove-`` and 16 hex digits
    (from its instance's id, or from the spare place it took, ``compute/spares.py``)."""
    digits = name[len("cove-") :]
    return name.startswith("cove-") and len(digits) == 16 and all(c in HEX for c in digits)


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
        with _uid_record() as record:
            uid = _next_uid(record)
            argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
            argv += ["--shell", "/usr/sbin/nologin", "--uid", str(uid), "--gid", str(gid), name]
            try:
                _run_locked(argv, f"cannot make the user {name}")
            except OSError:
                if instance_user(instance_id) is None:
                    raise
                # Another task manager of the host made it meanwhile.
            os.ftruncate(record, 0)
            os.pwrite(record, f"{uid}\n".encode(), 0)
        found = instance_user(instance_id)
        if found is None:
            raise OSError(f"useradd made no user {name}")
        LOG.info("made the user %s (uid %d) for instance %s", name, found.uid, instance_id)
        return found


@contextlib.contextmanager
def _uid_record() -> Iterator[int]:
    """``UID_RECORD``, open and locked against every process of the host."""
    UID_RECORD.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(UID_RECORD, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _next_uid(record: int) -> int:
    """Above the last uid recorded and every instance uid in use. Raises OSError when the
    range is spent."""
    text = os.pread(record, 32, 0).decode(errors="replace").strip()
    last = int(text) if text.isdigit() else FIRST_UID - 1
    used = (e.pw_uid for e in pwd.getpwall() if FIRST_UID <= e.pw_uid <= LAST_UID)
    uid = max(last, *used, FIRST_UID - 1) + 1
    if uid > LAST_UID:
        raise OSError("no uid is left for instances' users")
    return uid


def remove_instance_user(name: str) -> None:
    """Remove the instance's own user ``name`` (``cove-`` and hex digits), if it exists
    (idempotent). Raises OSError, and ValueError for another kind of name."""
    if not is_instance_user_name(name):
        raise ValueError(f"{name!r} is not the name of an instance's user")
    with _USERS_LOCK:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
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
