"""Databases, users, access and root on a running MariaDB server.

Values travel as query parameters; identifiers are checked against Cove's naming rules and then
quoted (``sql``). Passwords reach the server only as mysql_native_password verifiers
(``IDENTIFIED BY PASSWORD '*...'``), so no clear-text password is ever in a statement the
server could log. Live settings are ``live``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

from cove.common.errors import (
    BadRequest,
    CoveError,
    DatabaseAlreadyExists,
    DatabaseNotFound,
    UserAlreadyExists,
    UserNotFound,
)
from cove.domain import names
from cove.domain.datastores.mariadb import MARIADB
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores.mariadb.conf import (
    REPLICATION_USER,
    ROOT_USER,
    SYSTEM_DATABASES,
    native_password_hash,
)
from cove.guestagent.datastores.mariadb.privileges import (
    ROOT_DATABASE_PRIVILEGES,
    ROOT_GLOBAL_PRIVILEGES,
    ROOT_SYSTEM_PRIVILEGES,
)
from cove.guestagent.datastores.mariadb.sql import (
    Connect,
    Rows,
    check_encoding,
    end_sessions,
    from_pattern,
    grant_pattern,
    quote_name,
    run,
)


def _checked(rule: Callable[[str], str], value: str) -> str:
    try:
        return rule(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _user_name(name: str) -> str:
    """A name a new account (or a rename) may take on MariaDB; raises BadRequest."""
    if name.lower() == REPLICATION_USER:
        # The replication account's name, which the datastore's own rules do not keep.
        raise BadRequest(f"user name '{name}' is reserved on {MARIADB.title}; choose another")
    return _checked(lambda v: names.user_name(v, MARIADB.name), name)


def _database_name(name: str) -> str:
    """A database name tenants may use on MariaDB; raises BadRequest."""
    return _checked(lambda v: names.database_name(v, MARIADB.name), name)


def _hidden(name: str) -> bool:
    """Whether ``name`` is one of the server's or Cove's own accounts (the replication one
    too), or the anonymous one: never listed, shown or changed."""
    return not name or MARIADB.names.own_user(name) or name.lower() == REPLICATION_USER


class MariaAdmin:
    """The ``Admin`` of the MariaDB manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def _run(self, query: str, params: Sequence[object] | None = None) -> Rows:
        """One statement as the agent's account (see ``sql.run`` for what it raises)."""
        return run(self._connect, query, params)

    # -- databases ---------------------------------------------------------------------------

    def list_databases(self) -> list[DatabaseSpec]:
        rows = self._run(
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME"
        )
        return [
            DatabaseSpec(str(r[0]), str(r[1]), str(r[2]))
            for r in rows
            if str(r[0]) not in SYSTEM_DATABASES
        ]

    def database_exists(self, name: str) -> bool:
        if name.lower() in SYSTEM_DATABASES:
            return False
        return bool(
            self._run("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", [name])
        )

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        """All of ``databases`` or none; each checked before anything changes."""
        wanted = [db.name for db in databases]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A database is listed twice.")
        checked: list[DatabaseSpec] = []
        for db in databases:
            _database_name(db.name)
            checked.append(check_encoding(self._connect, db))
            if self.database_exists(db.name):
                raise DatabaseAlreadyExists(f"A database with the name {db.name} already exists.")
        made: list[str] = []
        try:
            for db in checked:
                parts = [f"CREATE DATABASE {quote_name(db.name)}"]
                if db.character_set:
                    parts.append(f"CHARACTER SET {db.character_set}")
                if db.collate:
                    parts.append(f"COLLATE {db.collate}")
                self._run(" ".join(parts))
                made.append(db.name)
        except Exception:
            for name in made:  # all or nothing
                with contextlib.suppress(CoveError):
                    self._run(f"DROP DATABASE IF EXISTS {quote_name(name)}")
            raise

    def delete_database(self, name: str) -> None:
        """Drop ``name`` and the grants on it, so a database made later under the same name
        is not open to the users of this one."""
        if not self.database_exists(name):
            raise DatabaseNotFound(f"Database {name} cannot be found on the instance.")
        for user, host in self._grantees(name):
            self._revoke(user, host, name)
        self._run(f"DROP DATABASE {quote_name(name)}")

    def _grantees(self, database: str) -> list[tuple[str, str]]:
        rows = self._run("SELECT User, Host, Db FROM mysql.db")
        return [(str(r[0]), str(r[1])) for r in rows if from_pattern(str(r[2])) == database]

    # -- users -------------------------------------------------------------------------------

    def _user_exists(self, name: str, host: str) -> bool:
        """Whether the account exists; a role (PUBLIC's, say) is no account."""
        return bool(
            self._run(
                "SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s AND is_role = 'N'",
                [name, host],
            )
        )

    def _require_user(self, name: str, host: str) -> None:
        if _hidden(name) or not self._user_exists(name, host):
            raise UserNotFound(f"User {name}@{host} cannot be found on the instance.")

    def list_users(self) -> list[UserInfo]:
        rows = self._run(
            "SELECT User, Host FROM mysql.user WHERE is_role = 'N' ORDER BY User, Host"
        )
        return [
            UserInfo(str(r[0]), str(r[1]), tuple(self.list_access(str(r[0]), str(r[1]))))
            for r in rows
            if not _hidden(str(r[0]))
        ]

    def get_user(self, name: str, host: str) -> UserInfo:
        self._require_user(name, host)
        return UserInfo(name, host, tuple(self.list_access(name, host)))

    def create_users(self, users: Sequence[UserSpec]) -> None:
        """All of ``users`` or none; each checked before anything changes."""
        wanted = [(u.name, u.host) for u in users]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A user is listed twice.")
        for user in users:
            _user_name(user.name)
            _checked(names.user_host, user.host)
            if not user.password:
                raise BadRequest("A password is required.")
            if self._user_exists(user.name, user.host):
                raise UserAlreadyExists(
                    f"A user with the name {user.name}@{user.host} already exists."
                )
            self._require_databases(user.databases)
        made: list[tuple[str, str]] = []
        try:
            for user in users:
                self._run(
                    "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s",
                    [user.name, user.host, native_password_hash(user.password)],
                )
                made.append((user.name, user.host))
                self._grant(user.name, user.host, user.databases)
        except Exception:
            for name, host in made:  # all or nothing
                with contextlib.suppress(CoveError):
                    self._run("DROP USER IF EXISTS %s@%s", [name, host])
            raise

    def delete_user(self, name: str, host: str) -> None:
        self._require_user(name, host)
        self._run("DROP USER %s@%s", [name, host])

    def update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        self._require_user(name, host)
        renaming = new_name is not None and new_name != name
        if renaming:
            _user_name(str(new_name))
            if self._user_exists(str(new_name), host):
                raise UserAlreadyExists(f"A user with the name {new_name}@{host} already exists.")
        if new_password is not None:
            if not new_password:
                raise BadRequest("A password is required.")
            self._run(
                "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
                [name, host, native_password_hash(new_password)],
            )
        if renaming:
            # The account's grants move with it.
            self._run("RENAME USER %s@%s TO %s@%s", [name, host, new_name, host])

    def change_host(self, name: str, host: str, new_host: str) -> None:
        """Move ``name``@``host`` to ``new_host``, grants and all."""
        self._require_user(name, host)
        _checked(names.user_host, new_host)
        if self._user_exists(name, new_host):
            raise UserAlreadyExists(f"A user with the name {name}@{new_host} already exists.")
        self._run("RENAME USER %s@%s TO %s@%s", [name, host, name, new_host])

    # -- access ------------------------------------------------------------------------------

    def list_access(self, name: str, host: str) -> list[str]:
        rows = self._run("SELECT Db FROM mysql.db WHERE User = %s AND Host = %s", [name, host])
        found = {from_pattern(str(r[0])) for r in rows}
        return sorted(db for db in found if db.lower() not in SYSTEM_DATABASES)

    def _require_databases(self, databases: Iterable[str]) -> None:
        for db in databases:
            _database_name(db)
            if not self.database_exists(db):
                raise DatabaseNotFound(f"Database {db} cannot be found on the instance.")

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        self._require_user(name, host)
        self._require_databases(databases)
        self._grant(name, host, databases)

    def _grant(self, name: str, host: str, databases: Iterable[str]) -> None:
        for db in databases:
            self._run(f"GRANT ALL PRIVILEGES ON {grant_pattern(db)}.* TO %s@%s", [name, host])

    def revoke_access(self, name: str, host: str, database: str) -> None:
        self._require_user(name, host)
        if database not in self.list_access(name, host):
            raise DatabaseNotFound(f"User {name} has no access to database {database}.")
        self._revoke(name, host, database)
        # Sessions opened while the grant held are ended, so the revocation takes effect now.
        end_sessions(self._connect, name, host)

    def _revoke(self, name: str, host: str, database: str) -> None:
        self._run(f"REVOKE ALL PRIVILEGES ON {grant_pattern(database)}.* FROM %s@%s", [name, host])

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, password: str) -> str:
        """Enable ``root``@``%`` as a database superuser without account administration:
        :data:`ROOT_GLOBAL_PRIVILEGES` on ``*.*``, :data:`ROOT_DATABASE_PRIVILEGES` on every
        database but the server's own (:data:`ROOT_SYSTEM_PRIVILEGES`), no GRANT OPTION
        anywhere, and nothing more. An existing account loses everything it held before it is
        unlocked, and the rows for the server's schemas come before the one for every
        database, so no step leaves it more than that; a step that fails leaves it less."""
        if not password:
            raise BadRequest("A password is required.")
        verifier = native_password_hash(password)
        if self._user_exists(ROOT_USER, "%"):
            self._run("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@'%%'", [ROOT_USER])
            self._run(
                "ALTER USER %s@'%%' IDENTIFIED BY PASSWORD %s ACCOUNT UNLOCK", [ROOT_USER, verifier]
            )
        else:
            self._run("CREATE USER %s@'%%' IDENTIFIED BY PASSWORD %s", [ROOT_USER, verifier])
        grants: list[tuple[str, Sequence[str]]] = [("*.*", ROOT_GLOBAL_PRIVILEGES)]
        grants += [(f"{grant_pattern(db)}.*", held) for db, held in ROOT_SYSTEM_PRIVILEGES.items()]
        grants.append(("`%%`.*", ROOT_DATABASE_PRIVILEGES))
        for target, held in grants:
            self._run(f"GRANT {', '.join(held)} ON {target} TO %s@'%%'", [ROOT_USER])
        return ROOT_USER

    def disable_root(self) -> None:
        """Lock ``root`` (what it defined keeps a valid definer) and end its sessions."""
        if self._user_exists(ROOT_USER, "%"):
            self._run("ALTER USER %s@'%%' ACCOUNT LOCK", [ROOT_USER])
            end_sessions(self._connect, ROOT_USER, "%")

    def is_root_enabled(self) -> bool:
        rows = self._run(
            "SELECT JSON_VALUE(Priv, '$.account_locked') FROM mysql.global_priv "
            "WHERE User = %s AND Host = '%%'",
            [ROOT_USER],
        )
        return bool(rows) and str(rows[0][0]).lower() not in ("true", "1")
