"""PostgreSQL, as Cove runs it: one server per instance, its data directory the volume."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

from cove.domain.datastores.base import (
    Capability,
    Datastore,
    FoundVersion,
    NameRules,
    StrayServer,
)
from cove.domain.guest import GuestSettings

if TYPE_CHECKING:
    from cove.domain.parameters import Parameter
    from cove.guestagent.datastores.base import DatastoreManager


#: The superuser the guest agent logs in as (over its socket, by peer authentication).
ADMIN_USER = "os_admin"


def initdb_argv(bin_dir: str, target: Path, group_access: bool = False) -> list[str]:
    """How a data directory is made, by an instance's agent or (``group_access``: readable by
    the service user's group, so instances can copy it) as a template by the control plane."""
    argv = [
        str(Path(bin_dir) / "initdb"),
        "--pgdata",
        str(target),
        "--username",
        ADMIN_USER,
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--no-instructions",
        "--no-sync",
    ]
    return [*argv, "--allow-group-access"] if group_access else argv


def template_name(version: str) -> str:
    """The template data directory of ``version`` below the templates directory."""
    return f"postgresql-{version}"


def find_versions() -> list[FoundVersion]:
    from cove.compute.discovery import find_postgresql

    return find_postgresql()


def server_version(bin_dir: Path) -> str | None:
    from cove.compute.discovery import pg_version

    return pg_version(bin_dir)


def read_parameters(bin_dir: str) -> list[Parameter]:
    from cove.compute.parameters import postgresql

    return postgresql.read_parameters(bin_dir)


def manager(settings: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.postgresql.manager import PostgresManager

    return PostgresManager(settings)


# fmt: off
DENIED = (
    # files, paths and where the server listens
    "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file", "port",
    "listen_addresses", "unix_socket_*", "*_directory", "*_file", "log_filename",
    "logging_collector", "log_destination", "syslog_*", "event_source",
    # code the server would load or run
    "*preload_libraries", "dynamic_library_path", "extension_destdir", "*_command",
    "jit_provider",
    # replication and recovery
    "wal_level", "max_wal_senders", "max_replication_slots", "hot_standby*", "primary_*",
    "wal_keep_size",
    "synchronous_standby_names", "wal_receiver_*", "recovery_*", "archive_*", "restore_*",
    "promote_trigger_file", "wal_log_hints", "full_page_writes", "fsync", "data_sync_retry",
    "ignore_*", "zero_damaged_pages", "allow_system_table_mods", "wal_sync_method",
    # security
    "ssl*", "password_encryption", "krb_*", "db_user_namespace", "row_security",
    "authentication_timeout", "scram_*",
    # what the agent and the platform rely on
    "shared_memory_type", "dynamic_shared_memory_type", "huge_pages*", "cluster_name",
    "update_process_title", "max_connections_reserved", "superuser_reserved_connections",
    "reserved_connections", "debug_*", "trace_*", "log_file_mode", "log_rotation_*",
    "log_truncate_on_rotation", "lc_messages",
    # the guest logs read the server's records by their prefix and English level words
    "log_line_prefix",
    # the flavor's memory: a tenant cannot take more of the host than its flavor gives
    "shared_buffers",
)
# fmt: on

# fmt: off
#: The server's reserved keywords: those ``pg_get_keywords()`` lists with ``catcode`` 'R'
#: (reserved) or 'T' (reserved, but usable as a function or type name), from PostgreSQL 14 to
#: 17 (``system_user`` became reserved in 16). A role of such a name must be double-quoted
#: wherever a client writes it, and ``current_user``, ``current_role``, ``session_user``,
#: ``system_user`` and ``user`` unquoted name the session's own role instead.
#: tests/integration/test_account_names.py holds this list to the real server's.
KEYWORDS = frozenset({
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
    "authorization", "binary", "both", "case", "cast", "check", "collate", "collation",
    "column", "concurrently", "constraint", "create", "cross", "current_catalog",
    "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
    "current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except",
    "false", "fetch", "for", "foreign", "freeze", "from", "full", "grant", "group", "having",
    "ilike", "in", "initially", "inner", "intersect", "into", "is", "isnull", "join", "lateral",
    "leading", "left", "like", "limit", "localtime", "localtimestamp", "natural", "not",
    "notnull", "null", "offset", "on", "only", "or", "order", "outer", "overlaps", "placing",
    "primary", "references", "returning", "right", "select", "session_user", "similar", "some",
    "symmetric", "system_user", "table", "tablesample", "then", "to", "trailing", "true",
    "union", "unique", "user", "using", "variadic", "verbose", "when", "where", "window",
    "with",
})
# fmt: on

NAMES = NameRules(
    # The guest agent's superuser, root, and the role that owns what deleted users leave.
    own_users=frozenset({"os_admin", "root", "cove_orphans", "cove_replication"}),
    # The server's predefined roles; CREATE ROLE refuses the prefix ("role name is reserved").
    own_user_prefixes=("pg_",),
    # CREATE ROLE refuses "public" and "none" (the grantee of every role, and no role);
    # "postgres" is the usual superuser's name, "cove" the service user's.
    special_users=KEYWORDS | {"public", "none", "postgres", "cove"},
    databases=frozenset({"postgres", "template0", "template1"}),
    # Kept free, like roles, for the server's own objects.
    database_prefixes=("pg_",),
)

POSTGRESQL = Datastore(
    name="postgresql",
    title="PostgreSQL",
    port=5432,
    capabilities=frozenset(
        {
            Capability.DATABASES,
            Capability.USERS,
            Capability.ROOT,
            Capability.CONFIGURATION,
            Capability.BACKUPS,
            Capability.INCREMENTAL_BACKUPS,
            Capability.POINT_IN_TIME,
            Capability.REPLICATION,
        }
    ),
    denied=DENIED,
    # Root's predefined roles (pg_read_all_data, pg_write_all_data) arrived in 14.
    minimum=(14,),
    needs="postgres and initdb",
    stray=StrayServer(
        pid_file=("data", "postmaster.pid"),
        workdir=("data",),
        # A fast shutdown (sessions rolled back, committed work kept), then an immediate one.
        stop=((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)),
    ),
    names=NAMES,
    find_versions=find_versions,
    server_version=server_version,
    read_parameters=read_parameters,
    manager=manager,
)
