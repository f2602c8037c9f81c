"""Renders redis.conf and the first ACL file from the guest config, the flavor and the
configuration group. A group's memory values are numbers of bytes, as CONFIG GET shows them."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import string
from pathlib import Path

from cove.common.errors import Unprocessable
from cove.domain.guest import GuestSettings
from cove.domain.parameters import Value, denied

LOG = logging.getLogger(__name__)

#: The agent's own user: every permission, its password only in a 0600 file under conf/.
ADMIN_USER = "cove_admin"
#: Root is Redis's ``default`` user: the one a client without a user name logs in as.
ROOT_USER = "default"

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


#: A config name as redis.conf and CONFIG SET spell it.
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
#: Text redis.conf reads as one argument without quotes.
_WORD = re.compile(r"[A-Za-z0-9_.:/@%+,=-]+")
#: Characters kept as they are inside a quoted redis.conf argument.
_PLAIN = frozenset(string.ascii_letters + string.digits + string.punctuation + " ") - {'"', "\\"}


def quote(value: str) -> str:
    """``value`` as one redis.conf argument: in double quotes, with quotes and backslashes
    escaped and every other byte outside printable ASCII written as ``\\xHH``, which Redis
    reads back byte for byte."""
    out = []
    for ch in value:
        if ch in _PLAIN:
            out.append(ch)
        elif ch in '"\\':
            out.append("\\" + ch)
        else:
            out.extend(f"\\x{byte:02x}" for byte in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def show_value(value: Value) -> str:
    """A value as CONFIG SET takes it and the server reads it from the file."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render_value(value: Value) -> str:
    """A value as redis.conf spells it: booleans yes/no, numbers and plain words as they are,
    any other text quoted."""
    if isinstance(value, bool | int | float):
        return show_value(value)
    return value if _WORD.fullmatch(value) else quote(value)


def settings(config: GuestSettings) -> dict[str, Value]:
    """Everything Cove sets: the instance's places, persistence and safety, the flavor's
    memory, then the configuration group's overrides laid over them. Raises Unprocessable
    for an override no tenant may set."""
    out: dict[str, Value] = {
        # The address is the instance's own private one, so protected mode would only refuse
        # the tenant's clients: authentication is the ACL's job.
        "bind": config.address,
        "port": config.port,
        "protected-mode": False,
        "unixsocket": str(config.run_dir / SOCKET),
        "unixsocketperm": "700",
        "dir": str(config.data_dir),
        "pidfile": str(config.run_dir / PID_FILE),
        "logfile": str(config.log_dir / LOG_FILE),
        "loglevel": "notice",
        "daemonize": False,
        "supervised": "no",
        "always-show-logo": False,
        "proc-title-template": "{title} {listen-addr} {server-mode} {config-file}",
        "aclfile": str(config.conf_dir / ACL_FILE),
        "appendonly": True,
        "appendfsync": "everysec",
        "save": "",
        # A backup (redis-cli --rdb) is a replica's sync: start it at once, not 5 s later.
        "repl-diskless-sync-delay": 0,
        "maxmemory": f"{maxmemory_mb(config.ram_mb)}mb",
        "maxmemory-policy": "noeviction",
        # Off whatever the version's default: each would reach past the instance.
        "enable-debug-command": "no",
        "enable-module-command": "no",
        "enable-protected-configs": "no",
        # Dump payloads (RESTORE, replication) are checked in full before use.
        "sanitize-dump-payload": "yes",
    }
    for name, value in config.overrides.items():
        key = name.lower()
        if not _NAME.fullmatch(key):
            raise Unprocessable(
                f"The configuration parameter {name} is not supported for this datastore: "
                f"redis {config.datastore_version}."
            )
        if denied("redis", key):
            # Denied after the group was made: the server starts without it.
            LOG.warning("leaving out the denied parameter %s", name)
            continue
        out[key] = value
    return out


def redis_conf(config: GuestSettings) -> str:
    """The whole redis.conf; raises Unprocessable as :func:`settings` does."""
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n"]
    lines += [f"{key} {render_value(value)}\n" for key, value in settings(config).items()]
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
