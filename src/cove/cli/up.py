"""``cove up``: the whole control plane on one machine.

It prepares the data directory, starts the embedded bus (unless a transport URL is set),
upgrades the control database, registers what is installed, creates the administrator on first
start and keeps ``<data>/clouds.yaml`` up to date, then runs the API, a task manager and a
conductor as child processes, restarting any that dies. Ctrl-C stops the control plane;
database instances and their guest agents keep running and are re-attached on the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove.cli import clouds
from cove.cli.clouds import Login
from cove.common.service_user import service_user
from cove.common.settings import Settings

if TYPE_CHECKING:
    from cove.db.engine import Database

LOG = logging.getLogger("cove.up")

SERVICES = ("conductor", "taskmanager", "api")
MAX_QUICK_DEATHS = 5


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0


def prepare_data_dir(settings: Settings) -> None:
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
    from cove.db.catalog import register_found_versions, seed_flavors
    from cove.db.engine import Database
    from cove.db.migrate import upgrade
    from cove.db.networks import sync_default_network
    from cove.identity.store import ensure_roles
    from cove.identity.tokens import ensure_key

    sqlite = sqlite_file(settings.database_url)
    if sqlite is not None:
        create_private(sqlite)
    upgrade(settings.database_url)
    if sqlite is not None:
        make_private(sqlite)
    ensure_key(settings.token_key_file)
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
    from cove.db.engine import Database
    from cove.identity import store
    from cove.identity.service import IdentityService
    from cove.identity.tokens import TokenSigner, load_key

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


def banner(settings: Settings, versions: list[str], access: Access) -> str:
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
    curl = _CURL_TOKEN.format(
        url=url,
        user=ADMIN,
        project=settings.admin_project,
        project_id=access.project_id or "<project id>",
    )
    return f"""
Cove is running.
  API:         {url}  (Trove v1.0: {url}/v1.0/<project id>/...)
  Identity:    {identity}
  Data:        {settings.data_dir}
  Datastores:  {found}
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


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children = {name: Child(name) for name in SERVICES}
        self._stop = threading.Event()
        self.failed: str | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["COVE_DATA_DIR"] = str(self.settings.data_dir)
        env["COVE_TRANSPORT_URL"] = self.settings.transport_url
        env["COVE_DATABASE_URL"] = self.settings.database_url
        env["COVE_API_PORT"] = str(self.settings.api_port)
        env["COVE_API_HOST"] = self.settings.api_host
        return env

    def _spawn(self, child: Child) -> None:
        log = (self.settings.data_dir / "log" / f"{child.name}.log").open("ab")
        try:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "cove.cli.services", child.name],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        child.started = time.monotonic()
        LOG.info("started %s (pid %d)", child.name, child.proc.pid)

    def run(self) -> int:
        for child in self.children.values():
            self._spawn(child)
        while not self._stop.wait(0.2):
            for child in self.children.values():
                proc = child.proc
                if proc is None or proc.poll() is None:
                    continue
                lived = time.monotonic() - child.started
                child.quick_deaths = child.quick_deaths + 1 if lived < 5 else 0
                log = self.settings.data_dir / "log" / f"{child.name}.log"
                if child.quick_deaths >= MAX_QUICK_DEATHS:
                    self.failed = (
                        f"{child.name} keeps exiting (status {proc.returncode}); see {log}"
                    )
                    LOG.error("%s", self.failed)
                    self._stop.set()
                    break
                LOG.warning(
                    "%s exited with status %s; restarting it (see %s)",
                    child.name,
                    proc.returncode,
                    log,
                )
                time.sleep(min(2.0, 0.2 * 2**child.quick_deaths))
                self._spawn(child)
        self.terminate()
        return 1 if self.failed else 0

    def stop(self) -> None:
        self._stop.set()

    def terminate(self) -> None:
        procs = [c.proc for c in self.children.values() if c.proc and c.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for_api(settings: Settings, timeout: float = 30.0) -> bool:
    import httpx

    url = f"http://{settings.api_host}:{settings.api_port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def up(settings: Settings) -> int:
    """Run the control plane until Ctrl-C or SIGTERM; return the exit status."""
    from cove.cli.embedded_bus import EmbeddedBus

    prepare_data_dir(settings)
    bus: EmbeddedBus | None = None
    if settings.embedded_bus:
        identity = service_user(settings.service_user)
        bus = EmbeddedBus(settings, identity)
        bus.start()
    supervisor = Supervisor(settings)

    def handler(signum: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        versions = bootstrap_catalog(settings)
        access = prepare_access(settings)
        waiter = threading.Thread(
            target=lambda: (
                print(banner(settings, versions, access), flush=True)
                if wait_for_api(settings)
                else LOG.error("the API did not come up; see %s", settings.data_dir / "log")
            ),
            daemon=True,
        )
        waiter.start()
        status = supervisor.run()
    finally:
        if bus is not None:
            bus.stop()
    print("Cove stopped. Database instances keep running; 'make run' re-attaches them.")
    return status
