"""The unprivileged user that runs guest agents, database servers and the embedded bus."""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import subprocess
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


def service_user(configured: str) -> ServiceUser:
    """As root: the configured user, created if needed. Otherwise: whoever runs Cove."""
    if os.geteuid() == 0:
        ensure_service_user(configured)
        entry = pwd.getpwnam(configured)
        return ServiceUser(configured, entry.pw_uid, entry.pw_gid)
    return ServiceUser(getpass.getuser(), os.getuid(), os.getgid())
