"""Databases, users, access, root and live settings on a running MariaDB server.

Values travel as query parameters; identifiers are checked against Cove's naming rules and then
quoted. Passwords reach the server only as mysql_native_password verifiers
(``IDENTIFIED BY PASSWORD '*...'``), so no clear-text password is ever in a statement the
server could log.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import pymysql

from cove.common.errors import (
    BadRequest,
    CoveError,
    DatabaseAlreadyExists,
    DatabaseNotFound,
    GuestError,
    UserAlreadyExists,
    UserNotFound,
)
from cove.domain import names
from cove.domain.parameters import Value
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores.mariadb.conf import (
    HIDDEN_USERS,
    NAME,
    ROOT_USER,
    SYSTEM_DATABASES,
    native_password_hash,
)
from cove.guestagent.datastores.mariadb.privileges import (
    ROOT_DATABASE_PRIVILEGES,
    ROOT_GLOBAL_PRIVILEGES,
    ROOT_SYSTEM_PRIVILEGES,
)

Connect = Callable[[], "pymysql.connections.Connection[pymysql.cursors.Cursor]"]
Rows = list[tuple[object, ...]]

# Server error numbers the tenant's requests can cause.
ER_DB_CREATE_EXISTS = 1007
ER_UNKNOWN_CHARACTER_SET = 1115
ER_COLLATION_CHARSET_MISMATCH = 1253
ER_UNKNOWN_COLLATION = 1273
ER_INCORRECT_GLOBAL_LOCAL_VAR = 1238
ER_WRONG_VALUE_FOR_VAR = 1231
ER_WRONG_TYPE_FOR_VAR = 1232


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def grant_pattern(database: str) -> str:
    """A database as GRANT names it: ``_`` and ``%`` are wildcards there, so they are escaped
    and a grant on ``a_b`` never reaches ``axb``."""
    return quote_name(database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def from_pattern(stored: str) -> str:
    """A database name as mysql.db stores a grant's pattern, unescaped."""
    return stored.replace("\\_", "_").replace("\\%", "%").replace("\\\\", "\\")


def server_encoding(name: str | None) -> str | None:
    """A character set or collation as the server lists it: Trove's ``utf8`` and its
    ``utf8_*`` collations are the three-byte ``utf8mb3`` of MariaDB, which information_schema
    names only so."""
    if name is None:
        return None
    lowered = name.lower()
    if lowered == "utf8":
        return "utf8mb3"
    if lowered.startswith("utf8_"):
        return "utf8mb3_" + name[len("utf8_") :]
    return name


def account_owns(pattern: str, others: Iterable[str], client: str) -> bool:
    """Whether a session from ``client`` (PROCESSLIST's host, ``address:port`` or
    ``localhost``) logged in as the account of host ``pattern`` rather than as one of
    ``others`` of the same name: the server takes the most specific matching host, an exact
    one before any pattern, then the longest text before the first wildcard."""
    host = client
    head, sep, tail = client.rpartition(":")
    if sep and tail.isdigit():
        host = head.strip("[]")

    def matches(candidate: str) -> bool:
        regex = ""
        escaped = False
        for ch in candidate:
            if escaped:
                regex += re.escape(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "%":
                regex += ".*"
            elif ch == "_":
                regex += "."
            else:
                regex += re.escape(ch)
        return re.fullmatch(regex, host, re.IGNORECASE | re.DOTALL) is not None

    def rank(candidate: str) -> tuple[int, int]:
        wild = [i for i, ch in enumerate(candidate) if ch in "%_"]
        return (0, wild[0]) if wild else (1, len(candidate))

    found = [h for h in {pattern, *others} if matches(h)]
    return bool(found) and max(found, key=rank) == pattern


def _checked(rule: Callable[[str], str], value: str) -> str:
    try:
        return rule(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


class MariaAdmin:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def _run(self, query: str, params: Sequence[object] | None = None) -> Rows:
        """One statement as the agent's account. Raises the Cove error for the tenant's
        mistakes, GuestError for the server's refusals."""
        try:
            with self._connect() as conn, conn.cursor() as cur:
                cur.execute(query, params)
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            message = str(exc.args[-1]) if exc.args else type(exc).__name__
            if code == ER_DB_CREATE_EXISTS:
                raise DatabaseAlreadyExists(message) from exc
            if code in (
                ER_UNKNOWN_CHARACTER_SET,
                ER_UNKNOWN_COLLATION,
                ER_COLLATION_CHARSET_MISMATCH,
            ):
                raise BadRequest(message) from exc
            raise GuestError(f"MariaDB refused the request: {message}") from exc

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

    def _check_encoding(self, db: DatabaseSpec) -> DatabaseSpec:
        """``db`` with its character set and collation as the server names them; they must be
        ones the server knows, and agree."""
        charset = server_encoding(db.character_set)
        collate = server_encoding(db.collate)
        db = replace(db, character_set=charset, collate=collate)
        known = (
            charset
            and names.ENCODING.fullmatch(charset)
            and self._run(
                "SELECT 1 FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = %s",
                [charset],
            )
        )
        if charset and not known:
            raise BadRequest(
                f"Unknown character set '{charset}' for database {db.name}; "
                "SHOW CHARACTER SET lists those the server knows (e.g. utf8mb4)."
            )
        if db.collate:
            rows = (
                self._run(
                    "SELECT CHARACTER_SET_NAME FROM information_schema.COLLATIONS "
                    "WHERE COLLATION_NAME = %s",
                    [db.collate],
                )
                if names.ENCODING.fullmatch(db.collate)
                else []
            )
            if not rows:
                raise BadRequest(
                    f"Unknown collation '{db.collate}' for database {db.name}; "
                    "SHOW COLLATION lists those the server knows (e.g. utf8mb4_general_ci)."
                )
            if charset and str(rows[0][0]).lower() != charset.lower():
                raise BadRequest(
                    f"Collation '{db.collate}' is not one of character set '{charset}' "
                    f"(database {db.name})."
                )
        return db

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        """All of ``databases`` or none; each checked before anything changes."""
        wanted = [db.name for db in databases]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A database is listed twice.")
        checked: list[DatabaseSpec] = []
        for db in databases:
            _checked(names.database_name, db.name)
            checked.append(self._check_encoding(db))
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
        return bool(
            self._run("SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", [name, host])
        )

    def _require_user(self, name: str, host: str) -> None:
        if name in HIDDEN_USERS or not self._user_exists(name, host):
            raise UserNotFound(f"User {name}@{host} cannot be found on the instance.")

    def list_users(self) -> list[UserInfo]:
        rows = self._run(
            "SELECT User, Host FROM mysql.user WHERE is_role = 'N' ORDER BY User, Host"
        )
        return [
            UserInfo(str(r[0]), str(r[1]), tuple(self.list_access(str(r[0]), str(r[1]))))
            for r in rows
            if str(r[0]) not in HIDDEN_USERS
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
            _checked(names.user_name, user.name)
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
            _checked(names.user_name, str(new_name))
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
            _checked(names.database_name, db)
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
        self._end_sessions(name, host)

    def _revoke(self, name: str, host: str, database: str) -> None:
        self._run(f"REVOKE ALL PRIVILEGES ON {grant_pattern(database)}.* FROM %s@%s", [name, host])

    def _end_sessions(self, name: str, host: str) -> None:
        """End the sessions of the account ``name``@``host``, not those of another account
        of the same name (another host)."""
        others = [
            str(r[0])
            for r in self._run("SELECT Host FROM mysql.user WHERE User = %s", [name])
            if str(r[0]) != host
        ]
        rows = self._run(
            "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> "
            "CONNECTION_ID()",
            [name],
        )
        for session, client in rows:
            if not account_owns(host, others, str(client)):
                continue
            with contextlib.suppress(GuestError):  # it may have ended meanwhile
                self._run("KILL CONNECTION %s", [int(str(session))])

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
            self._end_sessions(ROOT_USER, "%")

    def is_root_enabled(self) -> bool:
        rows = self._run(
            "SELECT JSON_VALUE(Priv, '$.account_locked') FROM mysql.global_priv "
            "WHERE User = %s AND Host = '%%'",
            [ROOT_USER],
        )
        return bool(rows) and str(rows[0][0]).lower() not in ("true", "1")

    # -- settings ----------------------------------------------------------------------------

    def read_only(self, variables: Iterable[str]) -> set[str]:
        """Which of ``variables`` the running server takes only at start."""
        wanted = {v.lower() for v in variables}
        if not wanted:
            return set()
        rows = self._run(
            "SELECT LOWER(VARIABLE_NAME) FROM information_schema.SYSTEM_VARIABLES "
            "WHERE READ_ONLY = 'YES'"
        )
        return {str(r[0]) for r in rows} & wanted

    def set_global(self, name: str, value: Value | None) -> bool:
        """Set ``name`` for the running server (``None``: back to its default); False when the
        server takes it only at start. Raises GuestError when the server refuses the value."""
        if not NAME.fullmatch(name):
            raise BadRequest(f"Invalid configuration parameter name '{name}'.")
        try:
            if value is None:
                self._run(f"SET GLOBAL {name} = DEFAULT")
            else:
                self._run(f"SET GLOBAL {name} = %s", [value])
        except GuestError as exc:
            cause = exc.__cause__
            if isinstance(cause, pymysql.MySQLError) and cause.args[0] in (
                ER_INCORRECT_GLOBAL_LOCAL_VAR,
            ):
                return False
            raise
        return True

    def global_values(self, variables: Iterable[str]) -> dict[str, str]:
        """The running server's values of ``variables``, as SHOW GLOBAL VARIABLES prints them."""
        wanted = {v.lower() for v in variables}
        rows = self._run("SHOW GLOBAL VARIABLES")
        return {str(r[0]): str(r[1]) for r in rows if str(r[0]) in wanted}
