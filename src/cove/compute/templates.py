"""Template data directories made by the control plane, for instances to copy.

Where Cove runs as root, every instance has a user of its own, and none may write where
another instance reads: a template one instance made could be changed by it later and reach
every instance made after. So the local driver makes each version's template itself before
the first agent that needs it starts: ``initdb --allow-group-access``, run as the service user
(PostgreSQL refuses root) in a directory of its own, which root then takes (owner root, group
the service user's, every entry changed through a descriptor opened without following links)
and renames into place in the root-owned templates directory: readable by every instance's
user, writable by none, nor by the service user. A template made earlier another way (the
service user's) is made again. Where Cove does not run as root, the guest agent makes the
template itself (``cove.guestagent.datastores.postgresql.server``).

Only PostgreSQL has templates for now. The first create of a version waits for ``initdb``
(about a second); later ones find it made (two stats).

Raises OSError or subprocess.SubprocessError when the template cannot be made (the agent then
runs ``initdb`` itself).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from cove.common.service_user import ServiceUser
from cove.compute import localfs
from cove.domain.datastores.postgresql import initdb_argv, template_name
from cove.domain.guest import GuestSettings

LOG = logging.getLogger(__name__)

TIMEOUT = 300


def _ready(template: Path) -> bool:
    """Made, root's, and readable by the group."""
    try:
        st = template.lstat()
    except OSError:
        return False
    mode_ok = st.st_mode & 0o050 == 0o050
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == 0
        and mode_ok
        and (template / "PG_VERSION").is_file()
    )


def ensure(spec: GuestSettings, templates: Path, user: ServiceUser) -> None:
    """Make the template ``spec``'s datastore version copies from, unless it is made.
    Raises OSError or subprocess.SubprocessError (``initdb`` failed)."""
    if spec.datastore != "postgresql":
        return
    ready = templates / template_name(spec.datastore_version)
    if _ready(ready):
        return
    with localfs.host_lock(templates.parent / "locks" / "templates.lock"):
        if _ready(ready):
            return
        building = templates / f".{ready.name}.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        os.mkdir(building, 0o700)
        os.chown(building, user.uid, user.gid)
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
        fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, 0, user.gid)  # first the top: nothing more is made inside
            os.fchmod(fd, 0o750)
        finally:
            os.close(fd)
        localfs.set_tree(building, user.gid, 0o750, 0o640, owner=0)
        if ready.exists():
            # Made before templates were the group's to read: replaced.
            stale = templates / f".{ready.name}.stale.{os.getpid()}"
            ready.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        building.rename(ready)
        LOG.info("made the template data directory for PostgreSQL %s", spec.datastore_version)
