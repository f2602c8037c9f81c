"""What the end-to-end tests need to know of each datastore: how its real client library logs
in, writes and reads, tells a refused login, and tells that the server was restarted.

Each adapter answers the same questions, so one test can walk an instance's whole life on
PostgreSQL (psycopg), MariaDB (PyMySQL) and Redis (redis-py) alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Errors a refused login or a refused access raises, per client library.
LOGIN_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    pymysql.err.OperationalError,
    redis.exceptions.AuthenticationError,
    redis.exceptions.NoPermissionError,
    redis.exceptions.ResponseError,
)


class Datastore:
    name = ""
    port = 0
    has_databases = True
    #: The superuser login name Cove gives root (None: the client names no user).
    root_user: str | None = "root"
    #: A memory setting the flavor sizes.
    memory_setting = ""

    def memory_value(self, ram_mb: int) -> str:
        """What the server reports for :attr:`memory_setting` with a flavor of ``ram_mb``."""
        raise NotImplementedError

    def session(self, inst: dict[str, Any], user: str | None, password: str, db: str) -> Any:
        """A connection logged in as ``user``; raises one of LOGIN_ERRORS when refused."""
        raise NotImplementedError

    @contextlib.contextmanager
    def login(
        self, inst: dict[str, Any], user: str | None, password: str, db: str = ""
    ) -> Iterator[Any]:
        conn = self.session(inst, user, password, db)
        try:
            yield conn
        finally:
            conn.close()

    def refused(self, inst: dict[str, Any], user: str | None, password: str, db: str = "") -> bool:
        """Whether the login, or the first use of ``db``, is refused."""
        try:
            with self.login(inst, user, password, db) as conn:
                self.read(conn)
        except LOGIN_ERRORS:
            return True
        return False

    def write(self, conn: Any, value: str) -> None:
        """Store ``value``; what :meth:`read` gives is the first value stored."""
        raise NotImplementedError

    def read(self, conn: Any) -> str | None:
        raise NotImplementedError

    def server_run_id(self, conn: Any) -> object:
        """Something that changes whenever the server process is restarted."""
        raise NotImplementedError

    def add(self, conn: Any, value: str) -> None:
        """Add ``value`` to a set of values :meth:`values` gives back (made on first use)."""
        raise NotImplementedError

    def values(self, conn: Any) -> set[str]:
        raise NotImplementedError

    def setting(self, conn: Any, name: str) -> str:
        """A server setting as the running server reports it, asked over ``conn`` (a root
        login, or what :meth:`settings_session` gives)."""
        raise NotImplementedError

    def settings_session(self, instance_dir: Path, inst: dict[str, Any], root_password: str) -> Any:
        """A connection allowed to read the server's settings."""
        return self.session(inst, self.root_user, root_password, "")


class Postgres(Datastore):
    name = "postgresql"
    port = 5432
    memory_setting = "shared_buffers"

    def memory_value(self, ram_mb: int) -> str:
        return f"{ram_mb // 4}MB"

    def session(self, inst: dict[str, Any], user: str | None, password: str, db: str) -> Any:
        return psycopg.connect(
            host=inst["ip"][0],
            port=self.port,
            user=user,
            password=password,
            dbname=db or "postgres",
            connect_timeout=5,
            autocommit=True,
        )

    def write(self, conn: Any, value: str) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        conn.execute("INSERT INTO kept VALUES (%s)", (value,))

    def read(self, conn: Any) -> str | None:
        exists = conn.execute("SELECT to_regclass('kept')").fetchone()[0]
        if exists is None:
            return None
        row = conn.execute("SELECT v FROM kept LIMIT 1").fetchone()
        return row[0] if row else None

    def server_run_id(self, conn: Any) -> object:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]

    def add(self, conn: Any, value: str) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS events (v text)")
        conn.execute("INSERT INTO events VALUES (%s)", (value,))

    def values(self, conn: Any) -> set[str]:
        return {r[0] for r in conn.execute("SELECT v FROM events").fetchall()}

    def setting(self, conn: Any, name: str) -> str:
        return str(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])


class MariaDB(Datastore):
    name = "mariadb"
    port = 3306
    memory_setting = "innodb_buffer_pool_size"

    def memory_value(self, ram_mb: int) -> str:
        return str(ram_mb // 2 * 1024 * 1024)

    def session(self, inst: dict[str, Any], user: str | None, password: str, db: str) -> Any:
        return pymysql.connect(
            host=inst["ip"][0],
            port=self.port,
            user=user or "",
            password=password,
            database=db or None,
            connect_timeout=5,
            autocommit=True,
        )

    def write(self, conn: Any, value: str) -> None:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kept (v varchar(100))")
            cur.execute("INSERT INTO kept VALUES (%s)", (value,))

    def read(self, conn: Any) -> str | None:
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            if cur.fetchone()[0] is None:
                return None
            cur.execute("SHOW TABLES LIKE 'kept'")
            if cur.fetchone() is None:
                return None
            cur.execute("SELECT v FROM kept LIMIT 1")
            row = cur.fetchone()
            return row[0] if row else None

    def add(self, conn: Any, value: str) -> None:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS events (v varchar(100))")
            cur.execute("INSERT INTO events VALUES (%s)", (value,))

    def values(self, conn: Any) -> set[str]:
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM events")
            return {r[0] for r in cur.fetchall()}

    def server_run_id(self, conn: Any) -> object:
        # The server's pid, from the pid file it names (the tests run on the instance's host).
        with conn.cursor() as cur:
            cur.execute("SELECT @@pid_file")
            return Path(cur.fetchone()[0]).read_text().strip()

    def setting(self, conn: Any, name: str) -> str:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
                "WHERE VARIABLE_NAME = %s",
                (name.upper(),),
            )
            return str(cur.fetchone()[0])


class Redis(Datastore):
    name = "redis"
    port = 6379
    has_databases = False
    root_user = None  # root is the default user
    memory_setting = "maxmemory"

    def memory_value(self, ram_mb: int) -> str:
        return str(ram_mb * 3 // 4 * 1024 * 1024)

    def session(self, inst: dict[str, Any], user: str | None, password: str, db: str) -> Any:
        client = redis.Redis(
            host=inst["ip"][0],
            port=self.port,
            username=user,
            password=password,
            socket_timeout=5,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
        )
        client.ping()
        return client

    def write(self, conn: Any, value: str) -> None:
        conn.set("kept", value, nx=True)  # the first value stays, as the first row does

    def read(self, conn: Any) -> str | None:
        return conn.get("kept")  # type: ignore[no-any-return]

    def server_run_id(self, conn: Any) -> object:
        return conn.info("server")["run_id"]

    def add(self, conn: Any, value: str) -> None:
        conn.sadd("events", value)

    def values(self, conn: Any) -> set[str]:
        return set(conn.smembers("events"))

    def setting(self, conn: Any, name: str) -> str:
        return str(conn.config_get(name)[name])

    def settings_session(self, instance_dir: Path, inst: dict[str, Any], root_password: str) -> Any:
        # Tenants' root has no CONFIG: read the settings as the guest agent does, over the
        # instance's unix socket with the agent's own account.
        secret = (instance_dir / "conf" / "admin.secret").read_text().strip()
        return redis.Redis(
            unix_socket_path=str(instance_dir / "run" / "redis.sock"),
            username="cove_admin",
            password=secret,
            socket_timeout=5,
            decode_responses=True,
        )


DATASTORES: dict[str, Datastore] = {d.name: d for d in (Postgres(), MariaDB(), Redis())}
