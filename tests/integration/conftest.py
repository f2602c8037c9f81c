"""Fixtures of the integration tests (the private servers live in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from guesthost import host
from sqlalchemy import create_engine, text

from cove.db.engine import Database
from cove.db.migrate import upgrade

__all__ = ["db", "db_url", "host"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A new, empty control database: a SQLite file, or a database of its own on the
    session's private PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cove.sqlite"
    server = request.getfixturevalue("pg_server")
    name = f"cove_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(server.url.rsplit("/", 1)[0] + f"/{name}")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """The control database of ``db_url``, migrated to the newest schema."""
    upgrade(db_url)
    database = Database(db_url)
    yield database
    database.dispose()
