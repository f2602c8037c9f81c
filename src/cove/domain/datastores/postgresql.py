"""PostgreSQL, as Cove runs it: one server per instance, its data directory the volume."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

from cove.domain.datastores.base import Capability, Datastore, FoundVersion, StrayServer
from cove.domain.guest import GuestSettings

if TYPE_CHECKING:
    from cove.domain.parameters import Parameter
    from cove.guestagent.datastores.base import DatastoreManager


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
    # the flavor's memory: a tenant cannot take more of the host than its flavor gives
    "shared_buffers",
)
# fmt: on

POSTGRESQL = Datastore(
    name="postgresql",
    title="PostgreSQL",
    port=5432,
    capabilities=frozenset(
        {Capability.DATABASES, Capability.USERS, Capability.ROOT, Capability.CONFIGURATION}
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
    find_versions=find_versions,
    server_version=server_version,
    read_parameters=read_parameters,
    manager=manager,
)
