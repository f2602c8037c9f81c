"""Template data directories made by the control plane, for instances to copy.

Where Cove runs as root, every instance has a user of its own, and none may write where
another instance reads: a template one instance made could be changed by it later and reach
every instance made after. So the local driver makes each version's template itself, as the
service user, before the first agent that needs it starts: ``initdb --allow-group-access``
into a temporary directory renamed into place, readable by the service user's group (every
instance's user) and writable by no instance. A template made earlier without group access is
made again. Where Cove does not run as root, the guest agent makes the template itself, as
before (``cove.guestagent.datastores.postgresql.server``).

Only PostgreSQL has templates for now. The first create of a version waits for ``initdb``
(about a second); later ones find it made (two stats).

Raises OSError or subprocess.SubprocessError when the template cannot be made (the agent then
runs ``initdb`` itself).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from pathlib import Path

from cove.common.service_user import ServiceUser
from cove.domain.datastores.postgresql import initdb_argv, template_name
from cove.domain.guest import GuestSettings

LOG = logging.getLogger(__name__)

TIMEOUT = 300


def _ready(template: Path) -> bool:
    """Made, and readable by the group."""
    try:
        st = template.stat()
    except OSError:
        return False
    return (template / "PG_VERSION").is_file() and st.st_mode & 0o050 == 0o050


def ensure(spec: GuestSettings, templates: Path, user: ServiceUser) -> None:
    """Make the template ``spec``'s datastore version copies from, unless it is made."""
    if spec.datastore != "postgresql":
        return
    ready = templates / template_name(spec.datastore_version)
    if _ready(ready):
        return
    with (templates.parent / "templates.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other task managers of the host
        if _ready(ready):
            return
        building = templates / f".{ready.name}.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(
            initdb_argv(spec.bin_dir, building, group_access=True),
            capture_output=True,
            text=True,
            check=True,
            timeout=TIMEOUT,
            cwd=templates,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            user=user.popen_user,
            group=user.popen_group,
            extra_groups=user.popen_extra_groups,
        )
        if ready.exists():
            # Made before templates were the group's to read: replaced.
            stale = templates / f".{ready.name}.stale.{os.getpid()}"
            ready.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        building.rename(ready)
        LOG.info("made the template data directory for PostgreSQL %s", spec.datastore_version)
