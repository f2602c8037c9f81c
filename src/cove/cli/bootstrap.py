"""What ``cove up`` does once, before any of its services runs.

It owns the data directory (created, with ``log/``; mode 0711 as root so the service user can
reach its instances), the control database (a SQLite file is created mode 0600 before anything
connects; the schema is upgraded to head; flavors, roles and the default network are seeded and
the installed datastore versions registered), the token key, the administrator created on first
start, ``<data>/clouds.yaml`` and the banner. It starts no process, so it leaves none running
when it fails, and every step is idempotent: it runs at every start, and ``cove-manage db
upgrade`` runs :func:`bootstrap_catalog` on its own.

:mod:`cove.cli.up` calls it in two steps: :func:`prepare_data_dir` before the embedded bus
starts, then :func:`bootstrap`; the returned :class:`Bootstrapped` feeds :func:`banner`.

Errors propagate: ``ConfigurationError`` (a token key that cannot be read or created, an
``address_pool`` that overlaps another network), ``OSError`` from the data directory, and the
control database's own errors (SQLAlchemy, Alembic). A clouds.yaml that cannot be read or
written is not an error: it becomes :attr:`Access.problem`, shown in the banner.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove.cli import clouds
from cove.cli.clouds import Login
from cove.common import cgroups
from cove.common.settings import Settings
from cove.compute import firewall, volumes

if TYPE_CHECKING:
    from cove.db.engine import Database


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory and its ``log/``. Raises OSError when it cannot."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # The service user must be able to enter the data directory to reach its instances.
        data.chmod(0o711)
    for sub in ("log",):
        (data / sub).mkdir(exist_ok=True)


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite control database URL; None for another database or an in-memory
    one."""
    if not database_url.startswith("sqlite:///"):
        return None
    name = database_url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def create_private(sqlite: Path) -> None:
    """Create the SQLite control database, which holds password hashes, empty and mode 0600
    before anything connects to it (SQLite gives its -wal and -shm files the database's mode).
    An existing file, or a missing directory, is left alone."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(sqlite, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_private(sqlite: Path) -> None:
    """Give the SQLite control database and its -wal and -shm files mode 0600, for databases
    an earlier version left readable to others."""
    for path in (
        sqlite,
        sqlite.with_name(f"{sqlite.name}-wal"),
        sqlite.with_name(f"{sqlite.name}-shm"),
    ):
        if path.is_file():
            path.chmod(0o600)


def bootstrap_catalog(settings: Settings) -> list[str]:
    """Migrate the control database, seed flavors, register installed datastore versions, and
    make sure the roles, the default network and the token key exist."""
    from cove.common.keys import ensure_key
    from cove.db.catalog import register_found_versions, seed_flavors
    from cove.db.engine import Database
    from cove.db.migrate import upgrade
    from cove.db.networks import sync_default_network
    from cove.identity.store import ensure_roles

    sqlite = sqlite_file(settings.database_url)
    if sqlite is not None:
        create_private(sqlite)
    upgrade(settings.database_url)
    if sqlite is not None:
        make_private(sqlite)
    ensure_key(settings.token_key_file)
    ensure_key(settings.task_key_file)
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            seed_flavors(s)
            ensure_roles(s)
            sync_default_network(s, settings)
            found = register_found_versions(s)
    finally:
        db.dispose()
    return [f"{f.datastore} {f.version}" for f in found]


#: The administrator ``cove up`` creates on first start, in the administrative project
#: (setting ``admin_project``).
ADMIN = "admin"


@dataclass(frozen=True)
class Access:
    """How clients reach this Cove, for the banner: the clouds.yaml holding the ``cove`` cloud
    (None when there is none), the admin project's id, the administrator's credentials when
    they were created just now (shown once), and why clouds.yaml could not be written."""

    clouds_file: Path | None
    project_id: str | None
    created: Login | None
    problem: str = ""


def _file_owner(path: Path) -> tuple[int, int] | None:
    """Who should own clouds.yaml: the process's user, except that root keeps the owner of an
    existing file and otherwise gives it to the user who ran sudo."""
    if os.geteuid() != 0:
        return None
    if path.exists():
        st = path.stat()
        return st.st_uid, st.st_gid
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None


def write_clouds_file(settings: Settings, login: Login | None) -> str:
    """Bring the ``cove`` cloud of ``<data>/clouds.yaml`` up to date; returns "" or a problem.

    New credentials (``login``) are written in; without them the stored password is kept and
    only the auth URL and region follow the settings. An unreadable file is left alone.
    """
    path = settings.data_dir / "clouds.yaml"
    existing: dict[str, Any] | None = None
    if path.exists():
        try:
            existing = clouds.read_document(path)
        except clouds.CloudConfigError as exc:
            return f"{exc}: left as it is"
    doc = clouds.updated_clouds(existing, f"{settings.api_url}/identity/v3", settings.region, login)
    if doc is None:
        if existing is not None and clouds.COVE_CLOUD in (existing.get("clouds") or {}):
            return ""
        return (
            f"{path} has no '{clouds.COVE_CLOUD}' cloud and the {ADMIN} password is not known "
            f"here; 'cove-manage user set-password {ADMIN}' sets a new one"
        )
    try:
        clouds.write_private(path, doc, _file_owner(path))
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return ""


def _no_users(db: Database) -> bool:
    """Whether the identity service has no user at all: a fresh control database."""
    from sqlalchemy import select

    from cove.db.models import User

    with db.session() as s:
        return s.scalar(select(User.id).limit(1)) is None


def prepare_access(settings: Settings) -> Access:
    """With the embedded identity service: on first start (no user at all yet) create the
    administrator, then keep ``<data>/clouds.yaml`` up to date. Run after bootstrap_catalog.

    An operator who later deletes or renames ``admin`` does not get it back: with any user
    present nothing is created.
    """
    from cove.common.errors import NotFound
    from cove.common.keys import load_key
    from cove.db.engine import Database
    from cove.identity import store
    from cove.identity.service import IdentityService
    from cove.identity.tokens import TokenSigner

    if settings.auth_strategy != "embedded":
        return Access(None, None, None)
    db = Database(settings.database_url)
    try:
        password = None
        if _no_users(db):
            identity = IdentityService(settings, db, TokenSigner(load_key(settings.token_key_file)))
            password = identity.bootstrap(project=settings.admin_project, user=ADMIN)
        with db.session() as s:
            try:
                project_id: str | None = store.find_project(s, settings.admin_project).id
            except NotFound:
                project_id = None
    finally:
        db.dispose()
    login = Login(ADMIN, settings.admin_project, password) if password else None
    problem = write_clouds_file(settings, login)
    path = settings.data_dir / "clouds.yaml"
    return Access(path if path.is_file() and not problem else None, project_id, login, problem)


#: Gets a token with curl, in bash (``read -p`` means something else in zsh). The password is
#: read without echo into a shell variable and fed to curl's standard input by ``printf``, a
#: shell builtin, so it appears in no process's argv; ``printf`` puts it in the JSON as typed.
_CURL_TOKEN = """\
  read -rsp 'Password of {user}: ' PW; echo
  TOKEN=$(printf '{{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{
      "name": "{user}", "domain": {{"id": "default"}}, "password": "%s"}}}}}}, "scope": {{
      "project": {{"name": "{project}", "domain": {{"id": "default"}}}}}}}}}}' "$PW" \\
    | curl -s -o /dev/null -D - {url}/identity/v3/auth/tokens \\
        -H 'Content-Type: application/json' --data-binary @- \\
    | awk 'tolower($1) == "x-subject-token:" {{print $2}}' | tr -d '\\r')
  curl -s -H "X-Auth-Token: $TOKEN" {url}/v1.0/{project_id}/instances
"""


def _identity_lines(settings: Settings, access: Access) -> tuple[str, str]:
    """(the Identity line of the summary, the block about credentials)."""
    if settings.auth_strategy != "embedded":
        return f"{settings.keystone_url}  (external Keystone)", (
            "\nClients authenticate with that Keystone; the catalog must list Cove as the "
            "'database' service.\n"
        )
    block = ""
    if access.created is not None:
        c = access.created
        saved = f" (it is saved in {access.clouds_file})" if access.clouds_file else ""
        block += (
            f"\nAn administrator was created; the password is not shown again{saved}:\n"
            f"  user {c.username}   project {c.project_name}   password {c.password}\n"
        )
    if access.problem:
        block += f"\nNote: {access.problem}\n"
    return f"{settings.api_url}/identity/v3  (Keystone v3, embedded)", block


def limits_line(settings: Settings) -> str:
    """What the host enforces on instances, in the banner's words: said loudly when it is not
    (the task manager's log says it too)."""
    groups, why_groups = cgroups.detect(settings.cgroup_parent)
    found, why_volumes = volumes.detect(settings.data_dir / "volumes")
    held, lacking = [], []
    if groups is not None:
        held.append(f"memory and CPU of the flavor ({why_groups})")
    else:
        lacking.append(f"memory and CPU ({why_groups})")
    if found is not None:
        held.append(f"volume sizes ({why_volumes})")
    else:
        lacking.append(f"volume sizes ({why_volumes})")
    host_filter, why_filter = firewall.detect(settings.data_dir)
    if host_filter is not None:
        held.append(f"allowed_cidrs ({why_filter})")
    else:
        lacking.append(f"allowed_cidrs ({why_filter})")
    line = "; ".join(held) if held else "none"
    if lacking:
        line += "\n  NOT ENFORCED: " + "; ".join(lacking)
    return line


def banner(settings: Settings, versions: list[str], access: Access) -> str:
    """What ``cove up`` prints once the API answers: where things are and how to start."""
    url = settings.api_url
    found = ", ".join(versions) if versions else "none (install postgresql)"
    bin_dir = Path(sys.executable).parent
    identity, credentials = _identity_lines(settings, access)
    env = f'export PATH="{bin_dir}:$PATH"'
    if access.clouds_file is not None:
        env += f" OS_CLIENT_CONFIG_FILE={access.clouds_file} OS_CLOUD={clouds.COVE_CLOUD}"
    else:
        env += (
            f" OS_AUTH_URL={url}/identity/v3 OS_USERNAME={ADMIN} "
            f"OS_PROJECT_NAME={settings.admin_project}\n"
            f"  read -rsp 'Password of {ADMIN}: ' OS_PASSWORD && export OS_PASSWORD"
        )
    openstack = "openstack"
    if access.clouds_file is not None:
        openstack += f" --os-cloud {clouds.COVE_CLOUD}"
    # The console signs in through the embedded identity service only.
    console_note = "" if settings.auth_strategy == "embedded" else "  (needs the embedded identity)"
    curl = _CURL_TOKEN.format(
        url=url,
        user=ADMIN,
        project=settings.admin_project,
        project_id=access.project_id or "<project id>",
    )
    return f"""
Cove is running.
  API:         {url}  (Trove v1.0: {url}/v1.0/<project id>/...)
  Console:     {url}/console{console_note}
  Identity:    {identity}
  Data:        {settings.data_dir}
  Datastores:  {found}
  Limits:      {limits_line(settings)}
{credentials}
Try it in another terminal:
  {env}
  cove flavor list
  cove instance create orders --datastore postgresql --flavor small --size 2 \\
      --database orders --user app:secret --wait
  {openstack} database instance list
      (the openstack command: pip install python-openstackclient python-troveclient)

With curl in bash, get a token (it asks for the {ADMIN} password; type " and \\ as \\" and \\\\):
{curl}
Projects, users and roles: cove-manage project|user|role --help.
Ctrl-C stops the control plane; database instances keep running.
"""


@dataclass(frozen=True)
class Bootstrapped:
    """What :func:`bootstrap` leaves for the banner: the datastore versions found installed
    (``"postgresql 16"``) and how clients reach this Cove."""

    versions: list[str]
    access: Access


def bootstrap(settings: Settings) -> Bootstrapped:
    """Bring the control database up to date (:func:`bootstrap_catalog`), then the
    administrator and clouds.yaml (:func:`prepare_access`). Run after :func:`prepare_data_dir`;
    raises what those raise."""
    versions = bootstrap_catalog(settings)
    access = prepare_access(settings)
    return Bootstrapped(versions, access)
