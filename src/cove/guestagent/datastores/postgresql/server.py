"""Starting, watching and stopping the PostgreSQL server process."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import psycopg

from cove.common import procfs
from cove.common.errors import CommandFailed, GuestError
from cove.domain import guestlogs
from cove.domain.datastores.postgresql import ADMIN_USER, initdb_argv, template_name
from cove.domain.guest import GuestSettings
from cove.guestagent import process
from cove.guestagent.child import ChildServer, read_pid_file

LOG = logging.getLogger(__name__)


class PostgresServer(ChildServer):
    """One PostgreSQL server: its data directory, its process and its admin connection.

    Stopped with a fast shutdown (SIGINT: clients are disconnected, committed work is kept),
    then SIGQUIT.
    """

    title = "PostgreSQL"
    program = "postgres"
    stop_signal = signal.SIGINT
    kill_signal = signal.SIGQUIT

    def __init__(self, config: GuestSettings, on_exit: Callable[[int], None]) -> None:
        super().__init__(
            config, config.log_dir / guestlogs.find("postgresql", "error").file, on_exit
        )
        self.bin_dir = Path(config.bin_dir)

    # -- data directory ----------------------------------------------------------------------

    def initialise(self) -> None:
        """Create a fresh data directory, from the version's template when there is one."""
        data = self.config.data_dir
        if data.exists():
            shutil.rmtree(data)
        template = self._template()
        if template is not None:
            try:
                process.copy_private(template, data)
            except (CommandFailed, GuestError) as exc:
                LOG.warning("cannot copy the template data directory (%s); running initdb", exc)
                shutil.rmtree(data, ignore_errors=True)
                template = None
        if template is None:
            self._initdb(data)
        data.chmod(0o700)

    def _initdb(self, target: Path) -> None:
        process.run(initdb_argv(self.config.bin_dir, target), timeout=300)

    def _template(self) -> Path | None:
        """A ready template data directory for this version, made on first use (where Cove
        runs as root, the task manager makes it, as the service user, before the agent
        starts: ``cove.compute.templates``; this agent's user may not write there).

        Copies of one template share its system identifier: fine for standalone instances.
        """
        if not self.config.template_dir:
            return None
        base = Path(self.config.template_dir)
        ready = base / template_name(self.config.datastore_version)
        if (ready / "PG_VERSION").is_file():
            return ready
        try:
            base.mkdir(parents=True, exist_ok=True)
            with (base / f"postgresql-{self.config.datastore_version}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if (ready / "PG_VERSION").is_file():
                    return ready
                building = base / f".postgresql-{self.config.datastore_version}.{os.getpid()}"
                if building.exists():
                    shutil.rmtree(building)
                self._initdb(building)
                building.rename(ready)
                LOG.info(
                    "made the template data directory for PostgreSQL %s",
                    self.config.datastore_version,
                )
                return ready
        except (OSError, GuestError) as exc:
            LOG.warning("no template data directory (%s); running initdb directly", exc)
            return None

    # -- process -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.config.data_dir),
            "-c",
            f"config_file={self.config.conf_dir / 'postgresql.conf'}",
        ]

    def read_pid(self) -> int | None:
        return read_pid_file(self.config.data_dir / "postmaster.pid")

    def before_start(self) -> None:
        # PostgreSQL takes a postmaster.pid naming a zombie for a live server and refuses to
        # start; a server adopted from an earlier agent is nobody's child once it dies, and the
        # init process may reap it only a second later. A process that has exited holds
        # nothing, so its lock file goes.
        pid = self.read_pid()
        if pid is not None and not procfs.alive(pid):
            (self.config.data_dir / "postmaster.pid").unlink(missing_ok=True)

    # -- connections -------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        try:
            return psycopg.connect(
                host=str(self.config.run_dir),
                port=self.config.port,
                user=ADMIN_USER,
                dbname=dbname,
                autocommit=autocommit,
                connect_timeout=5,
                # Objects that tenants create never shadow what the superuser calls; the
                # agent's own statements never go into the tenant's general or slow-query log.
                options=(
                    "-c search_path=pg_catalog -c log_statement=none "
                    "-c log_min_duration_statement=-1"
                ),
            )
        except psycopg.OperationalError as exc:
            raise GuestError(f"cannot connect to PostgreSQL: {exc}") from exc

    def ping(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
            return True
        except (GuestError, psycopg.Error):
            return False
