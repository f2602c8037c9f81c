"""Renders redis.conf and the first ACL file from the guest config, the flavor and the
configuration group, and keeps the record that makes the server a replica. A group's memory
values are numbers of bytes, as CONFIG GET shows them.

A replica's redis.conf ends with its source (``replicaof``, ``masteruser``, ``masterauth``,
``replica-read-only``), rendered from the record :data:`REPLICA_OF` at every write, after the
configuration group's overrides (which may not name them: ``cove.domain.datastores.redis``
denies them). These settings are never part of :func:`settings`, so they never reach
``effective_configuration`` nor a live CONFIG SET of ``apply_configuration``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import string
from pathlib import Path

from cove.common.errors import GuestError, Unprocessable
from cove.domain.guest import GuestSettings
from cove.domain.parameters import Value, denied
from cove.domain.replication import ReplicaSource

LOG = logging.getLogger(__name__)

#: The agent's own user: every permission, its password only in a 0600 file under conf/.
ADMIN_USER = "cove_admin"
#: Root is Redis's ``default`` user: the one a client without a user name logs in as.
ROOT_USER = "default"
#: The account a primary keeps for its replicas (``cove.guestagent.datastores.redis.acl``).
REPLICATION_USER = "cove_replication"

CONF_FILE = "redis.conf"
ACL_FILE = "users.acl"
ADMIN_SECRET = "admin.secret"
SOCKET = "redis.sock"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
#: A replica's record of its source, password included (mode 0600, in the configuration
#: directory); no such file on a server that is nobody's replica.
REPLICA_OF = "replica-of.json"
#: The marker of the group's synchronous mode, which Redis only approaches: its primary
#: refuses writes while no replica is connected and at most a second behind.
SYNCHRONOUS = "synchronous"
#: The settings of :data:`SYNCHRONOUS`.
SYNCHRONOUS_SETTINGS: dict[str, Value] = {"min-replicas-to-write": 1, "min-replicas-max-lag": 1}
#: A primary's record of its replication account's password (mode 0600).
REPLICATION_PASSWORD = "replication-password"
#: The last replication offset of a fenced server, answered by a later fence once it stopped.
FENCE_POSITION = "fence-position"


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


def replica_lines(source: ReplicaSource) -> list[str]:
    """The redis.conf lines that make the server a read-only replica of ``source``. The
    password stands in the file, which is private to the service user (mode 0600); a
    tenant cannot read it back from the server: CONFIG is in the @admin category that
    every tenant user and root are refused (``acl.USER_RULES``, ``acl.ROOT_RULES``)."""
    return [
        f"replicaof {render_value(source.host)} {source.port}\n",
        f"masteruser {render_value(source.user)}\n",
        f"masterauth {quote(source.password)}\n",
        "replica-read-only yes\n",
    ]


def redis_conf(
    config: GuestSettings, source: ReplicaSource | None = None, synchronous: bool = False
) -> str:
    """The whole redis.conf, a replica's of ``source`` when given, with the group's
    :data:`SYNCHRONOUS_SETTINGS` when ``synchronous``; raises Unprocessable as
    :func:`settings` does."""
    lines = ["# Written by the Cove guest agent; changes here are overwritten.\n"]
    lines += [f"{key} {render_value(value)}\n" for key, value in settings(config).items()]
    if synchronous:
        lines += [f"{k} {render_value(v)}\n" for k, v in SYNCHRONOUS_SETTINGS.items()]
    if source is not None:
        # Last: nothing before can make it another server's replica, or a writable one.
        lines += replica_lines(source)
    return "".join(lines)


def record_replica_of(conf_dir: Path, source: ReplicaSource) -> None:
    """Record that the server is a replica of ``source`` (read by every later write of
    redis.conf, so by every start); replaces the file whole. Raises OSError."""
    record = {
        "instance_id": source.instance_id,
        "host": source.host,
        "port": source.port,
        "user": source.user,
        "password": source.password,
    }
    tmp = conf_dir / f".{REPLICA_OF}.new"
    write_private(tmp, json.dumps(record) + "\n")
    tmp.replace(conf_dir / REPLICA_OF)


def read_replica_of(conf_dir: Path) -> ReplicaSource | None:
    """The source recorded by :func:`record_replica_of`, or None on a server that is no
    replica. Raises GuestError when the record cannot be read."""
    try:
        record = json.loads((conf_dir / REPLICA_OF).read_text())
        return ReplicaSource(
            instance_id=str(record["instance_id"]),
            host=str(record["host"]),
            port=int(record["port"]),
            user=str(record["user"]),
            password=str(record["password"]),
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GuestError(f"cannot read the replica's source: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        # Never the text itself: it holds the password.
        raise GuestError(f"the replica's record of its source is damaged ({REPLICA_OF})") from exc


def forget_replica_of(conf_dir: Path) -> None:
    """Remove the record: the next redis.conf makes a standalone server. Idempotent."""
    (conf_dir / REPLICA_OF).unlink(missing_ok=True)


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
