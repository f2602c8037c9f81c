"""Renders my.cnf from the guest config, the flavor and the configuration group, and the SQL
that gives a fresh data directory its only account: the agent's own.

Settings are spelled as the server names its variables (``innodb_buffer_pool_size``), sizes in
bytes, booleans ``ON``/``OFF``, so a value reads back from ``SHOW GLOBAL VARIABLES`` as it is
written here.

A server writes a binary log with GTIDs (:func:`replication_settings`) once it is or has been
part of a replication group or a cluster: a replica (which may be promoted), a cluster member, and
a source, which begins writing it at a restart when its first replica is made (the
:data:`SOURCE_MARKER`). A standalone server writes none: every commit would otherwise pay the
binary log's write and sync too, for replicas it may never have. A replica adds ``read_only``.
In synchronous mode (the :data:`SYNCHRONOUS_MARKER` in the configuration directory) every server
adds semi-synchronous replication (:func:`semi_sync_settings`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from pathlib import Path

from cove.common.errors import Unprocessable
from cove.domain import guestlogs
from cove.domain.datastores.mariadb import INSTALL_SQL
from cove.domain.guest import GuestSettings
from cove.domain.guestlogs import SLOW_QUERY_MS
from cove.domain.parameters import Value, denied

LOG = logging.getLogger(__name__)

#: The agent's own account: every privilege, from the unix socket only, its password in a
#: 0600 file under conf/.
ADMIN_USER = "cove_admin"
#: The account a primary keeps for its replicas (``REPLICATION SLAVE`` only, from anywhere; see
#: ``replication``).
REPLICATION_USER = "cove_replication"
ROOT_USER = "root"
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

CONF_FILE = "my.cnf"
ADMIN_SECRET = "admin.secret"
SOCKET = "mariadb.sock"
PID_FILE = "mariadbd.pid"
LOG_FILE = guestlogs.find("mariadb", "error").file
#: SQL the server runs at every start (conf/, mode 0600): see ``privileges.startup_sql``.
INIT_FILE = "init.sql"
#: The binary log's and the relay log's base names, in the data directory: when a copy of its
#: source's data replaces a replica's (or a rejoining server's) data directory, its logs go with
#: it, so a server never keeps the log of a history it no longer has.
BINLOG = "mariadb-bin"
RELAY_LOG = "relay-bin"
#: Days the binary log is kept: a replica away for longer cannot catch up (it is copied afresh).
BINLOG_DAYS = 3
#: Settings that replication relies on which the datastore's deny-list lets through (aliases of
#: denied ones, or ones that move the logs); an override of one is left out like a denied one.
REPLICATION_OWNED = frozenset({"expire_logs_days", "max_binlog_size", "log_basename"})
#: The marker, in the configuration directory, of a server that has been the source of replicas
#: (``MariaDBReplication.begin_source``): it writes the binary log for good.
SOURCE_MARKER = "source"
#: The marker, in the configuration directory, of a server in its group's synchronous mode
#: (``MariaDBReplication.set_synchronous``): my.cnf is rendered from it at every write.
SYNCHRONOUS_MARKER = "synchronous"
#: ``rpl_semi_sync_master_timeout`` in synchronous mode (ms): the largest the server takes (an
#: unsigned 64-bit number; the kernel caps the deadline, so a wait never ends by the clock).
#: When a wait times out, MariaDB switches semi-synchronous replication off and acknowledges
#: commits that no replica holds: the asynchronous fallback synchronous mode must never take.
SEMI_SYNC_TIMEOUT_MS = 2**64 - 1

DEFAULT_CHARACTER_SET = "utf8mb4"
DEFAULT_COLLATION = "utf8mb4_general_ci"

MIB = 1024 * 1024
#: A server variable's name as my.cnf and SET GLOBAL spell it.
NAME = re.compile(r"[a-z][a-z0-9_]*")


def native_password_hash(password: str) -> str:
    """The mysql_native_password verifier of ``password`` (``*`` and 40 hex digits): what the
    server stores, so the clear text never has to reach it."""
    # SHA-1 is what the protocol uses; the verifier is only ever compared by the server.
    inner = hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).digest()
    return "*" + hashlib.sha1(inner, usedforsecurity=False).hexdigest().upper()


def memory_settings(ram_mb: int) -> dict[str, Value]:
    """Memory settings for a server given ``ram_mb`` of memory: half for the buffer pool, a
    connection limit the rest can carry."""
    ram_mb = max(ram_mb, 128)
    pool_mb = max(64, ram_mb // 2) // 8 * 8
    heap_mb = max(16, min(256, ram_mb // 32))
    return {
        "innodb_buffer_pool_size": pool_mb * MIB,
        "max_connections": max(50, min(1000, ram_mb // 8)),
        "tmp_table_size": heap_mb * MIB,
        "max_heap_table_size": heap_mb * MIB,
    }


def tunables(config: GuestSettings) -> dict[str, Value]:
    """The settings a configuration group may change: the flavor-derived defaults with the
    group's overrides laid over them. Raises Unprocessable for an override no tenant may set."""
    out: dict[str, Value] = {
        **memory_settings(config.ram_mb),
        "character_set_server": DEFAULT_CHARACTER_SET,
        "collation_server": DEFAULT_COLLATION,
        # A row change is logged by its key and the columns it changed, not both whole rows:
        # replicas are exact copies, so the key finds the row, and a write-heavy load writes
        # a fraction of the binary log. Like every binlog_* setting, not a tenant's to change.
        "binlog_row_image": "MINIMAL",
    }
    for name, value in config.overrides.items():
        key = name.lower()
        if not NAME.fullmatch(key):
            raise Unprocessable(
                f"The configuration parameter {name} is not supported for this datastore: "
                f"mariadb {config.datastore_version}."
            )
        if denied("mariadb", key) or key in REPLICATION_OWNED:
            # Denied after the group was made: the server starts without it.
            LOG.warning("leaving out the denied parameter %s", name)
            continue
        out[key] = value
    return out


def tmp_dir(config: GuestSettings) -> Path:
    """The instance's own tmpdir: a starting server deletes ``#sql*`` files in its tmpdir, so
    instances never share one."""
    return config.root / "tmp"


def plugin_dir(config: GuestSettings) -> Path:
    """An empty directory of the instance's own: INSTALL SONAME finds nothing to load."""
    return config.root / "plugin"


def redo_dir(config: GuestSettings) -> Path:
    """Where InnoDB's redo log lives: the instance's journal directory, beside its volume,
    when it has one (``GuestSettings.journal_dir``), else the data directory."""
    return Path(config.journal_dir) if config.journal_dir else config.data_dir


def redo_settings(config: GuestSettings) -> dict[str, Value]:
    """The redo log in :func:`redo_dir`. Its size stays the server's own (no tenant may
    change it): out of the volume, it must not grow with what a tenant asks."""
    if not config.journal_dir:
        return {}
    return {"innodb_log_group_home_dir": config.journal_dir}


def server_id(instance_id: str) -> int:
    """The instance's ``server_id``, from its id: the GTIDs a server writes carry it, and a
    replica ignores events of its own id, so the servers of one replication group must differ
    (two of a group share one with odds of one in four billion)."""
    digest = hashlib.sha256(instance_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % (2**32 - 1) + 1


def binlog_size(volume_gb: int) -> int:
    """``max_binlog_size``: a 32nd of the volume (16 MiB to 1 GiB), so old binary logs are
    rotated, and then purged, well before they could fill a small volume."""
    return max(16 * MIB, min(1024 * MIB, volume_gb * 1024 * MIB // 32))


def semi_sync_settings(primary: bool) -> dict[str, Value]:
    """Semi-synchronous replication, in the order to set them live: a server acknowledges each
    transaction it receives once its relay log holds it, and a ``primary`` acknowledges a
    commit to its client only once a replica has (waiting after the binary log is synced,
    before the commit is visible; with no timeout, and also while no replica is connected).

    A replica's own waiting stays off: its replication thread writes what it applies into its
    binary log too (``log_slave_updates``) and would wait there, for ever, for a replica of
    the replica; promoted, it turns it on (``MariaDBReplication.promote``)."""
    return {
        "rpl_semi_sync_master_wait_point": "AFTER_SYNC",
        "rpl_semi_sync_master_timeout": SEMI_SYNC_TIMEOUT_MS,
        "rpl_semi_sync_master_wait_no_slave": True,
        "rpl_semi_sync_master_enabled": primary,
        "rpl_semi_sync_slave_enabled": True,
    }


def replication_settings(
    config: GuestSettings, replica: bool, synchronous: bool = False, binlog: bool = True
) -> dict[str, Value]:
    """The binary log with GTIDs when ``binlog`` (a replica always writes one). A replica
    (``replica``) is read-only: every account but the agent's (which holds READ_ONLY ADMIN)
    is refused writes, while its replication thread applies its primary's. In
    ``synchronous`` mode, :func:`semi_sync_settings`."""
    out: dict[str, Value] = {
        "server_id": server_id(config.instance_id),
        "relay_log": str(config.data_dir / RELAY_LOG),
        # The server otherwise refuses triggers and routines to accounts without SUPER
        # (root's too): what they do might replicate differently as a statement, which the
        # row format (that no tenant can change) never sends.
        "log_bin_trust_function_creators": True,
        # A GTID out of order (a write that reached only one server of the group) stops
        # replication instead of letting the servers drift apart silently.
        "gtid_strict_mode": True,
    }
    if binlog or replica:
        out |= {
            "log_bin": str(config.data_dir / BINLOG),
            "binlog_format": "ROW",  # without a binary log, the server warns that it is unused
            # A replica writes what it applies into its own binary log: promoted, it is a
            # source whose replicas go on from their GTID positions.
            "log_slave_updates": True,
            "binlog_expire_logs_seconds": BINLOG_DAYS * 86400,
            "max_binlog_size": binlog_size(config.volume_gb),
        }
    if replica:
        out["read_only"] = True
    if synchronous:
        out |= semi_sync_settings(primary=not replica)
    return out


def settings(
    config: GuestSettings,
    replica: bool = False,
    synchronous: bool = False,
    cluster: dict[str, Value] | None = None,
    source: bool = False,
    logs: frozenset[str] = frozenset(),
) -> dict[str, Value]:
    """Everything in the [mysqld] section: :func:`tunables`, then the instance's places,
    safety and replication settings (a replica's with ``replica``, semi-synchronous ones
    with ``synchronous``, the binary log for a replica, a cluster member and a ``source``),
    the guest logs enabled (``logs``) and a cluster member's ``cluster`` settings, which no
    override can change."""
    fixed: dict[str, Value] = {
        "datadir": str(config.data_dir),
        "tmpdir": str(tmp_dir(config)),
        "socket": str(config.run_dir / SOCKET),
        "pid_file": str(config.run_dir / PID_FILE),
        "log_error": str(config.log_dir / LOG_FILE),
        "bind_address": config.address,
        "port": config.port,
        "skip_name_resolve": True,
        # Nothing of the host's file system reaches a tenant through the server.
        "local_infile": False,
        "symbolic_links": False,
        "secure_file_priv": str(tmp_dir(config)),
        "skip_grant_tables": False,
        "plugin_dir": str(plugin_dir(config)),
        # Undoes, before any client connects, what the tenant's root did to the accounts.
        "init_file": str(config.conf_dir / INIT_FILE),
        **redo_settings(config),
        **replication_settings(config, replica, synchronous, binlog=source or cluster is not None),
        **log_settings(config, logs),
        **(cluster or {}),
    }
    # The instance's places and safety always win over whatever a group holds; a slow-query
    # log's threshold is the group's when it sets one.
    return {"long_query_time": SLOW_QUERY_MS / 1000, **tunables(config), **fixed}


def log_settings(config: GuestSettings, logs: frozenset[str]) -> dict[str, Value]:
    """The general and slow-query logs (``cove.domain.guestlogs``), on when in ``logs``,
    always in their files in the log directory."""
    return {
        "log_output": "FILE",
        "general_log": "general" in logs,
        "general_log_file": str(config.log_dir / log_file("general")),
        "slow_query_log": "slow_query" in logs,
        "slow_query_log_file": str(config.log_dir / log_file("slow_query")),
    }


def log_file(name: str) -> str:
    return guestlogs.find("mariadb", name).file


def show_value(value: Value) -> str:
    """A value as SHOW GLOBAL VARIABLES prints it and my.cnf takes it."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    return str(value)


def render_value(value: Value) -> str:
    """A value as my.cnf spells it: text other than plain words in double quotes. Raises
    Unprocessable for text that would end the line (my.cnf has no escape for it)."""
    text = show_value(value)
    if any(ch in text for ch in "\n\r\0"):
        raise Unprocessable("A configuration value must be one line of text.")
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.,:/@+=-]+", value):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def my_cnf(
    config: GuestSettings,
    replica: bool = False,
    synchronous: bool = False,
    cluster: dict[str, Value] | None = None,
    sections: str = "",
    source: bool = False,
    logs: frozenset[str] = frozenset(),
) -> str:
    """The whole my.cnf (a replica's with ``replica``, in synchronous mode with
    ``synchronous``, a cluster member's with its ``cluster`` settings, a ``source``'s), then
    ``sections``; raises Unprocessable as :func:`tunables` does."""
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n", "[mysqld]\n"]
    lines += [
        f"{key} = {render_value(value)}\n"
        for key, value in settings(config, replica, synchronous, cluster, source, logs).items()
    ]
    return "".join(lines) + sections


def bootstrap_sql(admin_password: str) -> str:
    """SQL run once by mariadb-install-db: every account it made goes (root and the OS user
    over the unix socket) but the server's own ``mariadb.sys``; the agent's account comes in
    with every privilege. Grant statements do not work while the tables are being installed,
    so the account is written into the grant table directly, with its password's verifier."""
    verifier = native_password_hash(admin_password)
    priv = (
        '{"access":18446744073709551615,"plugin":"mysql_native_password",'
        f'"authentication_string":"{verifier}"}}'
    )
    # A fixed account name and a hexadecimal verifier: nothing here comes from a request.
    account = f"('localhost', '{ADMIN_USER}', '{priv}')"
    return INSTALL_SQL + "INSERT INTO mysql.global_priv VALUES " + account + ";\n"  # noqa: S608


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file may have had a wider mode
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def new_admin_password() -> str:
    return secrets.token_urlsafe(32)
