"""Renders redis.conf and the first ACL file from the guest config and the flavor."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cove.guestagent.config import GuestConfig

#: The agent's own user: every permission, its password only in a 0600 file under conf/.
ADMIN_USER = "cove_admin"
#: Root is Redis's ``default`` user: the one a client without a user name logs in as.
ROOT_USER = "default"
RESERVED_USERS = frozenset({ADMIN_USER, ROOT_USER})

CONF_FILE = "redis.conf"
ACL_FILE = "users.acl"
ADMIN_SECRET = "admin.secret"
SOCKET = "redis.sock"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"


def password_hash(password: str) -> str:
    """The ACL rule that sets ``password`` by its SHA-256, so the server never holds it."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def maxmemory_mb(ram_mb: int) -> int:
    """Three quarters of the flavor's memory: the rest is for the AOF rewrite's fork and the
    server's own overhead."""
    return max(32, max(ram_mb, 64) * 3 // 4)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_conf(config: GuestConfig) -> str:
    settings: list[tuple[str, str]] = [
        # The address is the instance's own private one, so protected mode would only refuse
        # the tenant's clients: authentication is the ACL's job.
        ("bind", config.address),
        ("port", str(config.port)),
        ("protected-mode", "no"),
        ("unixsocket", _quote(str(config.run_dir / SOCKET))),
        ("unixsocketperm", "700"),
        ("dir", _quote(str(config.data_dir))),
        ("pidfile", _quote(str(config.run_dir / PID_FILE))),
        ("logfile", _quote(str(config.log_dir / LOG_FILE))),
        ("loglevel", "notice"),
        ("daemonize", "no"),
        ("supervised", "no"),
        ("always-show-logo", "no"),
        ("proc-title-template", _quote("{title} {listen-addr} {server-mode} {config-file}")),
        ("aclfile", _quote(str(config.conf_dir / ACL_FILE))),
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("save", '""'),
        ("maxmemory", f"{maxmemory_mb(config.ram_mb)}mb"),
        ("maxmemory-policy", "noeviction"),
        # Off whatever the version's default: each would reach past the instance.
        ("enable-debug-command", "no"),
        ("enable-module-command", "no"),
        ("enable-protected-configs", "no"),
        # Dump payloads (RESTORE, replication) are checked in full before use.
        ("sanitize-dump-payload", "yes"),
    ]
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n"]
    lines += [f"{key} {value}\n" for key, value in settings]
    return "".join(lines)


def initial_acl(admin_password: str) -> str:
    """The agent's user with every permission; ``default`` (root) off until root is enabled."""
    return (
        f"user {ADMIN_USER} on {password_hash(admin_password)} ~* &* +@all\n"
        f"user {ROOT_USER} off resetpass resetkeys resetchannels -@all\n"
    )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file may have had a wider mode
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def new_admin_password() -> str:
    return secrets.token_urlsafe(32)
