"""Starting, watching and stopping the MariaDB server process, and the agent's connection."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path

import pymysql

from cove.common.errors import CommandFailed, GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.child import ChildServer, read_pid_file
from cove.guestagent.datastores.mariadb import conf
from cove.guestagent.datastores.mariadb.privileges import startup_sql

INSTALL_DB = "mariadb-install-db"


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


class MariaServer(ChildServer):
    """One MariaDB server: its data directory, its process and the agent's admin connection.

    Stopped with SIGTERM (a clean shutdown: InnoDB flushes and exits), then SIGKILL.
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

    # -- files -------------------------------------------------------------------------------

    def write_config(self) -> None:
        """Raises Unprocessable for an override no tenant may set."""
        conf.write_private(self.conf_file, conf.my_cnf(self.config))

    def write_init_file(self) -> None:
        """The SQL the server runs at every start, from the agent's password's verifier (the
        clear text never goes into it). Raises GuestError when the password is unreadable."""
        verifier = conf.native_password_hash(self.admin_password())
        conf.write_private(self.init_file, startup_sql(verifier))

    def _make_dirs(self) -> None:
        conf.tmp_dir(self.config).mkdir(mode=0o700, exist_ok=True)
        conf.plugin_dir(self.config).mkdir(mode=0o700, exist_ok=True)

    def initialise(self) -> None:
        """A fresh data directory with the system tables and the agent's account (a new
        password), and my.cnf. Raises GuestError when mariadb-install-db fails."""
        for directory in (self.config.conf_dir, self.config.log_dir, self.config.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._make_dirs()
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        password = conf.new_admin_password()
        conf.write_private(self.secret_file, password + "\n")
        self.write_init_file()
        self.write_config()
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
                cwd=data,
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
        return [
            str(self.bin_dir / "mariadbd"),
            f"--defaults-file={self.conf_file}",
            *user_option(),
        ]

    def read_pid(self) -> int | None:
        return read_pid_file(self.pid_file)

    def before_start(self) -> None:
        self._make_dirs()
        self.write_init_file()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a socket left by a killed server is not an answer

    # -- connections -------------------------------------------------------------------------

    def connect(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A connection as the agent's account over the unix socket (no network). Raises
        GuestError when the server does not take it."""
        try:
            return pymysql.connect(
                unix_socket=str(self.socket),
                user=conf.ADMIN_USER,
                password=self.admin_password(),
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=5,
                read_timeout=120,
                write_timeout=120,
                # The tenant may change the global SQL mode: the agent's sessions keep theirs.
                init_command="SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
            )
        except pymysql.MySQLError as exc:
            raise GuestError(f"cannot connect to MariaDB: {exc.args[-1]}") from exc

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except (GuestError, pymysql.MySQLError):
            return False
