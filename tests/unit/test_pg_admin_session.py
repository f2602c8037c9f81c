"""PostgresAdmin.session(): a prepare's statements share one connection per database, in the
thread that opened the session only, and the connections are closed when it ends."""

from __future__ import annotations

import threading
from typing import Any

from cove.guestagent.datastores.postgresql.admin import PostgresAdmin


class FakeConnection:
    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.closed = False
        self.broken = False
        self.statements: list[str] = []

    def execute(self, query: Any, params: Any = ()) -> Any:
        self.statements.append(str(query))
        return self

    description = None

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def admin() -> tuple[PostgresAdmin, list[FakeConnection]]:
    made: list[FakeConnection] = []

    def connect(dbname: str = "postgres", **_: Any) -> FakeConnection:
        made.append(FakeConnection(dbname))
        return made[-1]

    return PostgresAdmin(connect), made  # type: ignore[arg-type]


def test_outside_a_session_each_statement_has_its_own_connection() -> None:
    pg, made = admin()
    pg._run("SELECT 1")
    pg._run("SELECT 2")
    assert len(made) == 2 and all(c.closed for c in made)


def test_a_session_shares_one_connection_per_database_and_closes_them() -> None:
    pg, made = admin()
    with pg.session():
        pg._run("SELECT 1")
        pg._run("SELECT 2", dbname="orders")
        with pg.session():  # nested: the outer one's connections
            pg._run("SELECT 3")
        pg._run("SELECT 4", dbname="orders")
        assert [c.dbname for c in made] == ["postgres", "orders"]
        assert not any(c.closed for c in made)
        made[0].broken = True  # a server that went away meanwhile: a new connection
        pg._run("SELECT 5")
    assert [c.dbname for c in made] == ["postgres", "orders", "postgres"]
    assert made[0].statements == ["SELECT 1", "SELECT 3"]
    assert all(c.closed for c in made)
    pg._run("SELECT 6")  # after the session: its own connection again
    assert len(made) == 4 and made[3].closed


def test_another_thread_does_not_share_the_session() -> None:
    pg, made = admin()
    with pg.session():
        pg._run("SELECT 1")
        worker = threading.Thread(target=lambda: pg._run("SELECT 2"))
        worker.start()
        worker.join()
        assert made[1].closed and not made[0].closed
