"""Databases, users, access and root on a running PostgreSQL server.

Statements are built with ``psycopg.sql`` (identifiers and literals quoted by the driver) and
passwords are sent as SCRAM verifiers, never in clear text. PostgreSQL roles have no host:
:class:`PostgresAdmin` takes the host the ``Admin`` protocol passes and ignores it, and shows
every user as ``%``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import psycopg
from psycopg import sql

from cove.common.errors import (
    BadRequest,
    CoveError,
    DatabaseAlreadyExists,
    DatabaseNotFound,
    GuestError,
    OperationNotSupported,
    UserAlreadyExists,
    UserNotFound,
)
from cove.domain import names
from cove.domain.datastores.postgresql import ADMIN_USER, POSTGRESQL
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores.postgresql.conf import REPLICATION_USER, ROOT_USER
from cove.guestagent.datastores.postgresql.replication import READ_ONLY
from cove.guestagent.datastores.postgresql.scram import verifier

#: Owns what deleted users leave behind.
OWNER_ROLE = "cove_orphans"
HIDDEN_USERS = (ADMIN_USER, ROOT_USER, OWNER_ROLE, REPLICATION_USER)
#: What a change asked of a replica answers (its server is a read-only hot standby).
REFUSED_ON_REPLICA = f"{READ_ONLY}: change databases, users and root on its primary."
#: What ``root`` is given instead of superuser.
ROOT_ROLES = ("pg_read_all_data", "pg_write_all_data", "pg_monitor", "pg_signal_backend")
HIDDEN_DATABASES = ("postgres", "template0", "template1")

Connect = Callable[..., psycopg.Connection]


def _checked(rule: Callable[[str, str], str], value: str) -> str:
    """``value`` held to a naming rule of ``cove.domain.names`` for PostgreSQL, which the API
    applied already: a request that reaches the agent another way meets it too. Raises
    BadRequest."""
    try:
        return rule(value, POSTGRESQL.name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


class PostgresAdmin:
    """The ``Admin`` of a PostgreSQL manager (``cove.guestagent.datastores.base``)."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        # This thread's open connections while a session() lasts, by database.
        self._session = threading.local()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """While it lasts, this thread's statements share one connection per database instead
        of one each: a new instance's databases and users are a dozen statements, and a
        connection costs a few milliseconds. Nested sessions share the outer one's."""
        if getattr(self._session, "open", None) is not None:
            yield
            return
        self._session.open = {}
        try:
            yield
        finally:
            opened: dict[str, psycopg.Connection] = self._session.open
            self._session.open = None
            for conn in opened.values():
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    def _run(
        self,
        query: sql.Composed | sql.SQL | str,
        params: Sequence[object] = (),
        dbname: str = "postgres",
    ) -> list[tuple[object, ...]]:
        try:
            opened: dict[str, psycopg.Connection] | None = getattr(self._session, "open", None)
            if opened is None:
                with self._connect(dbname=dbname) as conn:
                    cur = conn.execute(query, params)
                    return list(cur.fetchall()) if cur.description else []
            shared = opened.get(dbname)
            if shared is None or shared.closed or shared.broken:
                if shared is not None:
                    with contextlib.suppress(psycopg.Error):
                        shared.close()
                shared = opened[dbname] = self._connect(dbname=dbname)
            cur = shared.execute(query, params)
            return list(cur.fetchall()) if cur.description else []
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise GuestError(REFUSED_ON_REPLICA) from exc
        except psycopg.errors.DuplicateDatabase as exc:
            raise DatabaseAlreadyExists(str(exc).splitlines()[0]) from exc
        except psycopg.errors.DuplicateObject as exc:
            raise UserAlreadyExists(str(exc).splitlines()[0]) from exc
        except (
            psycopg.errors.DataException,
            psycopg.errors.UndefinedObject,
            psycopg.errors.InvalidParameterValue,
            psycopg.errors.ReservedName,
        ) as exc:
            # The request named something the server does not know (an encoding, a locale),
            # or a name it keeps for itself.
            raise BadRequest(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise GuestError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    # -- databases ---------------------------------------------------------------------------

    def list_databases(self) -> list[DatabaseSpec]:
        rows = self._run(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate FROM pg_database "
            "WHERE datallowconn AND NOT datistemplate AND datname <> ALL(%s) ORDER BY datname",
            [list(HIDDEN_DATABASES)],
        )
        return [DatabaseSpec(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def database_exists(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM pg_database WHERE datname = %s", [name]))

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        wanted = [db.name for db in databases]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A database is listed twice.")
        for db in databases:
            _checked(names.database_name, db.name)
            for key, value in (("character set", db.character_set), ("collation", db.collate)):
                if value and not names.ENCODING.fullmatch(value):
                    raise BadRequest(f"Invalid {key} '{value}' for database {db.name}.")
            if self.database_exists(db.name):
                raise DatabaseAlreadyExists(f"A database with the name {db.name} already exists.")
        made: list[str] = []
        try:
            for db in databases:
                self._create_database(db, made)
        except Exception:
            for name in made:  # all or nothing
                with contextlib.suppress(CoveError):
                    self._run(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
            raise

    def _create_database(self, db: DatabaseSpec, made: list[str]) -> None:
        parts: list[sql.Composable] = [
            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name))
        ]
        for key, value in (("ENCODING", db.character_set), ("LC_COLLATE", db.collate)):
            if value:
                parts.append(sql.SQL(key + " {}").format(sql.Literal(value)))
        if db.character_set or db.collate:
            parts.append(sql.SQL("TEMPLATE template0"))
        self._run(sql.SQL(" ").join(parts))
        made.append(db.name)
        # Only users granted access may connect.
        self._run(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db.name)))
        if self._user_exists(ROOT_USER):
            self._grant_databases(ROOT_USER, [db.name])

    def delete_database(self, name: str) -> None:
        if POSTGRESQL.names.database_refused(name) or not self.database_exists(name):
            raise DatabaseNotFound(f"Database {name} cannot be found on the instance.")
        self._run(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- users -------------------------------------------------------------------------------

    def _user_exists(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]))

    def _require_user(self, name: str) -> None:
        if POSTGRESQL.names.own_user(name) or not self._user_exists(name):
            raise UserNotFound(f"User {name} cannot be found on the instance.")

    def list_users(self) -> list[UserInfo]:
        rows = self._run(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname <> ALL(%s) "
            "AND rolname NOT LIKE 'pg\\_%%' ORDER BY rolname",
            [list(HIDDEN_USERS)],
        )
        return [UserInfo(str(r[0]), "%", tuple(self.list_access(str(r[0])))) for r in rows]

    def get_user(self, name: str, host: str) -> UserInfo:
        self._require_user(name)
        return UserInfo(name, "%", tuple(self.list_access(name)))

    def create_users(self, users: Sequence[UserSpec]) -> None:
        wanted = [u.name for u in users]
        if len(set(wanted)) != len(wanted):
            raise BadRequest("A user is listed twice.")
        for user in users:
            _checked(names.user_name, user.name)
            if self._user_exists(user.name):
                raise UserAlreadyExists(f"A user with the name {user.name} already exists.")
            for db in user.databases:
                if not self.database_exists(db):
                    raise DatabaseNotFound(f"Database {db} cannot be found on the instance.")
        made: list[str] = []
        try:
            for user in users:
                self._run(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(user.name), sql.Literal(verifier(user.password))
                    )
                )
                made.append(user.name)
                self.grant_access(user.name, user.host, user.databases)
        except Exception:
            for name in made:  # all or nothing
                with contextlib.suppress(CoveError):
                    self.delete_user(name, "%")
            raise

    def delete_user(self, name: str, host: str) -> None:
        self._require_user(name)
        ident = sql.Identifier(name)
        self._ensure_owner_role()
        for db in self._connectable_databases():
            # What the user owned is kept, owned by a role that cannot log in and has no
            # privilege of its own: never by the superuser, or a function the user left behind
            # would run with the superuser's rights.
            self._run(
                sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, sql.Identifier(OWNER_ROLE)),
                dbname=db,
            )
            self._run(sql.SQL("DROP OWNED BY {}").format(ident), dbname=db)
        self._run(sql.SQL("DROP ROLE {}").format(ident))

    def update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        self._require_user(name)
        renaming = new_name is not None and new_name != name
        if renaming:
            _checked(names.user_name, str(new_name))
        if renaming and self._user_exists(str(new_name)):
            raise UserAlreadyExists(f"A user with the name {new_name} already exists.")
        if new_password is not None:
            self._run(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(verifier(new_password))
                )
            )
        if renaming:
            self._run(
                sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(str(new_name))
                )
            )

    def change_host(self, name: str, host: str, new_host: str) -> None:
        raise OperationNotSupported("users of postgresql have no host")

    def _ensure_owner_role(self) -> None:
        if not self._user_exists(OWNER_ROLE):
            self._run(
                sql.SQL(
                    "CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
                ).format(sql.Identifier(OWNER_ROLE))
            )

    def _connectable_databases(self) -> list[str]:
        rows = self._run("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
        return [str(r[0]) for r in rows]

    # -- access ------------------------------------------------------------------------------

    def list_access(self, name: str) -> list[str]:
        rows = self._run(
            "SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE r.rolname = %s AND a.privilege_type = 'CONNECT' "
            "AND d.datname <> ALL(%s) ORDER BY d.datname",
            [name, list(HIDDEN_DATABASES)],
        )
        return [str(r[0]) for r in rows]

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        self._require_user(name)
        for db in databases:
            _checked(names.database_name, db)
        missing = [db for db in databases if not self.database_exists(db)]
        if missing:
            raise DatabaseNotFound(f"Database {missing[0]} cannot be found on the instance.")
        self._grant_databases(name, databases)

    def _grant_databases(self, name: str, databases: Sequence[str]) -> None:
        for db in databases:
            user, dbi = sql.Identifier(name), sql.Identifier(db)
            self._run(sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(dbi, user))
            self._run(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(user), dbname=db)

    def revoke_access(self, name: str, host: str, database: str) -> None:
        self._require_user(name)
        if database not in self.list_access(name):
            raise DatabaseNotFound(f"User {name} has no access to database {database}.")
        user, dbi = sql.Identifier(name), sql.Identifier(database)
        self._run(sql.SQL("REVOKE ALL PRIVILEGES ON DATABASE {} FROM {}").format(dbi, user))
        self._run(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(user), dbname=database)
        # Sessions opened while the grant held are ended, so the revocation takes effect now.
        self._run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = %s AND datname = %s",
            [name, database],
        )

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, password: str) -> str:
        """Enable ``root``: it reads and writes every database, creates databases, watches and
        signals sessions; it is not a PostgreSQL superuser, whose file and program access would
        reach past the instance into the host."""
        ident, secret = sql.Identifier(ROOT_USER), sql.Literal(verifier(password))
        verb = "ALTER" if self._user_exists(ROOT_USER) else "CREATE"
        self._run(
            sql.SQL(verb + " ROLE {} NOSUPERUSER NOCREATEROLE CREATEDB LOGIN PASSWORD {}").format(
                ident, secret
            )
        )
        roles = sql.SQL(", ").join(sql.Identifier(r) for r in ROOT_ROLES)
        self._run(sql.SQL("GRANT {} TO {}").format(roles, ident))
        self._grant_databases(ROOT_USER, [d.name for d in self.list_databases()])
        return ROOT_USER

    def disable_root(self) -> None:
        if self._user_exists(ROOT_USER):
            self._run(
                sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(ROOT_USER))
            )
            self._run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [ROOT_USER],
            )

    def is_root_enabled(self) -> bool:
        rows = self._run("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [ROOT_USER])
        return bool(rows and rows[0][0])
