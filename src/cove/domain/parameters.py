"""Configuration parameters: the catalogue entry of one server setting and the rules for values.

A datastore version's catalogue is read from the server itself when the version is registered
(see ``cove.compute.parameters``) and stored in the control database. Tenants set values of
catalogue parameters through configuration groups; a parameter on the datastore's deny-list
(paths, ports, addresses, replication, security, anything that would let a tenant reach past its
instance) never enters the catalogue. Values are checked here, before they are stored, with
Trove's messages.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cove.common.errors import Unprocessable

#: A value as a configuration group stores it: what JSON gives, after validation.
Value = int | float | bool | str


class ParamType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    STRING = "string"


@dataclass(frozen=True)
class Parameter:
    """One configurable setting of one datastore version."""

    name: str
    type: ParamType
    restart_required: bool
    min: int | float | None = None
    max: int | float | None = None
    #: For an enumerated string setting, the values it accepts (compared case-insensitively).
    allowed: tuple[str, ...] | None = None


#: Parameters no tenant may set, per datastore (shell-style patterns on the name as the server
#: spells it). Whatever they match is left out of the catalogue.
# fmt: off
DENIED: dict[str, tuple[str, ...]] = {
    "postgresql": (
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
    ),
    "mariadb": (
        # files, paths and where the server listens
        "datadir", "basedir", "tmpdir", "socket", "port", "bind_address", "pid_file", "*_dir",
        "*_file", "*_path", "*_home_dir", "log_error", "general_log*", "slow_query_log*",
        "skip_*", "extra_port", "extra_max_connections", "*filename", "*tmpdir",
        # code and data the server would load or expose
        "plugin_*", "init_*", "secure_file_priv", "local_infile", "open_files_limit",
        "lower_case_table_names", "core_file", "large_pages", "skip_external_locking",
        # replication and binary logs
        "log_bin*", "binlog_*", "server_id", "relay_log*", "gtid_*", "read_only",
        "log_slave_updates", "log_replica_updates", "master_*", "slave_*", "replicate_*",
        "rpl_*", "sync_*", "wsrep_*", "report_*", "sql_log_bin", "super_read_only",
        # security
        "ssl_*", "have_*", "*password*", "secure_*", "require_secure_transport", "tls_*",
        "default_authentication_plugin", "old_passwords", "proxy_*", "automatic_sp_privileges",
        "*encrypt*", "*encryption*",
        # what the agent and the platform rely on
        "innodb_data_*", "innodb_log_group_home_dir", "innodb_undo_directory",
        "innodb_force_recovery", "innodb_doublewrite", "innodb_flush_method", "debug*",
        "version*", "hostname", "system_time_zone", "thread_handling", "userstat",
        # the flavor's memory: a tenant cannot take more of the host than its flavor gives
        "innodb_buffer_pool_size",
    ),
    "redis": (
        # files, paths and where the server listens
        "dir", "dbfilename", "appendfilename", "appenddirname", "port", "tls-*", "bind",
        "bind-source-addr", "unixsocket*", "pidfile", "logfile", "syslog-*", "daemonize",
        "supervised", "include", "loadmodule", "oom-score-adj*", "set-proc-title",
        "proc-title-template", "save", "appendonly", "appendfsync", "aof-*",
        # replication and cluster
        "replicaof", "slaveof", "masteruser", "masterauth", "replica-*", "slave-*", "repl-*",
        "cluster-*", "min-replicas-*", "min-slaves-*",
        # security
        "requirepass", "aclfile", "acllog-max-len", "acl-pubsub-default", "protected-*",
        "enable-*", "rename-command", "sanitize-dump-payload", "user",
        # what the agent and the platform rely on
        "maxclients", "io-threads*", "disable-thp", "jemalloc-bg-thread", "crash-*",
        "shutdown-*", "latency-tracking*", "*cpulist", "socket-mark-id",
        # the flavor's memory: a tenant cannot take more of the host than its flavor gives
        "maxmemory", "maxmemory-clients",
    ),
}
# fmt: on


def denied(datastore: str, name: str) -> bool:
    """Whether tenants may not set ``name`` on ``datastore`` (an unknown datastore denies all)."""
    patterns = DENIED.get(datastore)
    if patterns is None:
        return True
    key = name.lower()
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def validate_values(
    label: str, catalogue: Mapping[str, Parameter], values: Any
) -> dict[str, Value]:
    """Check a configuration group's ``values`` against a version's catalogue.

    ``label`` names the version in messages ("postgresql 15"). Returns the values as they are
    stored (a whole float given for an integer parameter becomes an int). Raises
    Unprocessable with Trove's messages.
    """
    if not catalogue:
        raise Unprocessable(f"Configuration groups are not supported for this datastore: {label}.")
    if not isinstance(values, Mapping):
        raise Unprocessable("The configuration values must be an object.")
    out: dict[str, Value] = {}
    for name, value in values.items():
        param = catalogue.get(name)
        if param is None:
            raise Unprocessable(
                f"The configuration parameter {name} is not supported for this datastore: {label}."
            )
        out[name] = check_value(param, value)
    return out


def check_value(param: Parameter, value: Any) -> Value:
    """One value, checked and normalised for ``param``; raises Unprocessable."""
    wrong_type = Unprocessable(
        f"The value provided for the configuration parameter {param.name} is not of type "
        f"{param.type.value}."
    )
    if param.type is ParamType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise wrong_type
    if param.type in (ParamType.INTEGER, ParamType.FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong_type
        if isinstance(value, float) and not math.isfinite(value):
            raise wrong_type
        if param.type is ParamType.INTEGER and isinstance(value, float):
            if not value.is_integer():
                raise wrong_type
            value = int(value)
        if param.min is not None and value < param.min:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} is less than the "
                f"minimum allowed: {param.min}"
            )
        if param.max is not None and value > param.max:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} is greater than the "
                f"maximum allowed: {param.max}"
            )
        return int(value) if param.type is ParamType.INTEGER else float(value)
    if not isinstance(value, str):
        raise wrong_type
    if len(value) > 1024 or any(ch in value for ch in "\n\r\0"):
        raise Unprocessable(
            f"The value for the configuration parameter {param.name} must be one line of at "
            "most 1024 characters."
        )
    if param.allowed is not None:
        match = next((a for a in param.allowed if a.lower() == value.lower()), None)
        if match is None:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} must be one of: "
                + ", ".join(param.allowed)
                + "."
            )
        return match
    return value
