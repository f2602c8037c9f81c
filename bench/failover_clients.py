"""The failover benchmark's shared knobs and the tenant's client per datastore: how the
tenant logs in, writes a numbered row, tells which rows a server holds and loads the data.
Both sides of the benchmark, Cove's group and the servers made by hand, are driven through
these same clients, so their times compare like with like.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PASSWORD = "bench-Fail-7713"
MB = 1 << 20
#: Text bytes per filler row (PostgreSQL, MariaDB); Redis values are 1 MiB each.
ROW = 800
#: Pause between two rounds of failed write attempts over every member.
RETRY = 0.01
#: How often the benchmark asks the API, as a script or the CLI would.
POLL = 0.05
ERRORS: tuple[type[BaseException], ...] = (
    psycopg.Error,
    pymysql.MySQLError,
    redis.RedisError,
    OSError,
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def filler(size: int) -> Iterator[list[tuple[int, str]]]:
    """Rows of ``ROW`` random hex characters adding up to ``size`` bytes, in 8 MiB blocks."""
    number = 0
    while size > 0:
        block = os.urandom(min(size, 8 * MB) // 2).hex()
        size -= len(block)
        rows = []
        for offset in range(0, len(block), ROW):
            number += 1
            rows.append((number, block[offset : offset + ROW]))
        yield rows


# -- the tenant's client, per datastore --------------------------------------------------------


class Client:
    """How the tenant's client logs in (user ``app``, database ``app``), writes a numbered row,
    tells which rows a server holds, and loads the data."""

    name = ""
    port = 0  # Cove's port for the datastore

    def connect(self, address: str, port: int) -> Any:
        raise NotImplementedError

    def setup(self, conn: Any) -> None:
        """The table of numbered rows, made on the primary before the replicas."""

    def insert(self, conn: Any, n: int) -> None:
        raise NotImplementedError

    def present(self, conn: Any, ns: list[int]) -> set[int]:
        raise NotImplementedError

    def load(self, conn: Any, size: int) -> None:
        """``size`` bytes of filler, then the marker :meth:`marked` reads."""
        raise NotImplementedError

    def marked(self, conn: Any) -> bool:
        raise NotImplementedError

    def answers(self, address: str, port: int, check: Callable[[Any], bool]) -> bool:
        """One attempt: log in and ``check``; False on any client error."""
        try:
            conn = self.connect(address, port)
        except ERRORS:
            return False
        try:
            return check(conn)
        except ERRORS:
            return False
        finally:
            close(conn)


def close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


class PgClient(Client):
    name, port = "postgresql", 5432

    def connect(self, address: str, port: int) -> Any:
        return psycopg.connect(
            host=address,
            port=port,
            user="app",
            password=PASSWORD,
            dbname="app",
            connect_timeout=2,
            autocommit=True,
        )

    def setup(self, conn: Any) -> None:
        conn.execute("CREATE TABLE events (n bigint PRIMARY KEY)")

    def insert(self, conn: Any, n: int) -> None:
        conn.execute("INSERT INTO events VALUES (%s)", (n,))

    def present(self, conn: Any, ns: list[int]) -> set[int]:
        rows = conn.execute(
            "SELECT n FROM events WHERE n BETWEEN %s AND %s", (min(ns), max(ns))
        ).fetchall()
        return {r[0] for r in rows}

    def load(self, conn: Any, size: int) -> None:
        conn.execute("CREATE TABLE filler (id bigint, body text)")
        with conn.cursor().copy("COPY filler (id, body) FROM STDIN") as copy:
            for rows in filler(size):
                copy.write("".join(f"{n}\t{body}\n" for n, body in rows))
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('row')")

    def marked(self, conn: Any) -> bool:
        return bool(conn.execute("SELECT v FROM kept").fetchone() == ("row",))


class MariaClient(Client):
    name, port = "mariadb", 3306

    def connect(self, address: str, port: int) -> Any:
        return pymysql.connect(
            host=address,
            port=port,
            user="app",
            password=PASSWORD,
            database="app",
            connect_timeout=2,
            read_timeout=10,
            write_timeout=10,
            autocommit=True,
        )

    def _run(self, conn: Any, sql: str, args: Any = None) -> list[Any]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def setup(self, conn: Any) -> None:
        self._run(conn, "CREATE TABLE events (n bigint PRIMARY KEY)")

    def insert(self, conn: Any, n: int) -> None:
        self._run(conn, "INSERT INTO events VALUES (%s)", (n,))

    def present(self, conn: Any, ns: list[int]) -> set[int]:
        sql = "SELECT n FROM events WHERE n BETWEEN %s AND %s"
        return {r[0] for r in self._run(conn, sql, (min(ns), max(ns)))}

    def load(self, conn: Any, size: int) -> None:
        self._run(conn, "CREATE TABLE filler (id bigint PRIMARY KEY, body text)")
        with conn.cursor() as cur:
            for rows in filler(size):
                cur.executemany("INSERT INTO filler (id, body) VALUES (%s, %s)", rows)
        self._run(conn, "CREATE TABLE kept (v varchar(10))")
        self._run(conn, "INSERT INTO kept VALUES ('row')")

    def marked(self, conn: Any) -> bool:
        return self._run(conn, "SELECT v FROM kept") == [("row",)]


class RedisClient(Client):
    name, port = "redis", 6379

    def connect(self, address: str, port: int) -> Any:
        client = redis.Redis(
            host=address,
            port=port,
            username="app",
            password=PASSWORD,
            socket_timeout=10,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
        except ERRORS:
            client.close()
            raise
        return client

    def insert(self, conn: Any, n: int) -> None:
        conn.sadd("events", n)

    def present(self, conn: Any, ns: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ns), 10_000):
            chunk = ns[start : start + 10_000]
            found.update(
                n for n, there in zip(chunk, conn.smismember("events", chunk), strict=True) if there
            )
        return found

    def load(self, conn: Any, size: int) -> None:
        for number in range(-(-size // MB)):
            conn.set(f"doc:{number}", os.urandom(min(MB, size - number * MB) // 2).hex())
        conn.set("kept", "row")

    def marked(self, conn: Any) -> bool:
        return bool(conn.get("kept") == b"row")


CLIENTS: dict[str, Client] = {c.name: c for c in (PgClient(), MariaClient(), RedisClient())}


def write_until_acknowledged(client: Client, address: str, port: int, timeout: float) -> float:
    """Connect and write until a write is acknowledged; its monotonic time."""
    n = -secrets.randbelow(1 << 40) - 1  # numbered apart from the writer's rows

    def attempt() -> float | None:
        nonlocal n
        n -= 1
        try:
            conn = client.connect(address, port)
        except ERRORS:
            return None
        try:
            client.insert(conn, n)
            return time.monotonic()
        except ERRORS:
            return None
        finally:
            close(conn)

    return float(wait_for(attempt, timeout, f"a write on {address}:{port}", poll=RETRY))
