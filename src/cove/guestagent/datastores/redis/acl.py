"""Users and root as Redis ACL users on a running server.

Passwords reach the server only as SHA-256 hashes (``#<hex>`` rules), over the agent's unix
socket; every change is followed by ACL SAVE so that the ACL file, and so a restart, keeps it.
Databases are no Redis concept and users have no host: :class:`RedisAcl` refuses the ``Admin``
protocol's database, access and host methods with OperationNotSupported, and any host but
``%`` with BadRequest. The replication account (``conf.REPLICATION_USER``, made by
``cove.guestagent.datastores.redis.replication``) is the agent's, like its own user: hidden
from tenants, and no tenant user may take its name. On a replica, the tenant's users and root
are its source's, copied by ``cove.guestagent.datastores.redis.usersync``: what is changed
on the replica itself lasts until its next copy.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence

import redis

from cove.common.errors import (
    BadRequest,
    CoveError,
    GuestError,
    OperationNotSupported,
    UserAlreadyExists,
    UserNotFound,
)
from cove.common.text import shown
from cove.domain import names
from cove.domain.datastores.redis import REDIS
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores.redis.conf import REPLICATION_USER, ROOT_USER, password_hash

NO_DATABASES = "Databases are not supported for Redis."

#: A tenant user may run every data command on every key and channel. It is refused the
#: @admin category (CONFIG, ACL, SHUTDOWN, DEBUG, MODULE, REPLICAOF, SYNC, SAVE, MONITOR,
#: CLIENT KILL, ...), MIGRATE (connections to other hosts) and RESTORE (a crafted dump payload
#: is the way into several Redis memory bugs, and every instance runs as the same OS user).
#: KEYS, FLUSHDB, INFO and SORT stay allowed: they only touch the tenant's own data.
USER_RULES = ("~*", "&*", "+@all", "-@admin", "-migrate", "-restore", "-restore-asking")
#: Root (the ``default`` user) is the tenant's administrator: a tenant user plus watching and
#: managing clients, the slow log, latency and snapshots. It still has no CONFIG, ACL,
#: SHUTDOWN, MODULE or DEBUG: every instance on a host runs as the same OS user, so CONFIG SET
#: dir/dbfilename followed by SAVE, or MODULE LOAD, would write or run anything that user may,
#: reaching other instances and the agent; ACL could lock the agent out, SHUTDOWN and DEBUG
#: would bypass it.
ROOT_RULES = (
    *USER_RULES,
    "+monitor",
    "+client|list",
    "+slowlog",
    "+latency",
    "+bgsave",
    "+bgrewriteaof",
    "+lastsave",
    "+role",
)
#: The replication account: what a replica's connection needs (Redis's ACL documentation:
#: PSYNC, REPLCONF and PING), no key and no channel, and ACL LIST, with which a replica's
#: agent copies its source's tenant users (``usersync``: Redis does not replicate ACL users).
#: ACL LIST shows every user's rules and password hashes (SHA-256 of the password); that is
#: acceptable because the account already receives the whole data set through the stream,
#: worth more than the hashes, and its password lives only in the agents' files of mode 0600
#: (no tenant ever holds it). It cannot change anything: ACL LIST only reads, and every other
#: ACL subcommand (SETUSER, DELUSER, LOAD, SAVE, ...) and command stays refused to it.
REPLICATION_RULES = (
    "resetkeys",
    "resetchannels",
    "-@all",
    "+psync",
    "+replconf",
    "+ping",
    "+acl|list",
)
#: The account's rules before replicas copied their source's users: such an account is still
#: the agent's, and is given :data:`REPLICATION_RULES` at its next ``source``.
FORMER_REPLICATION_RULES = REPLICATION_RULES[:-1]
#: What an ACL file line can carry safely: no spaces, no quotes, no control characters.
_NAME = re.compile(r"[A-Za-z0-9_.@$+-]{1,64}")

Connect = Callable[[], redis.Redis]


def _check_host(host: str | None) -> None:
    if host not in (None, "", "%"):
        raise BadRequest("Redis users have no host: leave it out or use '%'.")


def _check_password(password: str | None) -> None:
    if not password:
        raise BadRequest("A password is required.")


def own_user(name: str) -> bool:
    """Whether ``name`` is a user the agent keeps from tenants: Redis's and Cove's own
    (``cove.domain.names``) and the replication account."""
    return REDIS.names.own_user(name) or name.lower() == REPLICATION_USER


def tenant_user(name: str) -> bool:
    """Whether ``name`` is one of the tenant's users as a replica copies them: root
    (``ROOT_USER``), or a name a tenant user can have (an ACL file line carries it safely)
    that is no one's own (:func:`own_user`: not the agent's, not the replication account)."""
    return name == ROOT_USER or (_NAME.fullmatch(name) is not None and not own_user(name))


def _check_name(name: str) -> None:
    """A name a new user (or a rename) may take: one an ACL file line carries safely, and
    none Redis or Cove keeps (``cove.domain.names``). Raises BadRequest."""
    if not _NAME.fullmatch(name):
        raise BadRequest(f"Invalid user name '{shown(name)}' for Redis.")
    if name.lower() == REPLICATION_USER:
        # Until cove.domain.datastores.redis lists it among the own users.
        raise BadRequest(f"user name '{name}' is reserved on Redis; choose another")
    try:
        names.user_name(name, REDIS.name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


class RedisAcl:
    """The ``Admin`` of the Redis manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def _run(self, *args: str) -> object:
        """One command as the agent's user. Raises GuestError when the server refuses it."""
        try:
            with self._connect() as client:
                return client.execute_command(*args)
        except redis.RedisError as exc:
            # A refusal can quote a rule, and so a password hash: only a connection's error
            # text is kept.
            detail = type(exc).__name__ if isinstance(exc, redis.ResponseError) else str(exc)
            command = " ".join(args[:2])
            raise GuestError(f"Redis refused {command}: {detail}") from exc

    def _save(self) -> None:
        self._run("ACL", "SAVE")

    def _names(self) -> list[str]:
        result = self._run("ACL", "USERS")
        return [str(n) for n in result] if isinstance(result, list) else []

    def _require_user(self, name: str) -> None:
        if own_user(name) or name not in self._names():
            raise UserNotFound(f"User {name} cannot be found on the instance.")

    # -- databases and access: no Redis concept ----------------------------------------------

    def list_databases(self) -> list[DatabaseSpec]:
        raise OperationNotSupported(NO_DATABASES)

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        raise OperationNotSupported(NO_DATABASES)

    def delete_database(self, name: str) -> None:
        raise OperationNotSupported(NO_DATABASES)

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        raise OperationNotSupported(NO_DATABASES)

    def revoke_access(self, name: str, host: str, database: str) -> None:
        raise OperationNotSupported(NO_DATABASES)

    # -- users -------------------------------------------------------------------------------

    def list_users(self) -> list[UserInfo]:
        return [UserInfo(n, "%", ()) for n in sorted(self._names()) if not own_user(n)]

    def get_user(self, name: str, host: str) -> UserInfo:
        _check_host(host)
        self._require_user(name)
        return UserInfo(name, "%", ())

    def create_users(self, users: Sequence[UserSpec]) -> None:
        """All of ``users`` or none; each checked before anything changes."""
        wanted = [u.name for u in users]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A user is listed twice.")
        existing = set(self._names())
        for user in users:
            if user.databases:
                raise OperationNotSupported(NO_DATABASES)
            _check_host(user.host)
            _check_password(user.password)
            _check_name(user.name)
            if user.name in existing:
                raise UserAlreadyExists(f"A user with the name {user.name} already exists.")
        made: list[str] = []
        try:
            for user in users:
                self._run(
                    "ACL",
                    "SETUSER",
                    user.name,
                    "reset",
                    "on",
                    password_hash(user.password),
                    *USER_RULES,
                )
                made.append(user.name)
            self._save()
        except Exception:
            for name in made:  # all or nothing
                with contextlib.suppress(CoveError):
                    self._run("ACL", "DELUSER", name)
            raise

    def delete_user(self, name: str, host: str) -> None:
        """Deleting a user also ends its connections (Redis does so itself)."""
        _check_host(host)
        self._require_user(name)
        self._run("ACL", "DELUSER", name)
        self._save()

    def update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        """A new password replaces the old one; a rename moves the user's rules and password
        hash to the new name (Redis has no rename) and ends the old name's connections."""
        _check_host(host)
        self._require_user(name)
        renaming = new_name is not None and new_name != name
        if renaming:
            target = str(new_name)
            _check_name(target)
            if target in self._names():
                raise UserAlreadyExists(f"A user with the name {target} already exists.")
        if new_password is not None:
            _check_password(new_password)
        rules = self._rules(name) if renaming else []  # read before anything changes
        try:
            if new_password is not None:
                self._run("ACL", "SETUSER", name, "resetpass", password_hash(new_password))
                # Sessions opened with the old password end with it.
                self._run("CLIENT", "KILL", "USER", name)
            if renaming:
                self._run("ACL", "SETUSER", str(new_name), "reset", *rules)
                self._run("ACL", "DELUSER", name)
        except BaseException:
            if renaming and str(new_name) in self._names() and name in self._names():
                self._run("ACL", "DELUSER", str(new_name))  # no half-done rename
            raise
        finally:
            self._save()

    def _rules(self, name: str) -> list[str]:
        """The ACL LIST rules of ``name`` (password hashes included), minus ``user <name>``."""
        lines = self._run("ACL", "LIST")
        for line in lines if isinstance(lines, list) else []:
            parts = str(line).split()
            if parts[:2] == ["user", name]:
                return parts[2:]
        raise UserNotFound(f"User {name} cannot be found on the instance.")

    def change_host(self, name: str, host: str, new_host: str) -> None:
        raise OperationNotSupported("users of redis have no host")

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, password: str) -> str:
        """``default`` on with ``password`` and :data:`ROOT_RULES`; a client that gives only a
        password logs in as it."""
        _check_password(password)
        self._run("ACL", "SETUSER", ROOT_USER, "reset", "on", password_hash(password), *ROOT_RULES)
        self._save()
        self._run("CLIENT", "KILL", "USER", ROOT_USER)  # sessions of a former root password
        return ROOT_USER

    def disable_root(self) -> None:
        """``default`` off, without password or permission, and its connections ended."""
        self._run("ACL", "SETUSER", ROOT_USER, "reset")
        self._save()
        self._run("CLIENT", "KILL", "USER", ROOT_USER)

    def is_root_enabled(self) -> bool:
        info = self._run("ACL", "GETUSER", ROOT_USER)
        if isinstance(info, dict):
            flags = info.get("flags", [])
        elif isinstance(info, list):
            pairs = dict(zip(info[::2], info[1::2], strict=False))
            flags = pairs.get("flags", [])
        else:
            flags = []
        return "on" in flags
