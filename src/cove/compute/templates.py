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

PostgreSQL's and MariaDB's: the first create of a version waits for ``initdb`` or
``mariadb-install-db`` (about a second); later ones find it made (a few stats). A MariaDB
template holds no account but the server's own ``mariadb.sys`` (the agent's comes from its init
file at the first start), no server id, binary log or GTID state (installed without them), and a
4 MB redo log the server grows at its first start; its stamp (``cove.common.binary_stamp``)
names the ``mariadbd`` it was made with, and another one (a package upgrade) makes it again.

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
from typing import Any

from cove.common import binary_stamp
from cove.common.service_user import ServiceUser
from cove.compute import localfs
from cove.compute.discovery import mariadb_install_db
from cove.domain.datastores import mariadb, postgresql
from cove.domain.datastores.postgresql import initdb_argv
from cove.domain.guest import GuestSettings

LOG = logging.getLogger(__name__)

TIMEOUT = 300


def _ready(template: Path, spec: GuestSettings) -> bool:
    """Made, root's, readable by the group, and (MariaDB) made with this server binary."""
    try:
        st = template.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o050 != 0o050:
        return False
    if spec.datastore == "mariadb":
        return binary_stamp.ready(template, mariadb.TEMPLATE_MARKER, _mariadbd(spec))
    return (template / "PG_VERSION").is_file()


def _write_new(path: Path, text: str) -> None:
    """A new file of root's, readable by all (nothing secret), never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _mariadbd(spec: GuestSettings) -> Path:
    return Path(spec.bin_dir) / "mariadbd"


def _name(spec: GuestSettings) -> str | None:
    if spec.datastore == "postgresql":
        return postgresql.template_name(spec.datastore_version)
    if spec.datastore == "mariadb":
        return mariadb.template_name(spec.datastore_version)
    return None


def ensure(spec: GuestSettings, templates: Path, user: ServiceUser) -> None:
    """Make the template ``spec``'s datastore version copies from, unless it is made.
    Raises OSError or subprocess.SubprocessError (the installer failed)."""
    name = _name(spec)
    if name is None:
        return
    ready = templates / name
    if _ready(ready, spec):
        return
    with localfs.host_lock(templates.parent / "locks" / "templates.lock"):
        if _ready(ready, spec):
            return
        building = templates / f".{ready.name}.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        os.mkdir(building, 0o700)
        os.chown(building, user.uid, user.gid)
        try:
            _install(spec, building, user)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(building, ignore_errors=True)
            said = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
            raise OSError(f"{Path(exc.cmd[0]).name} failed: {' '.join(said)}") from exc
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, 0, user.gid)  # first the top: nothing more is made inside
            os.fchmod(fd, 0o750)
        finally:
            os.close(fd)
        localfs.set_tree(building, user.gid, 0o750, 0o640, owner=0)
        if ready.exists():
            # Made before templates were the group's to read, or by an older binary: replaced
            # (an agent copying it meanwhile sees the directory change and installs instead).
            stale = templates / f".{ready.name}.stale.{os.getpid()}"
            ready.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        building.rename(ready)
        if spec.datastore == "mariadb":
            # Only now: a stamp never names a template that is not in place.
            binary_stamp.write(ready, _mariadbd(spec), 0o640, gid=user.gid)
        LOG.info(
            "made the template data directory for %s %s", spec.datastore, spec.datastore_version
        )


def _install(spec: GuestSettings, building: Path, user: ServiceUser) -> None:
    """Run the datastore's installer into ``building`` as ``user``. Raises OSError (no
    installer) or subprocess.SubprocessError (it failed)."""
    as_user: dict[str, Any] = {
        "capture_output": True,
        "text": True,
        "check": True,
        "timeout": TIMEOUT,
        "cwd": building,
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        "user": user.popen_user,
        "group": user.popen_group,
        "extra_groups": user.popen_extra_groups,
    }
    if spec.datastore == "postgresql":
        subprocess.run(initdb_argv(spec.bin_dir, building, group_access=True), **as_user)
        return
    installer = mariadb_install_db(Path(spec.bin_dir))
    if installer is None:
        raise OSError(f"no mariadb-install-db beside {spec.bin_dir}")
    # The installer's files, root's and only readable by the user (who could otherwise put a
    # link where root writes), and its temporary directory, the user's, beside the template.
    work = building.with_name(building.name + ".install")
    shutil.rmtree(work, ignore_errors=True)
    os.mkdir(work, 0o755)
    try:
        defaults, sql, tmp = work / "my.cnf", work / "install.sql", work / "tmp"
        _write_new(defaults, mariadb.template_cnf(building, tmp))
        _write_new(sql, mariadb.INSTALL_SQL)
        os.mkdir(tmp, 0o700)
        os.lchown(tmp, user.uid, user.gid)
        subprocess.run(
            [
                str(installer),
                f"--defaults-file={defaults}",
                "--skip-test-db",
                "--skip-name-resolve",
                f"--extra-file={sql}",
            ],
            **as_user,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Written at its shutdown, of no use to a copy: the pages its buffer pool held.
    (building / "ib_buffer_pool").unlink(missing_ok=True)
