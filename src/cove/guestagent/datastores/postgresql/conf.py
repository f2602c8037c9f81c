"""Renders the server's configuration files from the guest config and the flavor."""

from __future__ import annotations

import getpass

from cove.guestagent.config import GuestConfig

ADMIN_USER = "os_admin"
ROOT_USER = "root"


def memory_settings(ram_mb: int, vcpus: int) -> dict[str, str]:
    """Memory and parallelism settings for a server given ``ram_mb`` of memory."""
    ram_mb = max(ram_mb, 128)
    return {
        "shared_buffers": f"{max(16, ram_mb // 4)}MB",
        "effective_cache_size": f"{max(32, ram_mb * 3 // 4)}MB",
        "maintenance_work_mem": f"{max(16, min(2048, ram_mb // 16))}MB",
        "work_mem": f"{max(1, ram_mb // 256)}MB",
        "max_connections": str(max(20, min(500, ram_mb // 20))),
        "max_worker_processes": str(max(2, vcpus * 2)),
        "max_parallel_workers": str(max(1, vcpus)),
    }


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def postgresql_conf(config: GuestConfig) -> str:
    settings: dict[str, str] = {
        "listen_addresses": _quote(config.address),
        "port": str(config.port),
        "unix_socket_directories": _quote(str(config.run_dir)),
        "unix_socket_permissions": "0700",
        "hba_file": _quote(str(config.conf_dir / "pg_hba.conf")),
        "ident_file": _quote(str(config.conf_dir / "pg_ident.conf")),
        "external_pid_file": _quote(str(config.run_dir / "postgres.pid")),
        "password_encryption": "'scram-sha-256'",
        "huge_pages": "off",
        "dynamic_shared_memory_type": "posix",
        "logging_collector": "off",
        "log_destination": "'stderr'",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        "log_timezone": "'UTC'",
        "timezone": "'UTC'",
        **memory_settings(config.ram_mb, config.vcpus),
    }
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n"]
    lines += [f"{key} = {value}\n" for key, value in settings.items()]
    return "".join(lines)


def pg_hba_conf() -> str:
    return (
        "# Written by the Cove guest agent.\n"
        f"local all {ADMIN_USER} peer map=cove\n"
        "local all all scram-sha-256\n"
        "host all all 0.0.0.0/0 scram-sha-256\n"
        "host all all ::/0 scram-sha-256\n"
    )


def pg_ident_conf(os_user: str | None = None) -> str:
    return f"cove {os_user or getpass.getuser()} {ADMIN_USER}\n"
