"""MariaDB, as Cove runs it: one mariadbd per instance, reading only the instance's my.cnf."""

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


#: A template's redo log: small, so that copying the template costs little; a server grows it
#: to its configured size when it first starts.
TEMPLATE_LOG_MB = 4
#: Run once by mariadb-install-db: no account is left but the server's own mariadb.sys (the
#: installer's root and unix-socket accounts go). The agent's comes from its init file.
INSTALL_SQL = (
    "DELETE FROM mysql.global_priv WHERE User <> 'mariadb.sys';\nDELETE FROM mysql.proxies_priv;\n"
)


#: A file every installed data directory holds (the grant table), below the template.
TEMPLATE_MARKER = "mysql/global_priv.MAD"


def template_name(version: str) -> str:
    """The template data directory of ``version`` below the templates directory."""
    return f"mariadb-{version}"


def template_cnf(data_dir: Path, tmp_dir: Path) -> str:
    """The only defaults file a template is installed with: its places and a small redo log,
    nothing of any instance (no server id, no binary log, no keys)."""
    return (
        f"[mysqld]\ndatadir = {data_dir}\ntmpdir = {tmp_dir}\n"
        f"innodb_log_file_size = {TEMPLATE_LOG_MB}M\nskip_networking\n"
    )


#: Settings a data directory is made with, which a template made without them cannot have:
#: an instance whose group sets one is installed on its own.
INSTALL_TIME = frozenset(
    {"innodb_page_size", "innodb_undo_tablespaces", "aria_block_size", "lower_case_table_names"}
)


def find_versions() -> list[FoundVersion]:
    from cove.compute.discovery import find_mariadb

    return find_mariadb()


def server_version(bin_dir: Path) -> str | None:
    from cove.compute.discovery import mariadb_version

    return mariadb_version(bin_dir / "mariadbd")


def read_parameters(bin_dir: str) -> list[Parameter]:
    from cove.compute.parameters import mariadb

    return mariadb.read_parameters(bin_dir)


def manager(settings: GuestSettings) -> DatastoreManager:
    from cove.guestagent.datastores.mariadb.manager import MariaManager

    return MariaManager(settings)


# fmt: off
DENIED = (
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
    "expire_logs_days", "max_binlog_size", "log_basename", "log_bin_trust_function_creators",
    # security
    "ssl_*", "have_*", "*password*", "secure_*", "require_secure_transport", "tls_*",
    "default_authentication_plugin", "old_passwords", "proxy_*", "automatic_sp_privileges",
    "*encrypt*", "*encryption*",
    # what the agent and the platform rely on
    "innodb_data_*", "innodb_log_group_home_dir", "innodb_undo_directory",
    "innodb_force_recovery", "innodb_doublewrite", "innodb_flush_method", "debug*",
    "version*", "hostname", "system_time_zone", "thread_handling", "userstat",
    # the flavor's memory and volume: a tenant cannot take more of the host than they give
    # (the redo log lives beside the volume, on the host's own filesystem)
    "innodb_buffer_pool_size", "innodb_log_file_size",
)
# fmt: on

NAMES = NameRules(
    # The guest agent's account, root, and the server's own (mariadb.sys owns the sys views;
    # the mysql.* ones are MySQL's, which a data directory from it could bring).
    own_users=frozenset(
        {"cove_admin", "cove_replication", "root", "mariadb.sys", "mysql.sys", "mysql.session"}
    ),
    # Account names are quoted strings in every statement, so SQL keywords do not bind them
    # (information_schema.KEYWORDS lists hundreds); these are the words the grammar reads as
    # an account where a user name may stand: PUBLIC (every account, 10.11), CURRENT_USER and
    # CURRENT_ROLE (the session's), NONE (no role). "mysql" is the administrator that
    # mariadb-install-db makes, "cove" the service user.
    special_users=frozenset({"public", "current_user", "current_role", "none", "mysql", "cove"}),
    databases=frozenset({"mysql", "information_schema", "performance_schema", "sys"}),
)

MARIADB = Datastore(
    name="mariadb",
    title="MariaDB",
    port=3306,
    capabilities=frozenset(
        {
            Capability.DATABASES,
            Capability.USERS,
            Capability.USER_HOSTS,
            Capability.ROOT,
            Capability.CONFIGURATION,
            Capability.BACKUPS,
            Capability.INCREMENTAL_BACKUPS,
            Capability.REPLICATION,
        }
    ),
    denied=DENIED,
    # The oldest long-term release still maintained, and the first with the grant tables
    # (mysql.global_priv) the guest agent writes at installation.
    minimum=(10, 6),
    needs="mariadbd, with mariadb-install-db beside it or on PATH",
    stray=StrayServer(
        pid_file=("run", "mariadbd.pid"),
        # mariadbd changes into its datadir.
        workdir=("data",),
        # A clean shutdown (InnoDB flushes and exits); the data is about to be deleted, so
        # it is not worth a long wait.
        stop=((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)),
    ),
    names=NAMES,
    find_versions=find_versions,
    server_version=server_version,
    read_parameters=read_parameters,
    manager=manager,
)
