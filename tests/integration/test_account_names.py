"""The names Cove lets tenants give users and databases, against real PostgreSQL and MariaDB
servers: the reserved words Cove keeps come from the server's own keyword table, the names the
server refuses or reads specially are refused by Cove's rules and again by the guest's admin,
and every name the rules let through can be created, listed, shown and deleted."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cove.common.errors import BadRequest, DatabaseNotFound, UserNotFound
from cove.compute.discovery import find_mariadb, find_postgresql
from cove.domain import names
from cove.domain.datastores import DATASTORES
from cove.domain.datastores.postgresql import KEYWORDS
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores import load_manager
from cove.guestagent.datastores.mariadb.admin import MariaAdmin
from cove.guestagent.datastores.mariadb.manager import MariaManager
from cove.guestagent.datastores.postgresql.admin import PostgresAdmin
from servers import PgServer, free_address

pytestmark = pytest.mark.integration

#: Names next to reserved ones, in every form the rules allow: each must work end to end.
EDGE_NAMES = (
    "public1",
    "nonesuch",
    "current_users",
    "Sessions",
    "postgres1",
    "mysqlx",
    "rooted",
    "defaults",
    "pg",
    "pgx_1",
    "_x",
    "a.b",
    "a$b",
    "a-b",
    "MixedCase",
    "u" * 63,
)


def spread(words: list[str], count: int) -> list[str]:
    """``count`` words spread evenly over ``words`` in sorted order: a sample of a keyword
    table that is the same at every run (creating and dropping hundreds of accounts takes
    minutes, each server rebuilding its account caches at every change)."""
    ordered = sorted(words)
    step = max(1, len(ordered) // count)
    return ordered[::step][:count]


def allowed(name: str, datastore: str) -> bool:
    try:
        names.user_name(name, datastore)
    except ValueError:
        return False
    return True


def lifecycle(admin: Any, wanted: list[str], hidden: set[str]) -> None:
    """Create every user of ``wanted`` at once, find each in the list, show each, delete each:
    the list holds exactly them besides ``hidden`` (the accounts that were there before)."""
    admin.create_users([UserSpec(name, "pw-Names-77") for name in wanted])
    listed = [u.name for u in admin.list_users() if u.name not in hidden]
    assert sorted(listed) == sorted(wanted)
    for name in wanted:
        assert admin.get_user(name, "%") == UserInfo(name, "%", ())
    for name in wanted:
        admin.delete_user(name, "%")
        with pytest.raises(UserNotFound):
            admin.get_user(name, "%")
    assert [u.name for u in admin.list_users() if u.name not in hidden] == []


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[tuple[PostgresAdmin, psycopg.Connection[Any]]]:
    """The guest's admin on the private server, as its superuser (the guest's os_admin), and a
    connection of the test's own."""

    def connect(dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=pg_server.port,
            user=pg_server.user,
            password=pg_server.password,
            dbname=dbname,
            autocommit=autocommit,
        )

    with connect() as conn:
        yield PostgresAdmin(connect), conn


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_reserved_words_are_the_servers(pg: tuple[PostgresAdmin, Any]) -> None:
    _admin, conn = pg
    rows = conn.execute("SELECT word, catcode FROM pg_get_keywords()").fetchall()
    category = {str(word): str(code) for word, code in rows}
    reserved = {word for word, code in category.items() if code in ("R", "T")}
    assert len(reserved) > 90
    # Every word the server reserves is one Cove refuses as a user name...
    assert reserved <= KEYWORDS
    assert reserved <= DATASTORES["postgresql"].names.special_users
    # ...and Cove's list holds no word this server takes unquoted (a word missing here is one
    # another version reserves: system_user, from 16 on).
    assert all(category[word] in ("R", "T") for word in KEYWORDS if word in category)


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_names_the_server_refuses_are_refused_first(
    pg: tuple[PostgresAdmin, Any],
) -> None:
    admin, conn = pg
    for name in ("public", "none", "pg_tenant"):
        # The server itself refuses the role...
        with pytest.raises(psycopg.errors.ReservedName):
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
        # ...Cove's rules refuse it before any request reaches a guest, and the guest too, as
        # the user's mistake (400), not the server's (500).
        assert not allowed(name, "postgresql")
        with pytest.raises(BadRequest, match="reserved on PostgreSQL"):
            admin.create_users([UserSpec(name, "pw")])
    admin.create_users([UserSpec("renamed_later", "pw")])
    try:
        for name in ("none", "current_user", "pg_x"):
            with pytest.raises(BadRequest, match="reserved"):
                admin.update_user("renamed_later", "%", name, None)
        # The server's own roles are hidden, not reachable by name.
        with pytest.raises(UserNotFound):
            admin.get_user("pg_monitor", "%")
        with pytest.raises(UserNotFound):
            admin.delete_user("pg_monitor", "%")
    finally:
        admin.delete_user("renamed_later", "%")


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_every_name_the_rules_allow_works(pg: tuple[PostgresAdmin, Any]) -> None:
    """Keywords of every category of the server, in their case and in upper case, and the
    names next to the reserved ones: those the rules let through live a whole life, and the
    guest refuses the others as the API does."""
    admin, conn = pg
    rows = conn.execute("SELECT word, catcode FROM pg_get_keywords()").fetchall()
    by_category: dict[str, list[str]] = {}
    for word, code in rows:
        by_category.setdefault(str(code), []).append(str(word))
    sample = [w for words in by_category.values() for w in spread(words, 8)]
    candidates = {*sample, *(w.upper() for w in sample), *EDGE_NAMES, "role", "ROLE", "admin"}
    candidates |= {w for w, code in rows if code in ("R", "T")}  # refused: no account is made
    wanted = sorted(n for n in candidates if allowed(n, "postgresql"))
    refused = sorted(candidates - set(wanted))
    assert "select" in refused and "public" not in wanted and "role" in wanted
    assert len(refused) > 90 and len(wanted) > 40
    hidden = {u.name for u in admin.list_users()}
    lifecycle(admin, wanted, hidden)
    for name in refused:
        with pytest.raises(BadRequest):
            admin.create_users([UserSpec(name, "pw")])
    assert {u.name for u in admin.list_users()} == hidden


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_postgresql_database_names(pg: tuple[PostgresAdmin, Any]) -> None:
    admin, _conn = pg
    for name in ("postgres", "template0", "template1", "pg_data"):
        with pytest.raises(BadRequest, match="reserved on PostgreSQL"):
            admin.create_databases([DatabaseSpec(name)])
        with pytest.raises(DatabaseNotFound):
            admin.delete_database(name)
    before = {d.name for d in admin.list_databases()}
    fresh = ["user", "public", "none", "mysql", "Select", "a-b$c", "d" * 63]
    assert all(names.database_name(n, "postgresql") == n for n in fresh)
    admin.create_databases([DatabaseSpec(n) for n in fresh])
    try:
        assert {d.name for d in admin.list_databases()} - before == set(fresh)
        admin.create_users([UserSpec("reader1", "pw", "%", tuple(fresh))])
        assert set(admin.get_user("reader1", "%").databases) == set(fresh)
        admin.delete_user("reader1", "%")
    finally:
        for name in fresh:
            admin.delete_database(name)
    assert {d.name for d in admin.list_databases()} == before


# -- MariaDB -------------------------------------------------------------------------------------

MARIADB = find_mariadb()


@pytest.fixture
def maria() -> Iterator[tuple[MariaAdmin, Any]]:
    """A prepared MariaDB instance's admin, and a query function as the agent's account."""
    base = Path(tempfile.mkdtemp(prefix="cove-names-"))
    base.chmod(0o755)
    for sub in ("data", "conf", "log", "run", "tmp"):
        (base / sub).mkdir()
    config = GuestSettings(
        instance_id="n1",
        datastore="mariadb",
        datastore_version=MARIADB[-1].name,
        bin_dir=MARIADB[-1].bin_dir,
        address=free_address(3306),
        port=3306,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
        instance_dir=str(base),
    )
    manager = load_manager(config)
    assert isinstance(manager, MariaManager)
    try:
        manager.prepare([], [])
        admin = manager.admin
        assert isinstance(admin, MariaAdmin)

        def query(statement: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
            with admin._connect() as conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall())

        yield admin, query
    finally:
        manager.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not MARIADB, reason="needs mariadbd and mariadb-install-db")
def test_mariadb_names(maria: tuple[MariaAdmin, Any]) -> None:
    admin, query = maria
    keywords = {str(r[0]) for r in query("SELECT WORD FROM information_schema.KEYWORDS")}
    # The words the grammar reads as an account are the server's keywords...
    for word in ("CURRENT_USER", "CURRENT_ROLE", "NONE"):
        assert word in keywords
        assert not allowed(word, "mariadb") and not allowed(word.lower(), "mariadb")
    # ...and PUBLIC, from 10.11 on, a role the server keeps (made by the first grant to it).
    version = tuple(int(p) for p in str(query("SELECT VERSION()")[0][0]).split("-")[0].split("."))
    if version >= (10, 11):
        query("GRANT SELECT ON sys.* TO PUBLIC")
        assert query("SELECT Host, is_role FROM mysql.user WHERE User = 'PUBLIC'") == [("", "Y")]
    hidden = {u.name for u in admin.list_users()}
    assert hidden == set()  # the server's and the agent's own accounts are never listed
    for name in ("PUBLIC", "public", "current_user", "none", "root", "cove_admin", "mariadb.sys"):
        assert not allowed(name, "mariadb")
        with pytest.raises(BadRequest, match="reserved on MariaDB"):
            admin.create_users([UserSpec(name, "pw")])
    admin.create_users([UserSpec("renamed_later", "pw")])
    with pytest.raises(BadRequest, match="reserved on MariaDB"):
        admin.update_user("renamed_later", "%", "PUBLIC", None)
    admin.delete_user("renamed_later", "%")
    with pytest.raises(UserNotFound):
        admin.get_user("PUBLIC", "")  # the server's role is no account
    # An account made under PUBLIC before the name was refused is listed, shown, renamed and
    # deleted like any other, beside the server's role of that name.
    query("CREATE USER 'PUBLIC'@'%' IDENTIFIED BY 'pw-old'")
    assert [u.name for u in admin.list_users()] == ["PUBLIC"]
    assert admin.get_user("PUBLIC", "%") == UserInfo("PUBLIC", "%", ())
    admin.update_user("PUBLIC", "%", "was_public", None)
    admin.update_user("was_public", "%", None, "pw-new")
    admin.delete_user("was_public", "%")
    query("CREATE USER 'PUBLIC'@'%' IDENTIFIED BY 'pw-old'")
    admin.delete_user("PUBLIC", "%")
    assert admin.list_users() == []

    # Keywords (account names are quoted strings: keywords do not bind them), PostgreSQL's
    # reserved words, and the names next to the reserved ones: those the rules let through
    # live a whole life.
    sample = [*spread(list(keywords), 10), "SELECT", "USER", "ROLE", "DEFAULT", "ALL"]
    candidates = {*sample, *(k.lower() for k in sample), *EDGE_NAMES}
    candidates |= set(spread(list(KEYWORDS), 6))
    wanted = sorted(n for n in candidates if allowed(n, "mariadb"))
    assert "SELECT" in wanted and "user" in wanted and "current_user" not in wanted
    assert len(wanted) > 40
    lifecycle(admin, wanted, hidden)

    for name in ("mysql", "information_schema", "performance_schema", "sys"):
        with pytest.raises(BadRequest, match="reserved on MariaDB"):
            admin.create_databases([DatabaseSpec(name)])
    fresh = ["user", "public", "postgres", "template1", "pg_data", "a-b$c", "d" * 63]
    admin.create_databases([DatabaseSpec(n) for n in fresh])
    assert {d.name for d in admin.list_databases()} == set(fresh)
    admin.create_users([UserSpec("reader1", "pw", "%", tuple(fresh))])
    assert set(admin.get_user("reader1", "%").databases) == set(fresh)
    admin.delete_user("reader1", "%")
    for name in fresh:
        admin.delete_database(name)
    assert admin.list_databases() == []
