"""Starting, watching and stopping the MariaDB server process, and the agent's connection."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path

import pymysql

from cove.common import binary_stamp
from cove.common.errors import CommandFailed, GuestError
from cove.domain.datastores.mariadb import (
    INSTALL_SQL,
    INSTALL_TIME,
    TEMPLATE_MARKER,
    template_cnf,
    template_name,
)
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.child import ChildServer, read_pid_file
from cove.guestagent.datastores import membership
from cove.guestagent.datastores.base import REPLICA_MARKER, WRITES_REFUSED_MARKER
from cove.guestagent.datastores.mariadb import conf, galera
from cove.guestagent.datastores.mariadb.privileges import startup_sql
from cove.guestagent.guestlogs import enabled_logs

LOG = logging.getLogger(__name__)

INSTALL_DB = "mariadb-install-db"
#: InnoDB's redo log (one file since MariaDB 10.5), in ``conf.redo_dir``.
REDO_LOG = "ib_logfile0"


def beside_server(bin_dir: Path, program: str) -> Path:
    """The ``program`` that goes with the server in ``bin_dir`` (Debian keeps the server in sbin
    and its tools in bin), else the one on PATH. Raises GuestError when there is none."""
    for candidate in (bin_dir / program, bin_dir.parent / "bin" / program):
        if candidate.is_file():
            return candidate
    found = shutil.which(program)
    if found is None:
        raise GuestError(f"{program} is not installed")
    return Path(found)


def install_db(bin_dir: Path) -> Path:
    """The mariadb-install-db of the server in ``bin_dir``; raises GuestError when there is
    none."""
    return beside_server(bin_dir, INSTALL_DB)


def user_option() -> list[str]:
    """``--user`` when the agent runs as root (mariadbd refuses root without it); the agent's
    own user otherwise, where the option would only draw a warning."""
    if os.geteuid() != 0:
        return []
    return [f"--user={pwd.getpwuid(os.geteuid()).pw_name}"]


def _sync_dir(path: Path) -> None:
    """Make what was renamed or removed in ``path`` durable. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MariaServer(ChildServer):
    """One MariaDB server: its data directory, its process and the agent's admin connection.

    Stopped with SIGTERM (a clean shutdown: InnoDB flushes and exits), then SIGKILL; a fenced
    primary with ``SHUTDOWN WAIT FOR ALL SLAVES`` first (:meth:`stop_for_replicas`).
    """

    title = "MariaDB"
    program = "mariadbd"

    def __init__(self, config: GuestSettings, on_exit: Callable[[int], None]) -> None:
        super().__init__(config, config.log_dir / conf.LOG_FILE, on_exit)
        self.bin_dir = Path(config.bin_dir)
        self.conf_file = config.conf_dir / conf.CONF_FILE
        self.secret_file = config.conf_dir / conf.ADMIN_SECRET
        self.init_file = config.conf_dir / conf.INIT_FILE
        self.socket = config.run_dir / conf.SOCKET
        self.pid_file = config.run_dir / conf.PID_FILE
        #: Called once the server answers after each start (the replication engine finishes
        #: setting up a new replica there); may raise GuestError, which fails the start.
        self.after_start: Callable[[], None] = lambda: None
        #: The next start begins a new Galera cluster (once: a later start joins it).
        self.new_cluster = False
        #: Where the next start of a member that stopped uncleanly goes on from (once).
        self._start_position: str | None = None

    # -- files -------------------------------------------------------------------------------

    @property
    def is_replica(self) -> bool:
        """Whether the server is (or starts as) a replica: the manager's marker says so."""
        return (self.config.conf_dir / REPLICA_MARKER).is_file()

    @property
    def clustered(self) -> bool:
        """Whether the server is a cluster member: its membership is recorded."""
        return membership.is_member(self.config.conf_dir)

    @property
    def is_source(self) -> bool:
        """Whether the server has been the source of replicas, and so writes the binary log
        for good: its marker says so, or the binary log an older agent began in the data
        directory (every server wrote one then, and its replicas may still follow it)."""
        return (self.config.conf_dir / conf.SOURCE_MARKER).is_file() or (
            self.config.data_dir / f"{conf.BINLOG}.index"
        ).is_file()

    @property
    def synchronous(self) -> bool:
        """Whether the server is in its group's synchronous mode: its marker says so."""
        return (self.config.conf_dir / conf.SYNCHRONOUS_MARKER).is_file()

    def write_config(self, replica: bool | None = None, refused: bool | None = None) -> None:
        """my.cnf, a replica's when ``replica`` (by default: when the marker says so), in
        synchronous mode when that marker says so, ``read_only`` when ``refused`` (by
        default: when the full volume's marker says so). Raises Unprocessable for an override
        no tenant may set."""
        replica = self.is_replica if replica is None else replica
        if refused is None:
            refused = (self.config.conf_dir / WRITES_REFUSED_MARKER).is_file()
        member = membership.read(self.config.conf_dir)
        cluster = (
            None if member is None else galera.settings(self.config, member, self.admin_password())
        )
        sections = "" if member is None else galera.sst_section(self.config)
        text = conf.my_cnf(
            self.config,
            replica,
            self.synchronous,
            cluster,
            sections,
            source=self.is_source,
            logs=enabled_logs(self.config.conf_dir),
        )
        if refused and not replica:
            # The volume is full; a replica's my.cnf has read_only already.
            text = text.replace("[mysqld]\n", "[mysqld]\nread_only = ON\n", 1)
        conf.write_private(self.conf_file, text)

    def write_init_file(self) -> None:
        """The SQL the server runs at every start, from the agent's password's verifier (the
        clear text never goes into it). Raises GuestError when the password is unreadable."""
        verifier = conf.native_password_hash(self.admin_password())
        conf.write_private(self.init_file, startup_sql(verifier))

    def _make_dirs(self) -> None:
        conf.tmp_dir(self.config).mkdir(mode=0o700, exist_ok=True)
        conf.plugin_dir(self.config).mkdir(mode=0o700, exist_ok=True)

    def make_places(self) -> None:
        """The instance's directories beside the data directory."""
        for directory in (self.config.conf_dir, self.config.log_dir, self.config.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._make_dirs()

    def empty_data_dir(self) -> None:
        """An empty data directory, and no redo log of the one that was: the journal
        directory's goes first, for good, so no crash leaves it beside a rebuilt data
        directory whose files it does not match. Raises OSError."""
        if self.config.journal_dir:
            journal = conf.redo_dir(self.config)
            for old in journal.glob("ib_logfile*"):
                old.unlink()
            _sync_dir(journal)
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)

    def place_redo(self) -> None:
        """Move a redo log found in the data directory to the journal directory before the
        server starts: one that mariadb-backup's prepare or a template left there, or one from
        before the instance had a journal directory. Copied and synced under another name,
        renamed, the directory synced, and only then removed from the data directory, so a
        move cut short is made again. Raises GuestError."""
        found = self.config.data_dir / REDO_LOG
        if not self.config.journal_dir or not found.is_file():
            return
        journal = conf.redo_dir(self.config)
        partial = journal / (REDO_LOG + ".partial")
        try:
            shutil.copyfile(found, partial)
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            partial.chmod(0o600)
            os.replace(partial, journal / REDO_LOG)
            _sync_dir(journal)
            found.unlink()
            _sync_dir(self.config.data_dir)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise GuestError(
                f"cannot move the redo log to the journal directory {journal}: {exc.strerror}"
            ) from exc
        LOG.info("moved the redo log to the journal directory %s", journal)

    def _copy_template(self) -> bool:
        """Fill the empty data directory from the version's template; False when there is
        none, the instance's group sets what a data directory is made with, or the copy failed
        (the data directory is empty again)."""
        if any(name.lower() in INSTALL_TIME for name in self.config.overrides):
            return False
        template = self._template()
        if template is None:
            return False
        data = self.config.data_dir
        try:
            before = template.stat().st_ino
            data.rmdir()
            process.copy_private(template, data)
            # Made again meanwhile (another server binary): what was copied may be half of it.
            if template.stat().st_ino != before or not self._ready(template):
                raise GuestError("the template was made again during the copy")
        except (CommandFailed, GuestError, OSError) as exc:
            LOG.warning("cannot copy the template data directory (%s); installing instead", exc)
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            return False
        return True

    def _ready(self, template: Path) -> bool:
        return binary_stamp.ready(template, TEMPLATE_MARKER, self.bin_dir / "mariadbd")

    def _template(self) -> Path | None:
        """The version's template made with this server binary, made here when there is none
        and the templates directory is this agent's to write (where Cove runs as root, the
        task manager makes it before the agent starts: ``cove.compute.templates``)."""
        if not self.config.template_dir:
            return None
        base = Path(self.config.template_dir)
        ready = base / template_name(self.config.datastore_version)
        if self._ready(ready):
            return ready
        if not os.access(base, os.W_OK):
            return None
        try:
            with (base / f"{ready.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._ready(ready):
                    self._make_template(ready)
                return ready
        except (OSError, GuestError) as exc:
            LOG.warning("no template data directory (%s); installing directly", exc)
            return None

    def _make_template(self, ready: Path) -> None:
        """Install a template into a directory of its own, rename it into place, then stamp
        it. Raises GuestError when the installer fails, OSError."""
        building = ready.with_name(f".{ready.name}.{os.getpid()}")
        work = building.with_name(building.name + ".install")
        for path in (building, work, work / "tmp"):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(mode=0o700)
        try:
            defaults, sql = work / "my.cnf", work / "install.sql"
            conf.write_private(defaults, template_cnf(building, work / "tmp"))
            conf.write_private(sql, INSTALL_SQL)
            process.run(
                [
                    install_db(self.bin_dir),
                    f"--defaults-file={defaults}",
                    *user_option(),
                    "--skip-test-db",
                    "--skip-name-resolve",
                    f"--extra-file={sql}",
                ],
                timeout=300,
                cwd=building,
            )
            (building / "ib_buffer_pool").unlink(missing_ok=True)
            if ready.exists():
                shutil.rmtree(ready)  # made by another binary
            building.rename(ready)
            binary_stamp.write(ready, self.bin_dir / "mariadbd")
        except CommandFailed as exc:
            raise GuestError(f"cannot install the template: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(building, ignore_errors=True)
        LOG.info("made the template data directory for MariaDB %s", self.config.datastore_version)

    def ensure_admin_password(self) -> None:
        """The agent's password, made when there is none yet (a replica's prepare may come
        before any warm-up made one): the init file gives it to the copied grant tables."""
        if not self.secret_file.is_file():
            conf.write_private(self.secret_file, conf.new_admin_password() + "\n")

    def initialise(self) -> None:
        """A fresh data directory with the system tables and the agent's account (a new
        password), and my.cnf. Raises GuestError when mariadb-install-db fails."""
        self.make_places()
        self.empty_data_dir()
        password = conf.new_admin_password()
        conf.write_private(self.secret_file, password + "\n")
        self.write_init_file()
        self.write_config()
        if self._copy_template():
            return  # the init file writes the agent's account at the first start
        bootstrap = self.config.conf_dir / "bootstrap.sql"
        conf.write_private(bootstrap, conf.bootstrap_sql(password))
        try:
            process.run(
                [
                    install_db(self.bin_dir),
                    f"--defaults-file={self.conf_file}",
                    *user_option(),
                    "--skip-test-db",
                    "--skip-name-resolve",
                    f"--extra-file={bootstrap}",
                ],
                timeout=300,
                cwd=self.config.data_dir,
            )
        except CommandFailed as exc:
            raise GuestError(
                f"cannot install the system tables: {exc} " + process.tail(self.log_file, 3)
            ) from exc
        finally:
            bootstrap.unlink(missing_ok=True)

    def admin_password(self) -> str:
        """The agent's own password; raises GuestError when it is unreadable."""
        try:
            return self.secret_file.read_text().strip()
        except OSError as exc:
            raise GuestError(f"cannot read the MariaDB admin password: {exc.strerror}") from exc

    # -- process -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        # --defaults-file comes first, so no file under /etc/mysql is read.
        command = [str(self.bin_dir / "mariadbd"), f"--defaults-file={self.conf_file}"]
        if self.new_cluster:
            command.append("--wsrep-new-cluster")
            self.new_cluster = False
        if self._start_position is not None:
            command.append(f"--wsrep-start-position={self._start_position}")
            self._start_position = None
        return command + user_option()

    def read_pid(self) -> int | None:
        return read_pid_file(self.pid_file)

    def before_start(self) -> None:
        # A cluster member answers only once it holds the cluster's data: a joiner's copy
        # takes as long as the data is large.
        self.start_timeout = galera.JOIN_TIMEOUT if self.clustered else ChildServer.start_timeout
        self._make_dirs()
        self.place_redo()
        if self.clustered and not self.new_cluster and galera.needs_recovery(self.config.data_dir):
            argv = [str(self.bin_dir / "mariadbd"), f"--defaults-file={self.conf_file}"]
            log = conf.tmp_dir(self.config) / "wsrep-recover.log"
            self._start_position = galera.recover_position([*argv, *user_option()], log)
            LOG.info("recovered the member's position: %s", self._start_position)
        self.write_init_file()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a socket left by a killed server is not an answer

    def start(self) -> None:
        """Start (or adopt) the server, block until it answers, then run ``after_start``.
        Raises GuestError."""
        super().start()
        self.after_start()

    def stop_for_replicas(self) -> None:
        """A clean shutdown that first sends every event of the binary log to the replicas
        connected (``SHUTDOWN WAIT FOR ALL SLAVES``: a plain shutdown may end their dump
        threads before its last client threads, and what those wrote would reach no
        replica); then, when the server has not ended in time, as :meth:`stop`."""
        with self._lock:
            pid, proc = self.pid, self._proc
            # Asked for: the exit is no crash.
            self._stopping = True
        if pid is None:
            return
        try:
            conn = self.connect()
            with conn.cursor() as cur:
                cur.execute("SHUTDOWN WAIT FOR ALL SLAVES")
            with contextlib.suppress(pymysql.MySQLError):
                conn.close()
        except (GuestError, pymysql.MySQLError) as exc:
            LOG.warning("cannot shut MariaDB down by SQL; stopping it: %s", exc)
        else:
            self._wait_exit(pid, proc, self.stop_timeout)
        self.stop()

    # -- connections -------------------------------------------------------------------------

    def connect(self, timeout: int = 120) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A connection as the agent's account over the unix socket (no network), whose reads
        and writes give up after ``timeout`` seconds. Raises GuestError when the server does
        not take it."""
        try:
            return pymysql.connect(
                unix_socket=str(self.socket),
                user=conf.ADMIN_USER,
                password=self.admin_password(),
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=min(5, timeout),
                read_timeout=timeout,
                write_timeout=timeout,
                # The tenant may change the global SQL mode: the agent's sessions keep theirs.
                # The agent's own statements (its vital signs every few seconds, its account
                # changes) never go into the tenant's general or slow-query log.
                init_command=(
                    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', "
                    "sql_log_off = ON, long_query_time = 31536000"
                ),
                # No TLS over the unix socket: newer PyMySQL's default (PREFERRED) tries it,
                # building a TLS context from the system's CA store for each connection (30 ms
                # of each here).
                ssl_disabled=True,
            )
        except pymysql.MySQLError as exc:
            raise GuestError(f"cannot connect to MariaDB: {exc.args[-1]}") from exc

    def ping(self) -> bool:
        """Whether the server answers; a cluster member only once it is in step with its
        cluster and takes queries (``wsrep_ready``): before, it refuses them."""
        if not self.socket.exists():
            return False
        try:
            with self.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                if self.clustered:
                    cur.execute("SHOW STATUS LIKE 'wsrep_ready'")
                    row = cur.fetchone()
                    return row is not None and str(row[1]) == "ON"
            return True
        except (GuestError, pymysql.MySQLError):
            return False
