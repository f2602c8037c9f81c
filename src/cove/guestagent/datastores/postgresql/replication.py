"""PostgreSQL streaming replication: the primary's replication account, a hot standby copied
from a primary, promotion, and where the server stands.

A primary keeps one account for its replicas, ``cove_replication``: ``REPLICATION LOGIN`` and
nothing else (``pg_hba.conf`` lets it stream over TCP with SCRAM and refuses it any database;
``conf.pg_hba_conf``). Its password is made once, at random, and kept in the configuration
directory (mode 0600), so every ``source`` answers the same one; the server holds only its
SCRAM verifier.

A replica is made with ``pg_basebackup -X stream -R`` into an emptied data directory, the
password handed over in a passfile of mode 0600 in the configuration directory, which stays:
the agent writes its own ``primary_conninfo`` into ``postgresql.auto.conf`` naming that
passfile, never the password, because a tenant's ``root`` (``pg_read_all_settings``) can read
``primary_conninfo``; the server reads it at every start, and ``standby.signal`` keeps it a
standby across restarts.
The replica's configuration stays the agent's own (``postgresql.conf`` lives in the
configuration directory, not in the copied data directory).

Detaching promotes the standby (``pg_promote``, which also removes ``standby.signal``) and
takes ``primary_conninfo`` out, so a restart never makes it a standby again.

Changing primaries: ``fence`` is a fast shutdown (PostgreSQL's walsenders send every record,
the shutdown checkpoint included, to connected standbys before it ends) and answers the
position just past that checkpoint, which a standby must have replayed before it is
promoted without loss. ``promote`` is ``pg_promote`` keeping the account. ``repoint`` gives
a running standby a new ``primary_conninfo`` and passfile and reloads (it follows the new
primary's timeline by itself). ``rejoin`` runs ``pg_rewind`` from the new primary (it needs
``wal_log_hints``, which every server has, and reads files through functions granted to the
replication account, bounded to the data directory); when the histories never forked that is
a quick check; when the rewind fails the data directory is copied afresh.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cove.common.errors import CommandFailed, GuestError
from cove.domain.replication import ReplicaSource, ReplicationState, Role
from cove.guestagent import process
from cove.guestagent.datastores.postgresql import conf, reload, scram
from cove.guestagent.datastores.postgresql.server import PostgresServer
from cove.guestagent.datastores.replication_password import recorded_password

LOG = logging.getLogger(__name__)

#: The primary's record of its replication account's password, in the configuration directory.
PASSWORD_FILE = "replication-password"
#: Where a replica's ``pg_basebackup`` and then its server find the password (mode 0600, in the
#: configuration directory: never in a setting a tenant can read).
PASSFILE = "replication.pgpass"
#: How long copying the source's data may take.
COPY_TIMEOUT = 6 * 3600.0
#: Seconds ``pg_promote`` waits for the standby to leave recovery.
PROMOTE_WAIT = 240
#: Settings that make the server a standby, which ``detach`` takes out.
STANDBY_SETTINGS = ("primary_conninfo", "primary_slot_name")
#: What a replica answers to a change: a read-only server refuses it.
READ_ONLY = "This instance is a read-only replica"
#: The file that makes the server start as a standby, in the data directory.
STANDBY_SIGNAL = "standby.signal"
#: The primary's ``synchronous_standby_names`` in synchronous mode: a commit waits until
#: any one standby has flushed it.
SYNCHRONOUS = "ANY 1 (*)"
#: How long a ``pg_rewind`` may take before the old primary is copied afresh instead.
REWIND_TIMEOUT = 3600.0
#: The functions ``pg_rewind`` calls on its source (a non-superuser needs them granted).
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


def is_standby(data_dir: Path) -> bool:
    """Whether the server of ``data_dir`` is (or will start as) a standby."""
    return (data_dir / STANDBY_SIGNAL).is_file()


#: The settings a hot standby needs at least as high as its primary has them, by the label
#: ``pg_controldata`` shows the primary's value under (the control file records them).
STANDBY_FLOORS = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}


def control_values(text: str) -> dict[str, int]:
    """The settings of :data:`STANDBY_FLOORS` in ``pg_controldata``'s output."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        label, _, value = line.partition(":")
        found[label.strip()] = value.strip()
    return {
        name: int(found[label])
        for name, label in STANDBY_FLOORS.items()
        if found.get(label, "").isdigit()
    }


def parse_lsn(text: str) -> int:
    """``0/3000028`` as a byte position; raises ValueError."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def shutdown_position(text: str) -> int | None:
    """From ``pg_controldata``'s output, the position just past a cleanly stopped server's
    last record (its shutdown checkpoint, which a standby has replayed once its replay
    position reaches this); None when the server did not stop cleanly."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        label, _, value = line.partition(":")
        found[label.strip()] = value.strip()
    if found.get("Database cluster state") not in ("shut down", "shut down in recovery"):
        return None
    try:
        return parse_lsn(found["Latest checkpoint location"]) + 1
    except (KeyError, ValueError):
        return None


def pgpass_field(value: str) -> str:
    """``value`` as one field of a libpq passfile (``:`` and ``\\`` escaped)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def conninfo_value(value: str) -> str:
    """``value`` quoted for a libpq connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def primary_conninfo(source: ReplicaSource, passfile: Path, application_name: str) -> str:
    """The connection string a standby streams from ``source`` with: the password stays in
    ``passfile``."""
    parts = {
        "host": source.host,
        "port": str(source.port),
        "user": source.user,
        "passfile": str(passfile),
        "application_name": application_name,
    }
    return " ".join(f"{key}={conninfo_value(value)}" for key, value in parts.items())


def without_settings(text: str, names: tuple[str, ...]) -> str:
    """``postgresql.auto.conf``'s ``text`` without the lines that set ``names``."""
    kept = [
        line
        for line in text.splitlines(keepends=True)
        if line.split("=", 1)[0].strip().lower() not in names
    ]
    return "".join(kept)


class PostgresReplication:
    """The ``ReplicationEngine`` of a PostgreSQL manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, server: PostgresServer) -> None:
        # The server's settings follow apply_configuration: read them there every time.
        self.server = server
        self._lock = threading.Lock()

    @property
    def _data(self) -> Path:
        return self.server.config.data_dir

    def _controldata(self) -> str:
        """``pg_controldata`` of the data directory; raises CommandFailed."""
        return process.run(
            [Path(self.server.config.bin_dir) / "pg_controldata", "-D", self._data],
            env={**os.environ, "LC_ALL": "C"},
            timeout=30,
        ).stdout

    def standby_floors(self) -> dict[str, int]:
        """On a standby, the values its primary last had for the settings a standby needs at
        least as high (a replica may have a smaller flavor, or its primary may have grown);
        nothing elsewhere, or when they cannot be read (the server then says which one is
        too low)."""
        if not is_standby(self._data):
            return {}
        try:
            out = self._controldata()
        except CommandFailed as exc:
            LOG.warning("cannot read the primary's settings from the control file: %s", exc)
            return {}
        return control_values(out)

    # -- the primary's side ------------------------------------------------------------------

    def begin_source(self) -> bool:
        """Never: the WAL every server writes (the default ``wal_level = replica``) is what a
        standby streams."""
        return False

    def source(self) -> ReplicaSource:
        config = self.server.config
        with self._lock:
            try:
                with self.server.connect() as conn:
                    if _in_recovery(conn):
                        raise GuestError(
                            f"{READ_ONLY}: it cannot be the source of another replica; "
                            "make replicas of its primary."
                        )
                    # In synchronous mode a commit waits for a replica, and a promoted
                    # primary's replicas need this very account to connect again.
                    conn.execute("SET synchronous_commit = local")
                    password = recorded_password(self.server.config.conf_dir / PASSWORD_FILE)
                    self._ensure_account(conn, password)
            except psycopg.Error as exc:
                raise GuestError(f"cannot set up the replication account: {_first(exc)}") from exc
            self._ensure_hba()
        return ReplicaSource(
            instance_id=config.instance_id,
            host=config.address,
            port=config.port,
            user=conf.REPLICATION_USER,
            password=password,
        )

    @staticmethod
    def _ensure_account(conn: psycopg.Connection, password: str) -> None:
        """The replication role exists, with replication rights only and ``password``
        (altered only when its verifier is not one of ``password``: replicas see every
        change of the primary's catalog)."""
        row = conn.execute(
            "SELECT rolreplication, rolpassword FROM pg_authid WHERE rolname = %s",
            [conf.REPLICATION_USER],
        ).fetchone()
        if row is not None and not row[0]:
            raise GuestError(
                f"A role named {conf.REPLICATION_USER} exists that the guest agent did not make; "
                "rename it before making replicas."
            )
        account = sql.Identifier(conf.REPLICATION_USER)
        if row is None or not scram.matches(str(row[1] or ""), password):
            verb = "ALTER" if row is not None else "CREATE"
            conn.execute(
                sql.SQL(
                    verb + " ROLE {} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOINHERIT NOBYPASSRLS PASSWORD {}"
                ).format(account, sql.Literal(scram.verifier(password)))
            )
            LOG.info("%s the replication account", "made" if verb == "CREATE" else "updated")
        for function in REWIND_FUNCTIONS:  # GRANT is idempotent; an older agent made none
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION " + function + " TO {}").format(account)
            )

    def _ensure_hba(self) -> None:
        """``pg_hba.conf`` lets the account stream (a file written by an older agent may
        not); the server reads it again before a replica may try."""
        path = self.server.config.conf_dir / "pg_hba.conf"
        wanted = conf.pg_hba_conf()
        try:
            if path.read_text() == wanted:
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise GuestError(f"cannot read pg_hba.conf: {exc.strerror}") from exc
        try:
            conf.write_private(path, wanted)
        except OSError as exc:
            raise GuestError(f"cannot write pg_hba.conf: {exc.strerror}") from exc
        reload.reload(self.server.connect, self.server.log_file)

    # -- the replica's side ------------------------------------------------------------------

    def make_replica(self, source: ReplicaSource) -> None:
        data = self._data
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(mode=0o700)
        LOG.info("copying the data of instance %s", source.instance_id)
        self._copy(source)
        self._stand_by(source)
        LOG.info("copied the data of instance %s; starting as its replica", source.instance_id)

    def _copy(self, source: ReplicaSource) -> None:
        """``pg_basebackup`` of ``source`` into the empty data directory, the password in the
        passfile the standby goes on using."""
        config = self.server.config
        passfile = config.conf_dir / PASSFILE
        try:
            self._write_passfile(source)
            env = {**os.environ, "PGPASSFILE": str(passfile), "PGCONNECT_TIMEOUT": "30"}
            env.pop("PGPASSWORD", None)
            process.run(
                [
                    Path(config.bin_dir) / "pg_basebackup",
                    *("-h", source.host, "-p", str(source.port), "-U", source.user),
                    *("-D", self._data, "-X", "stream", "-R"),
                    "--checkpoint=fast",
                    "--no-password",
                ],
                env=env,
                timeout=COPY_TIMEOUT,
            )
        except (CommandFailed, OSError) as exc:
            passfile.unlink(missing_ok=True)
            why = exc.message if isinstance(exc, CommandFailed) else exc.strerror
            raise GuestError(
                f"cannot copy the data of instance {source.instance_id}: {why}"
            ) from exc

    def _stand_by(self, source: ReplicaSource) -> None:
        """The copy starts as a standby of ``source``, at every start, with a connection
        string of the agent's own (naming the passfile by its full path)."""
        data = self._data
        auto = data / "postgresql.auto.conf"
        config = self.server.config
        conninfo = primary_conninfo(source, config.conf_dir / PASSFILE, config.instance_id)
        try:
            text = without_settings(auto.read_text(), STANDBY_SETTINGS)
            conf.write_private(auto, f"{text}primary_conninfo = {conf.quote(conninfo)}\n")
            (data / STANDBY_SIGNAL).touch(mode=0o600)
            data.chmod(0o700)
        except OSError as exc:
            raise GuestError(f"cannot set the replica up: {exc.strerror}") from exc

    def detach(self) -> None:
        with self._lock:
            try:
                with self.server.connect() as conn:
                    if self._leave_recovery(conn):
                        self._close_copied_account(conn)
            except psycopg.Error as exc:
                raise GuestError(f"cannot detach the replica: {_first(exc)}") from exc
            self._forget_source()

    def promote(self) -> None:
        with self._lock:
            try:
                with self.server.connect() as conn:
                    if self._leave_recovery(conn):
                        # Until its first checkpoint the control file still names the old
                        # timeline, and pg_rewind of an old primary against it would find
                        # "no rewind required" for a history that forked.
                        conn.execute("CHECKPOINT")
            except psycopg.Error as exc:
                raise GuestError(f"cannot promote the replica: {_first(exc)}") from exc
            self._forget_source()

    def _leave_recovery(self, conn: psycopg.Connection) -> bool:
        """Promote a standby (after it replayed all it received) and take its standby
        settings out; True when there was anything to do."""
        promoted = _in_recovery(conn)
        if promoted:
            LOG.info("promoting the replica to a read-write server")
            row = conn.execute(
                "SELECT pg_promote(wait => true, wait_seconds => %s)", [PROMOTE_WAIT]
            ).fetchone()
            if not row or not row[0]:
                raise GuestError(f"PostgreSQL did not leave recovery within {PROMOTE_WAIT} s")
        standing = [n for n in STANDBY_SETTINGS if _scalar(conn, f"SHOW {n}")]
        for name in standing:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        if standing:
            conn.execute("SELECT pg_reload_conf()")
            LOG.info("the server no longer streams from a primary")
        return promoted or bool(standing)

    def _forget_source(self) -> None:
        # The server removes it when promoted; one an earlier attempt left goes too.
        (self._data / STANDBY_SIGNAL).unlink(missing_ok=True)
        (self.server.config.conf_dir / PASSFILE).unlink(missing_ok=True)

    def fence(self) -> int | None:
        with self._lock:
            self.server.stop()
            try:
                position = shutdown_position(self._controldata())
            except CommandFailed as exc:
                LOG.warning("cannot read where the server stopped: %s", exc.message)
                return None
        if position is None:
            LOG.warning("the server had not stopped cleanly: its last position is unknown")
        return position

    def repoint(self, source: ReplicaSource) -> bool:
        with self._lock:
            if not is_standby(self._data) or not self.server.running():
                return False
            config = self.server.config
            conninfo = primary_conninfo(source, config.conf_dir / PASSFILE, config.instance_id)
            try:
                self._write_passfile(source)
                with self.server.connect() as conn:
                    if not _in_recovery(conn):
                        return False
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
                            sql.Literal(conninfo)
                        )
                    )
                    conn.execute("SELECT pg_reload_conf()")
            except psycopg.Error as exc:
                raise GuestError(f"cannot re-point the replica: {_first(exc)}") from exc
            except OSError as exc:
                raise GuestError(f"cannot record the new primary: {exc.strerror}") from exc
        return True

    def rejoin(self, source: ReplicaSource) -> None:
        with self._lock:
            try:
                self._write_passfile(source)
            except OSError as exc:
                raise GuestError(f"cannot record the new primary: {exc.strerror}") from exc
            # A replica does not own the group's replication password any more.
            (self.server.config.conf_dir / PASSWORD_FILE).unlink(missing_ok=True)
            if not self._rewind(source):
                LOG.warning("copying the data of instance %s afresh", source.instance_id)
                self.make_replica(source)
            self._stand_by(source)

    def _rewind(self, source: ReplicaSource) -> bool:
        """``pg_rewind`` the stopped server's data directory to ``source``'s history; False
        when it cannot (the data directory is then copied afresh)."""
        config = self.server.config
        if not (self._data / "PG_VERSION").is_file():
            return False
        parts = {
            "host": source.host,
            "port": str(source.port),
            "user": source.user,
            "dbname": "postgres",
            "passfile": str(config.conf_dir / PASSFILE),
        }
        conninfo = " ".join(f"{key}={conninfo_value(value)}" for key, value in parts.items())
        env = {**os.environ, "PGCONNECT_TIMEOUT": "30", "LC_ALL": "C"}
        env.pop("PGPASSWORD", None)
        try:
            out = process.run(
                [
                    Path(config.bin_dir) / "pg_rewind",
                    *("--target-pgdata", self._data, "--source-server", conninfo),
                    # Its crash recovery of a server that did not stop cleanly runs with the
                    # agent's settings (wal_log_hints among them), not the data directory's.
                    f"--config-file={config.conf_dir / 'postgresql.conf'}",
                    "--no-sync",
                ],
                env=env,
                timeout=REWIND_TIMEOUT,
                cwd=config.run_dir,
            )
        except CommandFailed as exc:
            LOG.warning("pg_rewind could not rewind the data directory: %s", exc.message)
            return False
        said = (out.stdout + out.stderr).strip().splitlines()
        LOG.info("pg_rewind: %s", said[-1] if said else "done")
        return True

    def _write_passfile(self, source: ReplicaSource) -> None:
        conf.write_private(
            self.server.config.conf_dir / PASSFILE,
            f"*:*:*:{pgpass_field(source.user)}:{pgpass_field(source.password)}\n",
        )

    def _close_copied_account(self, conn: psycopg.Connection) -> None:
        """The replication account came with the copy, with the old primary's password: a
        detached server takes it away (its own ``source`` gives the account a password of
        its own when it gets replicas)."""
        if (self.server.config.conf_dir / PASSWORD_FILE).exists():
            return
        known = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", [conf.REPLICATION_USER]
        ).fetchone()
        if known:
            account = sql.Identifier(conf.REPLICATION_USER)
            conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(account))

    # -- either side -------------------------------------------------------------------------

    def set_synchronous(self, enabled: bool) -> None:
        # ALTER SYSTEM, which a standby takes too: the setting waits there for a promotion.
        statement = (
            f"ALTER SYSTEM SET synchronous_standby_names = {conf.quote(SYNCHRONOUS)}"
            if enabled
            else "ALTER SYSTEM RESET synchronous_standby_names"
        )
        try:
            with self.server.connect() as conn:
                conn.execute(statement)
                conn.execute("SELECT pg_reload_conf()")
        except psycopg.Error as exc:
            raise GuestError(f"cannot set synchronous replication: {_first(exc)}") from exc

    def state(self) -> ReplicationState:
        try:
            with self.server.connect() as conn:
                if _in_recovery(conn):
                    # What it holds durably: a promotion replays all of it first.
                    position = _scalar(
                        conn,
                        "SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                        " - '0/0'::pg_lsn",
                    )
                    streaming = _scalar(
                        conn,
                        "SELECT count(*) > 0 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                    )
                    return ReplicationState(
                        Role.REPLICA, None if position is None else int(position), bool(streaming)
                    )
                position = _scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
                return ReplicationState(Role.PRIMARY, int(position), False)
        except psycopg.Error as exc:
            raise GuestError(f"cannot read the replication state: {_first(exc)}") from exc


def _in_recovery(conn: psycopg.Connection) -> bool:
    return bool(_scalar(conn, "SELECT pg_is_in_recovery()"))


def _scalar(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
