"""The PostgreSQL datastore manager: a facade over the server, its config, its admin, its
backups and its replication."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import psycopg

from cove.common.errors import GuestError
from cove.domain.capabilities import capabilities
from cove.domain.guest import DatabaseVitals, GuestSettings
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.guestagent.datastores.postgresql import conf, reload, vitals
from cove.guestagent.datastores.postgresql.admin import PostgresAdmin
from cove.guestagent.datastores.postgresql.backup import PostgresBackups
from cove.guestagent.datastores.postgresql.replication import PostgresReplication
from cove.guestagent.datastores.postgresql.server import PostgresServer
from cove.guestagent.datastores.served import ServedManager
from cove.guestagent.guestlogs import enabled_logs

LOG = logging.getLogger(__name__)


class PostgresManager(ServedManager):
    server: PostgresServer
    admin: PostgresAdmin
    backups: PostgresBackups
    replication: PostgresReplication
    capabilities = capabilities("postgresql")

    def __init__(self, config: GuestSettings) -> None:
        super().__init__(config)
        self.admin = PostgresAdmin(self.server.connect)
        self.backups = PostgresBackups(config, self.server)
        self.replication = PostgresReplication(self.server)

    def _make_server(self, config: GuestSettings, on_exit: Callable[[int], None]) -> PostgresServer:
        return PostgresServer(config, on_exit)

    def write_config(self) -> None:
        """Write the server's files for ``self.config``; raises Unprocessable (before writing
        anything) for an override no tenant may set."""
        self._write_files(self._files(self.config))

    def _files(self, config: GuestSettings, refused: bool | None = None) -> dict[str, str]:
        main = conf.postgresql_conf(
            config, self.replication.standby_floors(), enabled_logs(config.conf_dir)
        )
        if self.writes_refused if refused is None else refused:
            # The last value of a setting wins; a tenant's session may still set it off, which
            # only the volume's own size then stops.
            main += "default_transaction_read_only = on  # the volume is full\n"
        return {
            # A standby refuses to run with fewer connections, workers, etc. than its primary.
            "postgresql.conf": main,
            "pg_hba.conf": conf.pg_hba_conf(),
            "pg_ident.conf": conf.pg_ident_conf(),
        }

    def apply_logs(self, enabled: frozenset[str]) -> None:
        """Rewrite postgresql.conf and have a running server reload it (both log settings
        are read at a reload). Raises GuestError when the server refuses them."""
        self._write_files(self._files(self.config))
        if self.server.running():
            self._reload("the log settings")

    def _reload(self, what: str) -> reload.ReloadResult:
        """Have the running server reload its files. Raises GuestError naming each setting
        of ``what`` it refused."""
        outcome = reload.reload(self.server.connect, self.server.log_file)
        if outcome.rejected:
            raise GuestError(
                f"PostgreSQL refused {what}: "
                + "; ".join(f"{name}: {why}" for name, why in outcome.rejected)
            )
        return outcome

    def _refuse_writes(self, refuse: bool) -> None:
        self._write_files(self._files(self.config, refuse))
        if self.server.running():
            reload.reload(self.server.connect, self.server.log_file)

    def _write_files(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            conf.write_private(self.config.conf_dir / name, text)

    def _read_files(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
            with contextlib.suppress(FileNotFoundError):
                out[name] = (self.config.conf_dir / name).read_text()
        return out

    def adopt(self) -> bool:
        adopted = super().adopt()
        if adopted:
            self.backups.archiver.resume()
        return adopted

    def server_started(self) -> None:
        super().server_started()
        self.backups.archiver.resume()

    def _after_restore(self) -> None:
        # A chain or a point in time: the server replays the archived WAL before it serves.
        self.backups.finish_replay()

    def _fill(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        with self.admin.session():
            self.admin.create_databases(databases)
            self.admin.create_users(users)

    # -- configuration -----------------------------------------------------------------------

    def _apply_configuration(self, old: GuestSettings, new: GuestSettings) -> bool:
        """Rewrite the files; while the server runs, have it reload them and answer, by
        ``pg_settings.pending_restart``, whether a changed setting waits for a restart. A
        value the server refuses raises GuestError naming it; on any failure the previous
        files and settings are put back (and reloaded)."""
        try:
            files = self._files(new)  # raises before anything is written
        except Exception:
            self.config = old
            raise
        previous = self._read_files()
        self.server.config = new
        try:
            self._write_files(files)
            if not self.server.running():
                return False  # the next start reads every setting
            outcome = self._reload("the configuration")
        except Exception:
            self.config = self.server.config = old
            self._write_files(previous)
            if self.server.running():
                with contextlib.suppress(GuestError):
                    reload.reload(self.server.connect, self.server.log_file)
            raise
        if outcome.pending_restart:
            LOG.info("settings waiting for a restart: %s", ", ".join(outcome.pending_restart))
        return bool(outcome.pending_restart)

    def effective_configuration(self) -> dict[str, str]:
        return {k: conf.show_value(v) for k, v in conf.settings(self.config).items()}

    def vitals(self) -> DatabaseVitals | None:
        if not self.prepared or not self.server.running():
            return None
        try:
            with self.server.connect() as db:
                db.execute("SET statement_timeout = 2000")  # a hung server: no late heartbeat
                return vitals.read(db)
        except (GuestError, psycopg.Error) as exc:
            LOG.debug("cannot read the server's vital signs: %s", exc)
            return None
