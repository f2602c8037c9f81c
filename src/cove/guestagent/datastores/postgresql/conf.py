"""Renders the server's configuration files from the guest config, the flavor and the
configuration group.

A group's numbers are in the setting's base unit (``work_mem = 4096`` is 4096 kB), as the
version's catalogue gives their bounds; the flavor's sizes are written with their units.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from pathlib import Path

from cove.common.errors import Unprocessable
from cove.domain.datastores.postgresql import ADMIN_USER
from cove.domain.guest import GuestSettings
from cove.domain.guestlogs import SLOW_QUERY_MS
from cove.domain.parameters import Value, denied
from cove.guestagent.datastores.postgresql.wal import SPOOL, archive_command

LOG = logging.getLogger(__name__)

ROOT_USER = "root"
#: The account replicas stream from a primary with: replication only, no database access.
REPLICATION_USER = "cove_replication"


def memory_settings(ram_mb: int, vcpus: int) -> dict[str, Value]:
    """Memory and parallelism settings for a server given ``ram_mb`` of memory."""
    ram_mb = max(ram_mb, 128)
    return {
        "shared_buffers": f"{max(16, ram_mb // 4)}MB",
        "effective_cache_size": f"{max(32, ram_mb * 3 // 4)}MB",
        "maintenance_work_mem": f"{max(16, min(2048, ram_mb // 16))}MB",
        "work_mem": f"{max(1, ram_mb // 256)}MB",
        "max_connections": max(20, min(500, ram_mb // 20)),
        "max_worker_processes": max(2, vcpus * 2),
        "max_parallel_workers": max(1, vcpus),
    }


#: A setting's name as postgresql.conf accepts it unquoted (a custom one has one dot).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def quote(value: str) -> str:
    """``value`` as a postgresql.conf string: in single quotes, with quotes doubled and
    backslashes (which start escapes there) doubled."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render_value(value: Value) -> str:
    """A value as postgresql.conf spells it: booleans on/off, numbers as they are, any other
    text quoted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return repr(value)
    return quote(value)


def show_value(value: Value) -> str:
    """A value as the server reads it back from the file (no quotes)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if isinstance(value, float) else str(value)


def wal_keep_mb(volume_gb: int) -> int:
    """The WAL a server keeps for its replicas beyond what it needs itself, in MB."""
    return min(1024, max(64, volume_gb * 1024 // 16))


def settings(config: GuestSettings) -> dict[str, Value]:
    """Everything Cove sets: the instance's places, the flavor-derived sizes, then the
    configuration group's overrides laid over them (matched without regard to case, as
    PostgreSQL names are). Raises Unprocessable for an override no tenant may set."""
    out: dict[str, Value] = {
        "listen_addresses": config.address,
        "port": config.port,
        "unix_socket_directories": str(config.run_dir),
        "unix_socket_permissions": "0700",
        "hba_file": str(config.conf_dir / "pg_hba.conf"),
        "ident_file": str(config.conf_dir / "pg_ident.conf"),
        "external_pid_file": str(config.run_dir / "postgres.pid"),
        "password_encryption": "scram-sha-256",
        "huge_pages": "off",
        "dynamic_shared_memory_type": "posix",
        "logging_collector": False,
        "log_destination": "stderr",
        "log_line_prefix": "%m [%p] %q%u@%d ",
        "log_timezone": "UTC",
        "timezone": "UTC",
        # Finished WAL files go to the agent's spool once the instance has backups (wal.py);
        # a busy server closes one at least every minute, which bounds what a point-in-time
        # restore can miss.
        "archive_mode": True,
        "archive_command": archive_command(config.root / SPOOL),
        "archive_timeout": 60,
        # WAL a replica may still need is kept a while: a replica being copied asks for its
        # start only once the copy began (two copies at once recycled it here), and one that
        # was away briefly catches up (1/16 of the volume, 64 MB to 1 GB).
        "wal_keep_size": f"{wal_keep_mb(config.volume_gb)}MB",
        # pg_rewind needs it: an old primary whose history forked from the new one's is
        # rewound in seconds instead of copied again.
        "wal_log_hints": True,
        **memory_settings(config.ram_mb, config.vcpus),
    }
    for name, value in config.overrides.items():
        if not _NAME.fullmatch(name):
            raise Unprocessable(
                f"The configuration parameter {name} is not supported for this datastore: "
                f"postgresql {config.datastore_version}."
            )
        if denied("postgresql", name):
            # Denied after the group was made: the server starts without it.
            LOG.warning("leaving out the denied parameter %s", name)
            continue
        for key in [k for k in out if k.lower() == name.lower()]:
            del out[key]
        out[name] = value
    return out


def log_settings(logs: frozenset[str]) -> dict[str, Value]:
    """What makes the server write the guest logs in ``logs`` (``cove.domain.guestlogs``):
    every statement for the general log, the duration of those slower than SLOW_QUERY_MS
    for the slow-query log. Written last, so they win over a configuration group's."""
    out: dict[str, Value] = {}
    if "general" in logs:
        out["log_statement"] = "all"
    if "slow_query" in logs:
        out["log_min_duration_statement"] = SLOW_QUERY_MS
    return out


def raised_to(values: dict[str, Value], floors: dict[str, int]) -> dict[str, Value]:
    """``values`` with each setting of ``floors`` at least that high (matched without regard
    to case); one not set yet is set to its floor."""
    out = dict(values)
    for name, floor in floors.items():
        keys = [k for k in out if k.lower() == name.lower()] or [name]
        for key in keys:
            current = out.get(key)
            if isinstance(current, bool) or not isinstance(current, int | float | None):
                continue  # not a number: the server says what it makes of it
            if current is None or current < floor:
                out[key] = floor
    return out


def postgresql_conf(
    config: GuestSettings,
    floors: dict[str, int] | None = None,
    logs: frozenset[str] = frozenset(),
) -> str:
    """The whole postgresql.conf, with the settings of ``floors`` at least that high (a
    standby's, which its primary's values bound from below) and those of the guest ``logs``
    enabled; raises Unprocessable as :func:`settings` does."""
    values = raised_to(settings(config), floors or {})
    for name in log_settings(logs):
        for key in [k for k in values if k.lower() == name]:
            del values[key]
    values |= log_settings(logs)
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n"]
    lines += [f"{key} = {render_value(value)}\n" for key, value in values.items()]
    return "".join(lines)


def pg_hba_conf() -> str:
    """``pg_hba.conf``: the agent by peer over the socket, everyone else by password. The
    replication account may only stream (``replication`` never matches ``all``), and only
    over TCP, besides reading the files ``pg_rewind`` needs through ``postgres``; it has no
    password until a replica is made (``replication.py``)."""
    return (
        "# Written by the Cove guest agent.\n"
        f"local all {ADMIN_USER} peer map=cove\n"
        # The agent's base backups (pg_basebackup) over the instance's own socket.
        f"local replication {ADMIN_USER} peer map=cove\n"
        f"host replication {REPLICATION_USER} 0.0.0.0/0 scram-sha-256\n"
        f"host replication {REPLICATION_USER} ::/0 scram-sha-256\n"
        f"local all {REPLICATION_USER} reject\n"
        # pg_rewind of an old primary reads this server's files through the postgres
        # database (functions granted to the account, bounded to the data directory).
        f"host postgres {REPLICATION_USER} all scram-sha-256\n"
        f"host all {REPLICATION_USER} all reject\n"
        "local all all scram-sha-256\n"
        "host all all 0.0.0.0/0 scram-sha-256\n"
        "host all all ::/0 scram-sha-256\n"
    )


def pg_ident_conf(os_user: str | None = None) -> str:
    return f"cove {os_user or getpass.getuser()} {ADMIN_USER}\n"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` at once (the server never reads a half-written file),
    readable by the service user alone. Raises OSError."""
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.chmod(0o600)
    tmp.replace(path)
