"""A PostgreSQL server's vital signs (``guestagent/datastores/postgresql/vitals.py``) read from
a real server while a client works: its connection counted, its commit, rollback and reads.
PostgreSQL publishes a backend's counts when it goes idle (at most once a second), so the test
waits for them. The guest's own wrapper, the heartbeat and the API's series over a running
Cove are in tests/e2e/test_metrics_flow.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from cove.compute.discovery import find_postgresql
from cove.domain.guest import DatabaseVitals
from cove.guestagent.datastores.postgresql import vitals
from servers import PgServer

pytestmark = pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")


@pytest.fixture
def connect(pg_server: PgServer) -> Callable[[], psycopg.Connection[Any]]:
    def make() -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=pg_server.port,
            user=pg_server.user,
            password=pg_server.password,
            dbname="postgres",
            autocommit=True,
        )

    return make


@pytest.fixture
def agent(connect: Callable[[], psycopg.Connection[Any]]) -> Iterator[psycopg.Connection[Any]]:
    with connect() as conn:
        yield conn


def until(
    read: Callable[[], DatabaseVitals], done: Callable[[DatabaseVitals], bool]
) -> DatabaseVitals:
    deadline = time.monotonic() + 30
    while True:
        seen = read()
        if done(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def test_vital_signs_move_with_the_load(
    agent: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    before = vitals.read(agent)
    assert before.connections is not None and before.connections >= 1
    assert before.commits is not None and before.rollbacks is not None
    assert before.cache_reads is not None and before.cache_hits is not None
    assert before.replication_lag_seconds is None  # a primary
    assert before.operations is None  # PostgreSQL counts transactions, not statements
    with connect() as client:
        client.execute("CREATE TABLE IF NOT EXISTS vitals_t (id int PRIMARY KEY)")
        with client.transaction():
            client.execute("INSERT INTO vitals_t VALUES (1) ON CONFLICT DO NOTHING")
        with pytest.raises(psycopg.errors.DivisionByZero), client.transaction():
            client.execute("SELECT 1 / 0")
        client.execute("SELECT count(*) FROM vitals_t").fetchone()
        during = vitals.read(agent)
        assert during.connections is not None and during.connections >= before.connections + 1

        def counted(seen: DatabaseVitals) -> bool:
            assert seen.commits is not None and seen.rollbacks is not None
            return seen.commits >= before.commits + 3 and seen.rollbacks >= before.rollbacks + 1

        after = until(lambda: vitals.read(agent), counted)
    assert counted(after), (before, after)
    assert after.cache_reads is not None and before.cache_reads is not None
    assert after.cache_reads > before.cache_reads
