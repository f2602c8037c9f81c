"""MariaDB replication with GTIDs: the primary's replication account and copy offers, replicas
copied with mariadb-backup, promotion, fencing, re-pointing, and where a server stands.

A source writes a binary log with GTIDs (``conf.replication_settings``): a standalone server
writes none, and begins at a restart before its first replica is copied
(:meth:`MariaDBReplication.begin_source`), for good. A source keeps one account for its
replicas, ``cove_replication``@``%``, holding REPLICATION SLAVE and nothing else (the init
file cuts it back to that at every start); its password is made once, at random, and kept in
the configuration directory (mode 0600), so every ``source`` answers the same one; the server
holds only its verifier. Each ``source`` also
offers one copy of the data (``copy_channel.CopyOffer``).

A replica takes that copy into an emptied data directory (``mbstream``, then
``mariadb-backup --prepare``), with the GTID position the copy ends at (mariadb-backup's binlog
info). The password and that position wait in a file of mode 0600 in the configuration
directory until the server's first start, when the agent runs ``SET GLOBAL gtid_slave_pos``,
``CHANGE MASTER TO ... MASTER_USE_GTID = slave_pos`` and ``START SLAVE`` and removes the file
(:meth:`MariaDBReplication.finish_setup`; done again at a later start when the agent died
first). From then on the server keeps the password in ``master.info`` in its data directory,
which only the service user reads, and starts replicating at every start. No tenant sees it:
``SHOW SLAVE STATUS`` never shows a password (and needs a privilege root lacks), and the
agent's session turns the performance schema's statement history off for itself before it
names the password (a tenant's configuration group may switch that history on).

Positions are sequence numbers of GTID domain 0, the only domain Cove's servers write (none sets
``gtid_domain_id``): with ``gtid_strict_mode`` they grow by one with every transaction of the
group, whichever server wrote it, so a replica whose applied position (``gtid_slave_pos``) has
reached a primary's (its binary log's) has every one of its transactions.

Fencing is a clean shutdown with ``SHUTDOWN WAIT FOR ALL SLAVES``: clients are cut off first,
then every event of the binary log is sent to the connected replicas before the server ends.
``SET GLOBAL read_only`` would not do: the agent's own account (and any with READ_ONLY ADMIN)
writes past it, and it waits for every running statement first. The last position is read from
the binary log state the server writes at a clean shutdown (``<binlog>.state``), so a stopped
server answers it too.

MariaDB cannot rewind a server whose transactions went past the point where the group moved on
without it, so ``rejoin`` always copies the new primary's data afresh: it cannot tell cheaply
and safely whether the old data would do.

Synchronous mode is MariaDB's built-in semi-synchronous replication (``conf.semi_sync_settings``),
set live and kept in my.cnf, which is rendered from a marker in the configuration directory
like the replica's ``read_only``. Every member acknowledges what it receives; only a primary
waits for that acknowledgement (a replica would wait in its own replication thread, for ever),
so ``promote`` turns the waiting on and ``rejoin`` (a new my.cnf, for a replica) leaves it off.
A detached replica leaves the group and its synchronous mode: alone, it would never
acknowledge a commit. The replication account's changes stay out of the binary log: a
synchronous primary would otherwise wait, before its first replica connects (or right after
a promotion), for a replica to acknowledge the very account that replica connects with. The
fence's shutdown (``WAIT FOR ALL SLAVES``) waits as well for the commits still waiting for a
replica; while none acknowledges them, it ends in SIGKILL once the stop's time is up.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from cove.common.errors import CommandFailed, GuestError
from cove.domain.replication import ReplicaSource, ReplicationState, Role
from cove.guestagent.datastores.base import WRITES_REFUSED_MARKER, RestoreSource
from cove.guestagent.datastores.mariadb import conf, copy_channel
from cove.guestagent.datastores.mariadb.backup import FORMAT, FULL, MariadbBackups
from cove.guestagent.datastores.mariadb.privileges import REPLICATION_ACCESS
from cove.guestagent.datastores.mariadb.server import MariaServer
from cove.guestagent.datastores.mariadb.sql import READ_ONLY
from cove.guestagent.datastores.replication_password import recorded_password

LOG = logging.getLogger(__name__)

#: The primary's record of its replication account's password, in the configuration directory.
PASSWORD_FILE = "replication-password"
#: A new replica's source and GTID position until its first start sets them (mode 0600, in
#: the configuration directory).
SETUP_FILE = "replication-setup.json"
#: Where the server keeps its source, password included, in the data directory.
MASTER_INFO = "master.info"
#: Where mariadb-backup records the binary log position its copy ends at, in the copy (newer
#: versions use the first name, older ones the second).
BINLOG_INFO = ("mariadb_backup_binlog_info", "xtrabackup_binlog_info")
#: The one GTID domain Cove's servers write.
DOMAIN = 0
#: Seconds a promotion or a detach waits for the replica to apply what it received.
APPLY_WAIT = 240.0
#: Seconds a replica waits before it connects again to a source that went away.
CONNECT_RETRY = 10

_GTID = re.compile(r"(\d+)-(\d+)-(\d+)")


def gtid_seq(gtids: str, domain: int = DOMAIN) -> int | None:
    """The highest sequence number of ``domain`` in a GTID list (``0-1-100,1-2-5``, or one
    GTID a line as a binary log state file holds them); None when it names none of that
    domain. Raises ValueError for text that is no GTID list."""
    found: list[int] = []
    for item in re.split(r"[,\s]+", gtids.strip()):
        if not item:
            continue
        match = _GTID.fullmatch(item)
        if match is None:
            raise ValueError(f"not a GTID: {item!r}")
        if int(match[1]) == domain:
            found.append(int(match[3]))
    return max(found) if found else None


def binlog_info_gtid(text: str) -> str:
    """The GTID position in mariadb-backup's binlog info (``<file>\\t<offset>\\t<GTIDs>``), as a
    GTID list; empty when the copy's server had written no GTID yet. Raises ValueError for
    text of another form."""
    fields = text.split()
    if len(fields) not in (2, 3) or not fields[1].isdigit():
        raise ValueError(f"not a binary log position: {text.strip()!r}")
    gtids = fields[2] if len(fields) == 3 else ""
    gtid_seq(gtids)  # raises for what is no GTID list
    return gtids


def read_binlog_info(data: Path) -> str:
    """The GTID position of the copy in ``data``. Raises GuestError when mariadb-backup left
    none (the source wrote no binary log)."""
    for name in BINLOG_INFO:
        try:
            return binlog_info_gtid((data / name).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise GuestError(f"cannot read where the copy ends: {exc}") from exc
    raise GuestError("the copy records no binary log position: the source writes no binary log")


class MariaDBReplication:
    """The ``ReplicationEngine`` of a MariaDB manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, server: MariaServer, backups: MariadbBackups) -> None:
        # The server's settings follow apply_configuration: read them there every time.
        self.server = server
        self.backups = backups
        # Re-entrant: a start under one of these methods finishes a replica's setup.
        self._lock = threading.RLock()

    @property
    def _conf_dir(self) -> Path:
        return self.server.config.conf_dir

    @contextmanager
    def _cursor(self, doing: str) -> Iterator[pymysql.cursors.DictCursor]:
        """A cursor of rows as dicts on the agent's connection; raises GuestError (``doing``
        says what failed) when the server refuses."""
        try:
            with self.server.connect() as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
                yield cur
        except pymysql.MySQLError as exc:
            raise GuestError(f"cannot {doing}: {exc.args[-1]}") from exc

    # -- the primary's side ------------------------------------------------------------------

    def begin_source(self) -> bool:
        """Have the server write the binary log from its next start on, for good; True when
        that start is still to come (the running server writes none: a standalone server's
        first replica, or a restart that did not happen after an earlier call), False when
        it writes it already or is a replica or a cluster member. Raises GuestError when the
        server does not answer, or the marker or my.cnf cannot be written."""
        server = self.server
        if server.is_replica or server.clustered:
            return False
        with self._cursor("see whether the server writes a binary log") as cur:
            if _scalar(cur, "SELECT @@log_bin"):
                return False
        try:
            conf.write_private(self._conf_dir / conf.SOURCE_MARKER, "")
            server.write_config()
        except OSError as exc:
            raise GuestError(f"cannot begin the binary log: {exc.strerror}") from exc
        LOG.info("the server writes a binary log for replicas from its next start on")
        return True

    def source(self) -> ReplicaSource:
        """Where and as whom a replica connects (the same account and password every time),
        with a copy offer of its own. Raises GuestError on a replica, on a server that writes
        no binary log yet (:meth:`begin_source` and a restart come first), and when the server
        refuses."""
        config = self.server.config
        with self._lock:
            if self.server.is_replica:
                raise _refused_as_source()
            with self._cursor("set up the replication account") as cur:
                if _slave_status(cur) is not None:
                    raise _refused_as_source()
                if not _scalar(cur, "SELECT @@log_bin"):
                    raise GuestError(
                        "MariaDB writes no binary log yet: restart the instance before making "
                        "replicas of it"
                    )
                password = recorded_password(self._conf_dir / PASSWORD_FILE)
                _ensure_account(cur, password)
            try:
                offer = copy_channel.CopyOffer(
                    config.address, self.backups.open_copy, config.datastore_version
                )
            except OSError as exc:
                raise GuestError(f"cannot offer a copy of the data: {exc.strerror}") from exc
            offer.start()
        return ReplicaSource(
            instance_id=config.instance_id,
            host=config.address,
            port=config.port,
            user=conf.REPLICATION_USER,
            password=password,
            copy_port=offer.port,
            copy_token=offer.token,
        )

    # -- the replica's side ------------------------------------------------------------------

    def make_replica(self, source: ReplicaSource) -> None:
        """Replace the stopped server's data directory by a copy of ``source``'s, to start as
        its replica. Raises GuestError (naming the source) when the copy fails."""
        with self._lock:
            self.server.make_places()
            # The copy brings the source's grant tables; the init file gives the agent's
            # account this instance's password at every start.
            self.server.ensure_admin_password()
            (self._conf_dir / SETUP_FILE).unlink(missing_ok=True)
            LOG.info("copying the data of instance %s", source.instance_id)
            try:
                header, chunks = copy_channel.receive(source)
                meta = {"format": FORMAT, "version": str(header.get("version")), "type": FULL}
                self.backups.restore([RestoreSource(chunks, meta)])
                gtids = read_binlog_info(self.server.config.data_dir)
            except (GuestError, CommandFailed) as exc:
                raise GuestError(
                    f"cannot copy the data of instance {source.instance_id}: {exc.message}"
                ) from exc
            setup = {
                "host": source.host,
                "port": source.port,
                "user": source.user,
                "password": source.password,
                "gtid": gtids,
            }
            try:
                conf.write_private(self._conf_dir / SETUP_FILE, json.dumps(setup))
            except OSError as exc:
                raise GuestError(f"cannot set the replica up: {exc.strerror}") from exc
        LOG.info(
            "copied the data of instance %s up to GTID %s; starting as its replica",
            source.instance_id,
            gtids or "(none)",
        )

    def finish_setup(self) -> None:
        """Once a new replica's server runs: start replicating from the copy's position and
        remove the setup file (the server keeps the password in ``master.info`` from then
        on). Nothing when there is no setup waiting. A server that has its source already
        (the agent died before removing the file) only starts replicating: setting its
        position again would apply transactions twice. Raises GuestError."""
        path = self._conf_dir / SETUP_FILE
        if not path.is_file():
            return
        with self._lock:
            try:
                setup = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise GuestError(f"cannot read the replica's setup: {exc}") from exc
            with self._cursor("start replicating") as cur:
                if _slave_status(cur) is None:
                    cur.execute("SET GLOBAL gtid_slave_pos = %s", [setup["gtid"]])
                    _change_master(
                        cur, setup["host"], int(setup["port"]), setup["user"], setup["password"]
                    )
                cur.execute("START SLAVE")
            self._protect_master_info()
            path.unlink()
        LOG.info("replicating from %s:%s", setup["host"], setup["port"])

    def _protect_master_info(self) -> None:
        """``master.info`` (which holds the password) readable by the service user only: the
        server makes it 0660, under a data directory of mode 0700."""
        try:
            (self.server.config.data_dir / MASTER_INFO).chmod(0o600)
        except OSError as exc:
            raise GuestError(f"cannot protect the replica's source file: {exc.strerror}") from exc

    def detach(self) -> None:
        """Make a replica standalone: what it received is applied, its source forgotten, and
        writes allowed; the replication account it copied is closed (its own ``source``
        gives it a password of its own). Idempotent. Raises GuestError."""
        with self._lock, self._cursor("detach the replica") as cur:
            status = _slave_status(cur)
            if status is None and not self.server.is_replica:
                return
            if status is not None:
                LOG.info("detaching the replica from its primary")
                self._leave_source(cur)
            if self.server.synchronous:
                # Standalone, it would never acknowledge a commit.
                self._set_semi_sync(cur, False, primary=True)
                self._record_synchronous(False)
            self._allow_writes(cur)
            if not (self._conf_dir / PASSWORD_FILE).exists():
                # A password only the old primary's agent knows, and it never sees it again.
                cur.execute(
                    "ALTER USER IF EXISTS %s@'%%' IDENTIFIED BY PASSWORD %s",
                    [conf.REPLICATION_USER, conf.native_password_hash(secrets.token_hex(32))],
                )
        (self._conf_dir / SETUP_FILE).unlink(missing_ok=True)

    def _leave_source(self, cur: pymysql.cursors.DictCursor) -> None:
        """Stop receiving, apply everything received (the relay log: leaving before that
        loses transactions the primary committed), then forget the source. Raises
        GuestError when the replica cannot apply it within :data:`APPLY_WAIT`."""
        cur.execute("STOP SLAVE IO_THREAD")
        cur.execute("START SLAVE SQL_THREAD")
        status = _slave_status(cur) or {}
        received = str(status.get("Gtid_IO_Pos") or "")
        deadline = time.monotonic() + APPLY_WAIT
        while received:
            if _scalar(cur, "SELECT MASTER_GTID_WAIT(%s, 5)", [received]) == 0:
                break
            status = _slave_status(cur) or {}
            if status.get("Slave_SQL_Running") != "Yes":
                raise GuestError(
                    "the replica stopped applying what it received: "
                    f"{status.get('Last_SQL_Error') or 'its SQL thread is not running'}"
                )
            if time.monotonic() > deadline:
                raise GuestError(
                    f"the replica did not apply what it received within {APPLY_WAIT:.0f} s"
                )
        cur.execute("STOP SLAVE")
        cur.execute("RESET SLAVE ALL")

    def _allow_writes(self, cur: pymysql.cursors.DictCursor) -> None:
        """``read_only`` off, now and in my.cnf (the manager takes its replica marker away
        next; until then a start would read that marker). The binary log stays: a promoted
        replica is its group's source, and a detached one the source its old group's
        members may follow again. Raises GuestError when the marker cannot be written."""
        # Unless the volume is full: the guard's refusal outlives the replica's.
        refused = (self.server.config.conf_dir / WRITES_REFUSED_MARKER).is_file()
        cur.execute(f"SET GLOBAL read_only = {'ON' if refused else 'OFF'}")
        try:
            conf.write_private(self._conf_dir / conf.SOURCE_MARKER, "")
        except OSError as exc:
            raise GuestError(f"cannot record the binary log: {exc.strerror}") from exc
        self.server.write_config(replica=False)

    # -- either side -------------------------------------------------------------------------

    def state(self) -> ReplicationState:
        """A replica (it has a source, or is set up to get one) with its applied position and
        whether both its threads run; else a primary with the position it wrote. Raises
        GuestError."""
        with self._cursor("read the replication state") as cur:
            status = _slave_status(cur)
            cur.execute("SELECT @@gtid_binlog_pos AS written, @@gtid_slave_pos AS applied")
            row = cur.fetchone() or {}
        written = gtid_seq(str(row.get("written") or ""))
        applied = gtid_seq(str(row.get("applied") or ""))
        if status is not None or self.server.is_replica:
            streaming = (
                status is not None
                and status.get("Slave_IO_Running") == "Yes"
                and status.get("Slave_SQL_Running") == "Yes"
            )
            # No GTID applied yet is position 0: a source's binary log starts when it became
            # one, after everything its replicas' copies hold.
            return ReplicationState(Role.REPLICA, applied or 0, streaming)
        # A promoted replica's binary log holds only what it applied since its copy; what it
        # applied before counts too (nothing written yet: 0).
        return ReplicationState(Role.PRIMARY, max(written or 0, applied or 0), False)

    def set_synchronous(self, enabled: bool) -> None:
        """Synchronous mode (semi-synchronous replication, see the module's docstring) on or
        off, on the running server and in my.cnf; a running replica's receiving thread
        reconnects to take it. Idempotent. Raises GuestError when the server refuses or the
        mode cannot be recorded (a call again completes it)."""
        with self._lock:
            with self._cursor("set synchronous replication") as cur:
                status = _slave_status(cur)
                primary = status is None and not self.server.is_replica
                self._set_semi_sync(cur, enabled, primary)
                if status is not None and status.get("Slave_IO_Running") != "No":
                    receiving = _status_variable(cur, "Rpl_semi_sync_slave_status") == "ON"
                    if receiving != enabled:
                        # The receiving thread takes the setting only when it starts.
                        cur.execute("STOP SLAVE IO_THREAD")
                        cur.execute("START SLAVE IO_THREAD")
            self._record_synchronous(enabled)
        LOG.info(
            "semi-synchronous replication %s on this %s",
            "on" if enabled else "off",
            "primary" if primary else "replica",
        )

    @staticmethod
    def _set_semi_sync(cur: pymysql.cursors.DictCursor, enabled: bool, primary: bool) -> None:
        """Semi-synchronous replication on (waiting for replicas when ``primary``) or off
        (every setting back to the server's default) on the running server."""
        wanted = conf.semi_sync_settings(primary)
        if not enabled:
            for name in reversed(wanted):  # the waiting off before its timeout changes
                cur.execute(f"SET GLOBAL {name} = DEFAULT")
            return
        for name, value in wanted.items():  # the timeout before the waiting starts
            shown = conf.show_value(value) if isinstance(value, bool) else value
            cur.execute(f"SET GLOBAL {name} = %s", [shown])

    def _record_synchronous(self, enabled: bool) -> None:
        """The synchronous mode's marker, and my.cnf rendered from it. Raises GuestError."""
        marker = self._conf_dir / conf.SYNCHRONOUS_MARKER
        try:
            if enabled:
                marker.write_text("on\n")
            else:
                marker.unlink(missing_ok=True)
            self.server.write_config()
        except OSError as exc:
            raise GuestError(f"cannot record synchronous replication: {exc.strerror}") from exc

    # -- changing primaries ------------------------------------------------------------------

    def fence(self) -> int | None:
        """Shut the server down, its binary log sent to the connected replicas first, and
        answer the last position it wrote (None after an unclean stop). Idempotent."""
        with self._lock:
            if self.server.running():
                LOG.info("shutting MariaDB down for good, once its replicas have every event")
                self.server.stop_for_replicas()
            state = self.server.config.data_dir / f"{conf.BINLOG}.state"
            try:
                return gtid_seq(state.read_text()) or 0
            except FileNotFoundError:
                LOG.warning("the server had not stopped cleanly: its last position is unknown")
            except (OSError, ValueError) as exc:
                LOG.warning("cannot read where the server stopped: %s", exc)
            return None

    def promote(self) -> None:
        """Make the replica its group's read-write primary, after it applied everything it
        received; the replication account stays. Idempotent. Raises GuestError."""
        with self._lock, self._cursor("promote the replica") as cur:
            if _slave_status(cur) is not None:
                LOG.info("promoting the replica to its group's primary")
                self._leave_source(cur)
            if self.server.synchronous:
                # Before the first write it takes: none is acknowledged without a replica.
                self._set_semi_sync(cur, True, primary=True)
            self._allow_writes(cur)
        (self._conf_dir / SETUP_FILE).unlink(missing_ok=True)

    def repoint(self, source: ReplicaSource) -> bool:
        """Have the running replica stream from ``source``, from its own GTID position;
        False (changing nothing) when the server is not a running replica. Raises
        GuestError."""
        with self._lock:
            if not self.server.running():
                return False
            with self._cursor("re-point the replica") as cur:
                if _slave_status(cur) is None:
                    return False
                cur.execute("STOP SLAVE")
                _change_master(cur, source.host, source.port, source.user, source.password)
                cur.execute("START SLAVE")
            self._protect_master_info()
        return True

    def rejoin(self, source: ReplicaSource) -> None:
        """Copy ``source``'s data afresh into the stopped server's data directory (see the
        module's docstring for why never less). Raises GuestError."""
        with self._lock:
            # A replica does not own the group's replication password.
            (self._conf_dir / PASSWORD_FILE).unlink(missing_ok=True)
            self.make_replica(source)


def _refused_as_source() -> GuestError:
    return GuestError(
        f"{READ_ONLY}: it cannot be the source of another replica; make replicas of its primary."
    )


def _slave_status(cur: pymysql.cursors.DictCursor) -> dict[str, Any] | None:
    """The replica's ``SHOW SLAVE STATUS`` row; None on a server that has no source."""
    cur.execute("SHOW SLAVE STATUS")
    row = cur.fetchone()
    return dict(row) if row else None


def _scalar(cur: pymysql.cursors.DictCursor, query: str, params: list[object] | None = None) -> Any:
    cur.execute(query, params)
    row = cur.fetchone()
    return next(iter(row.values())) if row else None


def _status_variable(cur: pymysql.cursors.DictCursor, name: str) -> str | None:
    cur.execute("SHOW GLOBAL STATUS LIKE %s", [name])
    row = cur.fetchone()
    return str(row["Value"]) if row else None


def _ensure_account(cur: pymysql.cursors.DictCursor, password: str) -> None:
    """The replication account exists, with REPLICATION SLAVE and ``password`` (altered only
    when its verifier is another), changed on this server alone: see the module's docstring
    (replicas get the account with their copy). Raises GuestError for an account of that name
    the agent did not make."""
    cur.execute("SET SESSION sql_log_bin = 0")
    verifier = conf.native_password_hash(password)
    cur.execute(
        "SELECT JSON_VALUE(Priv, '$.authentication_string') AS verifier, "
        "CAST(JSON_VALUE(Priv, '$.access') AS UNSIGNED) AS access, "
        "JSON_VALUE(Priv, '$.account_locked') AS locked "
        "FROM mysql.global_priv WHERE User = %s AND Host = '%%'",
        [conf.REPLICATION_USER],
    )
    row = cur.fetchone()
    if row is None:
        cur.execute(
            "CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s", [conf.REPLICATION_USER, verifier]
        )
        cur.execute("GRANT REPLICATION SLAVE ON *.* TO %s@'%%'", [conf.REPLICATION_USER])
        LOG.info("made the replication account")
        return
    if not int(row["access"] or 0) & REPLICATION_ACCESS:
        raise GuestError(
            f"An account named {conf.REPLICATION_USER} exists that the guest agent did not "
            "make; rename it before making replicas."
        )
    if row["verifier"] != verifier or str(row["locked"]).lower() in ("true", "1"):
        cur.execute(
            "ALTER USER %s@'%%' IDENTIFIED BY PASSWORD %s ACCOUNT UNLOCK",
            [conf.REPLICATION_USER, verifier],
        )
        LOG.info("updated the replication account")


def _change_master(
    cur: pymysql.cursors.DictCursor, host: str, port: int, user: str, password: str
) -> None:
    """``CHANGE MASTER TO`` ``host``:``port`` as ``user``, from the replica's GTID position.
    The statement names the password, so the session first keeps its statements out of the
    performance schema (a table root reads)."""
    cur.execute(
        "UPDATE performance_schema.threads SET INSTRUMENTED = 'NO' "
        "WHERE PROCESSLIST_ID = CONNECTION_ID()"
    )
    cur.execute(
        "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, "
        "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = %s",
        [host, port, user, password, CONNECT_RETRY],
    )
