"""The MariaDB datastore manager against a real mariadbd, checked with PyMySQL over TCP on the
instance's address: databases with character sets, users with hosts and grants, root, restarts,
adoption, live and restart-only settings, the parameter catalogue, and no clear-text password
anywhere on the host."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pymysql
import pytest

from cove.common.errors import (
    BadRequest,
    DatabaseAlreadyExists,
    DatabaseNotFound,
    GuestError,
    UserAlreadyExists,
    UserNotFound,
)
from cove.compute.discovery import find_mariadb
from cove.compute.parameters.mariadb import read_parameters
from cove.domain import guestlogs
from cove.domain.backups import SealKey, StoreSpec
from cove.domain.capabilities import Capability
from cove.domain.guest import GuestSettings
from cove.domain.guestlogs import LogIndex, LogStatus, LogTarget
from cove.domain.parameters import ParamType, denied
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.datastores import load_manager
from cove.guestagent.datastores.mariadb.conf import memory_settings, native_password_hash
from cove.guestagent.datastores.mariadb.manager import MariaManager
from cove.guestagent.datastores.mariadb.privileges import TENANT_ACCESS
from cove.rpc import RequestContext
from cove.storage import open_store
from cove.storage.sealed import unsealed
from servers import free_address

FOUND = find_mariadb()
PORT = 3306

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not FOUND, reason="needs mariadbd and mariadb-install-db"),
]

#: Distinct enough that finding them anywhere is no accident.
PASSWORDS = {"u1": "pw-one-Mq81x", "u2": "pw-two-Jd27y"}
NEW_PASSWORD = "pw-new-Wr55w"
ROOT_PASSWORD = "pw-root-Kb93v"
#: What the agent's RPC methods take first; the guest's admin endpoints do not read it.
CTX = RequestContext()


@pytest.fixture
def config() -> Iterator[GuestSettings]:
    base = Path(tempfile.mkdtemp(prefix="cove-mariadb-"))
    base.chmod(0o755)
    for sub in ("data", "conf", "log", "run", "tmp"):
        (base / sub).mkdir()
    yield GuestSettings(
        instance_id="m1",
        datastore="mariadb",
        datastore_version=FOUND[-1].name if FOUND else "10.11",
        bin_dir=FOUND[-1].bin_dir if FOUND else "/usr/sbin",
        address=free_address(PORT),
        port=PORT,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
        instance_dir=str(base),
    )
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def managers() -> Iterator[list[MariaManager]]:
    made: list[MariaManager] = []
    yield made
    for manager in reversed(made):
        manager.stop()


def new_manager(config: GuestSettings, managers: list[MariaManager]) -> MariaManager:
    manager = load_manager(config)
    assert isinstance(manager, MariaManager)
    managers.append(manager)
    return manager


def login(
    config: GuestSettings, user: str, password: str, database: str | None = None
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(
        host=config.address,
        port=config.port,
        user=user,
        password=password,
        database=database,
        autocommit=True,
        connect_timeout=5,
    )


def query(
    conn: pymysql.connections.Connection[pymysql.cursors.Cursor], sql: str
) -> list[tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def global_value(config: GuestSettings, name: str) -> str:
    with login(config, "root", ROOT_PASSWORD) as conn:
        rows = query(conn, f"SHOW GLOBAL VARIABLES LIKE '{name}'")
    return str(rows[0][1])


def assert_no_clear_passwords(config: GuestSettings, secrets: list[str]) -> None:
    for directory in (config.conf_dir, config.log_dir, config.data_dir, config.root / "tmp"):
        for path in directory.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in content, f"a password in clear text in {path}"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            for secret in secrets:
                assert secret.encode() not in cmdline, f"a password on the command line of {proc}"


def test_mariadb_manager(config: GuestSettings, managers: list[MariaManager]) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    assert manager.capabilities == {
        Capability.DATABASES,
        Capability.USERS,
        Capability.USER_HOSTS,
        Capability.ROOT,
        Capability.CONFIGURATION,
        Capability.BACKUPS,
        Capability.INCREMENTAL_BACKUPS,
        Capability.REPLICATION,
    }
    assert manager.status() is GuestStatus.NEW
    manager.prepare(
        [DatabaseSpec("shop"), DatabaseSpec("legacy_db", "latin1", "latin1_swedish_ci")],
        [
            UserSpec("u1", PASSWORDS["u1"], "%", ("shop",)),
            UserSpec("u2", PASSWORDS["u2"], "%", ("legacy_db",)),
        ],
    )
    assert manager.prepared
    assert manager.status() is GuestStatus.HEALTHY
    for name in ("my.cnf", "admin.secret"):
        assert (config.conf_dir / name).stat().st_mode & 0o777 == 0o600
    assert not (config.conf_dir / "bootstrap.sql").exists()
    my_cnf = (config.conf_dir / "my.cnf").read_text()
    assert f"bind_address = {config.address}\n" in my_cnf
    assert f"tmpdir = {config.root / 'tmp'}\n" in my_cnf

    # Databases keep their character set and collation; system databases stay hidden.
    assert [(d.name, d.character_set, d.collate) for d in agent.list_databases(CTX)] == [
        ("legacy_db", "latin1", "latin1_swedish_ci"),
        ("shop", "utf8mb4", "utf8mb4_general_ci"),
    ]
    with pytest.raises(BadRequest, match="character set 'klingon'"):
        agent.create_databases(CTX, [DatabaseSpec("x1", "klingon")])
    with pytest.raises(BadRequest, match="collation 'nope_ci'"):
        agent.create_databases(CTX, [DatabaseSpec("x1", None, "nope_ci")])
    with pytest.raises(BadRequest, match="not one of character set"):
        agent.create_databases(CTX, [DatabaseSpec("x1", "latin1", "utf8mb4_bin")])
    with pytest.raises(DatabaseAlreadyExists):
        agent.create_databases(CTX, [DatabaseSpec("fresh"), DatabaseSpec("shop")])
    for system in ("mysql", "information_schema", "performance_schema", "sys"):
        with pytest.raises(BadRequest):
            agent.create_databases(CTX, [DatabaseSpec(system)])
        with pytest.raises(DatabaseNotFound):
            agent.delete_database(CTX, system)
        with pytest.raises(BadRequest):
            agent.grant_access(CTX, "u1", "%", [system])
    assert [d.name for d in agent.list_databases(CTX)] == ["legacy_db", "shop"]
    agent.create_databases(CTX, [DatabaseSpec("extra", None, "utf8mb4_unicode_ci")])
    assert ("extra", "utf8mb4", "utf8mb4_unicode_ci") in [
        (d.name, d.character_set, d.collate) for d in agent.list_databases(CTX)
    ]

    # Each user logs in over TCP on the instance's address and reaches only its databases.
    with login(config, "u1", PASSWORDS["u1"], "shop") as u1:
        query(u1, "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))")
        query(u1, "INSERT INTO items VALUES (1, 'kept')")
        assert [r[0] for r in query(u1, "SHOW DATABASES")] == ["information_schema", "shop"]
        with pytest.raises(pymysql.err.OperationalError):
            query(u1, "SELECT * FROM legacy_db.t")
        with pytest.raises(pymysql.err.OperationalError):
            query(u1, "SELECT * FROM mysql.user")
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u1", PASSWORDS["u1"], "legacy_db")
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u1", "wrong")

    # Users: list (the agent's, root and the server's own accounts hidden), show, mistakes.
    assert agent.list_users(CTX) == [
        UserInfo("u1", "%", ("shop",)),
        UserInfo("u2", "%", ("legacy_db",)),
    ]
    with pytest.raises(UserNotFound):
        agent.get_user(CTX, "u1", "10.0.0.1")
    for reserved in ("cove_admin", "root", "mariadb.sys"):
        with pytest.raises(BadRequest):
            agent.create_users(CTX, [UserSpec(reserved, "x")])
        with pytest.raises(UserNotFound):
            agent.delete_user(CTX, reserved, "localhost")
        with pytest.raises(UserNotFound):
            agent.get_user(CTX, reserved, "localhost")
    with pytest.raises(UserAlreadyExists):
        agent.create_users(CTX, [UserSpec("fresh", "x"), UserSpec("u1", "x")])
    with pytest.raises(DatabaseNotFound):
        agent.create_users(CTX, [UserSpec("fresh", "x", "%", ("nope",))])
    assert [u.name for u in agent.list_users(CTX)] == ["u1", "u2"]

    # A user with a host is a separate account: here, only from the instance's own address.
    agent.create_users(CTX, [UserSpec("u1", "pw-host", config.address, ("extra",))])
    assert agent.get_user(CTX, "u1", config.address).databases == ("extra",)
    assert agent.get_user(CTX, "u1", "%").databases == ("shop",)
    agent.delete_user(CTX, "u1", config.address)

    # Grant and revoke: a wildcard in a name grants nothing beyond it.
    agent.create_databases(CTX, [DatabaseSpec("legacyXdb")])
    agent.grant_access(CTX, "u1", "%", ["legacy_db"])
    with login(config, "u1", PASSWORDS["u1"]) as u1:
        query(u1, "CREATE TABLE legacy_db.t (x INT)")
        with pytest.raises(pymysql.err.OperationalError):
            query(u1, "CREATE TABLE legacyXdb.t (x INT)")
    assert agent.get_user(CTX, "u1", "%").databases == ("legacy_db", "shop")
    agent.revoke_access(CTX, "u1", "%", "legacy_db")
    with pytest.raises(DatabaseNotFound):
        agent.revoke_access(CTX, "u1", "%", "legacy_db")
    with login(config, "u1", PASSWORDS["u1"]) as u1, pytest.raises(pymysql.err.OperationalError):
        query(u1, "SELECT * FROM legacy_db.t")

    # Password change and rename: the grants follow the account.
    agent.update_user(CTX, "u2", "%", None, NEW_PASSWORD)
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u2", PASSWORDS["u2"])
    agent.update_user(CTX, "u2", "%", "u3", None)
    with login(config, "u3", NEW_PASSWORD, "legacy_db") as u3:
        assert query(u3, "SELECT COUNT(*) FROM t") == [(0,)]
    assert [u.name for u in agent.list_users(CTX)] == ["u1", "u3"]
    with pytest.raises(UserAlreadyExists):
        agent.update_user(CTX, "u3", "%", "u1", None)
    # A new host, grants and all; and back, with a new name at the same time.
    agent.update_user(CTX, "u3", "%", None, None, new_host="10.1.2.3")
    assert agent.get_user(CTX, "u3", "10.1.2.3").databases == ("legacy_db",)
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u3", NEW_PASSWORD)  # this client is not 10.1.2.3
    agent.update_user(CTX, "u3", "10.1.2.3", "u4", None, new_host="%")
    agent.update_user(CTX, "u4", "%", "u3", None)
    with login(config, "u3", NEW_PASSWORD, "legacy_db") as u3:
        assert query(u3, "SELECT COUNT(*) FROM t") == [(0,)]

    # Deleting a database takes its grants along: a new one of that name is not open to u3.
    agent.delete_database(CTX, "legacy_db")
    assert agent.get_user(CTX, "u3", "%").databases == ()
    agent.create_databases(CTX, [DatabaseSpec("legacy_db")])
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u3", NEW_PASSWORD, "legacy_db")

    # Root: every database, but not accounts, the host's files or the server's life.
    assert agent.is_root_enabled(CTX) is False
    assert agent.enable_root(CTX, ROOT_PASSWORD).name == "root"
    assert agent.is_root_enabled(CTX) is True
    with login(config, "root", ROOT_PASSWORD) as root:
        assert query(root, "SELECT name FROM shop.items") == [("kept",)]
        query(root, "CREATE DATABASE made_by_root")
        query(root, "CREATE TABLE made_by_root.t (x INT)")
        query(root, "INSERT INTO made_by_root.t VALUES (7)")
        assert query(root, "SELECT LOAD_FILE('/etc/passwd')") == [(None,)]  # no FILE
        with pytest.raises(pymysql.err.OperationalError):
            query(root, "SHUTDOWN")
        with pytest.raises(pymysql.err.OperationalError):
            query(root, "CREATE USER other@'%' IDENTIFIED BY 'pw-other'")
    assert "made_by_root" in [d.name for d in agent.list_databases(CTX)]
    # Users and grants go through Cove, for root's databases too.
    agent.grant_access(CTX, "u1", "%", ["made_by_root"])
    with login(config, "u1", PASSWORDS["u1"], "made_by_root") as u1:
        assert query(u1, "SELECT x FROM t") == [(7,)]
    agent.revoke_access(CTX, "u1", "%", "made_by_root")
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u1", PASSWORDS["u1"], "made_by_root")
    assert "root" not in [u.name for u in agent.list_users(CTX)]
    agent.disable_root(CTX)
    assert agent.is_root_enabled(CTX) is False
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "root", ROOT_PASSWORD)
    agent.enable_root(CTX, ROOT_PASSWORD)
    assert agent.is_root_enabled(CTX) is True

    # Delete a user: it can no longer log in.
    agent.delete_user(CTX, "u3", "%")
    with pytest.raises(UserNotFound):
        agent.delete_user(CTX, "u3", "%")
    with pytest.raises(pymysql.err.OperationalError):
        login(config, "u3", NEW_PASSWORD)

    # A restart keeps the data, users and root.
    manager.restart()
    manager.restart()
    assert manager.status() is GuestStatus.HEALTHY
    with login(config, "u1", PASSWORDS["u1"], "shop") as u1:
        assert query(u1, "SELECT name FROM items") == [("kept",)]
    assert agent.is_root_enabled(CTX) is True
    manager.stop()
    manager.stop()
    assert manager.status() is GuestStatus.SHUTDOWN
    manager.start()
    manager.start()
    assert manager.status() is GuestStatus.HEALTHY

    # The agent is the server's parent: a crash is reported at once.
    crashed = threading.Event()
    manager.on_change = lambda status: crashed.set() if status is GuestStatus.CRASHED else None
    pid = int((config.run_dir / "mariadbd.pid").read_text())
    assert manager.server.pid == pid
    os.kill(pid, signal.SIGKILL)
    assert crashed.wait(5)
    assert manager.status() is GuestStatus.CRASHED
    manager.restart()
    assert manager.status() is GuestStatus.HEALTHY
    with login(config, "u1", PASSWORDS["u1"], "shop") as u1:
        assert query(u1, "SELECT name FROM items") == [("kept",)]

    # A new agent adopts the running server instead of starting another.
    pid = int((config.run_dir / "mariadbd.pid").read_text())
    manager.on_change = lambda _status: None
    manager.server._stopping = True  # the old agent is gone; its watcher must stay quiet
    successor = new_manager(config, managers)
    assert successor.adopt()
    assert successor.server.pid == pid
    assert successor.status() is GuestStatus.HEALTHY
    successor.prepare([], [])  # already prepared: nothing is remade
    assert successor.server.pid == pid
    assert [u.name for u in GuestAdminEndpoints(successor).list_users(CTX)] == ["u1"]

    assert_no_clear_passwords(config, [*PASSWORDS.values(), NEW_PASSWORD, ROOT_PASSWORD, "pw-host"])


def test_configuration_live_and_at_restart(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.prepare([], [])
    agent.enable_root(CTX, ROOT_PASSWORD)
    assert manager.effective_configuration()["max_connections"] == global_value(
        config, "max_connections"
    )
    assert global_value(config, "innodb_buffer_pool_size") == str(128 * 1024 * 1024)

    # A dynamic variable is set live.
    dynamic = replace(config, overrides={"long_query_time": 2.5})
    assert manager.apply_configuration(dynamic) is False
    assert float(global_value(config, "long_query_time")) == 2.5
    assert manager.status() is GuestStatus.HEALTHY
    assert not manager.restart_pending

    # A read-only one waits for the restart; the dynamic one stays in effect meanwhile.
    both = replace(
        config,
        overrides={
            "long_query_time": 3,
            "max_connections": 77,
            "innodb_log_buffer_size": 8 * 1024 * 1024,
        },
    )
    assert manager.apply_configuration(both) is True
    assert manager.restart_pending
    assert global_value(config, "max_connections") == "77"
    assert float(global_value(config, "long_query_time")) == 3.0
    assert global_value(config, "innodb_log_buffer_size") != str(8 * 1024 * 1024)
    effective = manager.effective_configuration()
    assert effective["innodb_log_buffer_size"] == str(8 * 1024 * 1024)
    assert effective["max_connections"] == "77"

    manager.restart()
    assert not manager.restart_pending
    assert global_value(config, "innodb_log_buffer_size") == str(8 * 1024 * 1024)
    assert global_value(config, "max_connections") == "77"
    assert float(global_value(config, "long_query_time")) == 3.0

    # Removing an override goes back to the flavor's value, live.
    back = replace(config, overrides={})
    assert manager.apply_configuration(back) is True  # the log buffer goes back at a restart
    assert global_value(config, "max_connections") == str(
        memory_settings(config.ram_mb)["max_connections"]
    )
    assert float(global_value(config, "long_query_time")) == 10.0


def test_the_redo_log_lives_in_the_journal_directory(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    journal = config.root / "journal"  # beside the volume, as the driver places it
    journal.mkdir(mode=0o700)
    config = replace(config, journal_dir=str(journal))
    manager = new_manager(config, managers)
    manager.prepare([DatabaseSpec("j")], [UserSpec("ju", "pw-ju", "%", ("j",))])
    GuestAdminEndpoints(manager).enable_root(CTX, ROOT_PASSWORD)
    assert (journal / "ib_logfile0").is_file()
    assert not (config.data_dir / "ib_logfile0").exists()
    assert global_value(config, "innodb_log_group_home_dir") == str(journal)
    with login(config, "ju", "pw-ju", "j") as conn:
        query(conn, "CREATE TABLE t (id INT PRIMARY KEY)")
        query(conn, "INSERT INTO t VALUES (1), (2), (3)")

    # An instance from before journals: its redo log, in the data directory, moves at the
    # next start (what was in the journal directory, not the data's, is replaced).
    manager.stop()
    os.replace(journal / "ib_logfile0", config.data_dir / "ib_logfile0")
    (journal / "ib_logfile0").write_bytes(b"stale")
    manager.start()
    assert (journal / "ib_logfile0").stat().st_size > 1024 * 1024
    assert not (config.data_dir / "ib_logfile0").exists()
    with login(config, "ju", "pw-ju", "j") as conn:
        assert query(conn, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    with login(config, "ju", "pw-ju", "j") as conn:
        query(conn, "INSERT INTO t VALUES (4)")

    # A rebuilt data directory (a restore, a replica's copy) takes no redo log of the old one.
    manager.stop()
    (journal / "ib_logfile101").write_bytes(b"cut short")
    manager.server.empty_data_dir()
    assert list(journal.iterdir()) == [] and list(config.data_dir.iterdir()) == []


def test_instances_are_copied_from_a_template_of_their_server_binary(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    templates = config.root / "templates"
    templates.mkdir()
    template = templates / f"mariadb-{config.datastore_version}"
    first = replace(config, template_dir=str(templates))
    new_manager(first, managers).prepare([DatabaseSpec("a")], [UserSpec("ua", "pw-a", "%", ("a",))])
    assert (template / "mysql" / "global_priv.MAD").is_file()
    # A small redo log to copy, which each copy's server grows at its first start.
    assert (template / "ib_logfile0").stat().st_size == 4 * 1024 * 1024
    assert not list(template.glob("*bin*")) and not (template / "ib_buffer_pool").exists()
    with login(first, "ua", "pw-a", "a") as conn:
        assert query(conn, "SELECT 1") == [(1,)]

    def another(name: str) -> GuestSettings:
        root = config.root / name
        for sub in ("data", "conf", "log", "run", "tmp"):
            (root / sub).mkdir(parents=True)
        return replace(first, instance_id=name, address=free_address(PORT), instance_dir=str(root))

    # The next instance is a copy (the file put into the template comes along): no account
    # but the agent's and the tenant's, the redo log at the server's own size.
    (template / "copied-from-template").write_text("")
    second = another("m2")
    journal = second.root / "journal"
    journal.mkdir()
    second = replace(second, journal_dir=str(journal))
    manager = new_manager(second, managers)
    manager.prepare([DatabaseSpec("b")], [UserSpec("ub", "pw-b", "%", ("b",))])
    assert (second.data_dir / "copied-from-template").exists()
    assert not (second.data_dir / "ib_logfile0").exists()
    assert (journal / "ib_logfile0").stat().st_size == 96 * 1024 * 1024
    assert manager.status() is GuestStatus.HEALTHY
    with login(second, "ub", "pw-b", "b") as conn:
        query(conn, "CREATE TABLE t (id INT PRIMARY KEY)")
        query(conn, "INSERT INTO t VALUES (1)")
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(unix_socket=str(second.run_dir / "mariadb.sock"), user="root").close()

    # A group that sets what a data directory is made with: installed on its own.
    paged = replace(another("m4"), overrides={"innodb_page_size": 8192})
    new_manager(paged, managers).prepare([], [])
    assert not (paged.data_dir / "copied-from-template").exists()

    # Another server binary (a package upgrade): the template is made again.
    stamp = templates / f"{template.name}.json"
    stamp.write_text(stamp.read_text().replace('"size": ', '"size": 1'))
    third = another("m3")
    new_manager(third, managers).prepare([], [])
    assert not (third.data_dir / "copied-from-template").exists()
    assert not (template / "copied-from-template").exists()


def test_failed_prepare_starts_over(config: GuestSettings, managers: list[MariaManager]) -> None:
    manager = new_manager(config, managers)
    manager.warm_up()
    assert manager.status() is GuestStatus.BUILDING
    with pytest.raises(BadRequest):
        manager.prepare([DatabaseSpec("a", "klingon")], [])
    assert not manager.prepared
    manager.prepare([DatabaseSpec("a")], [UserSpec("ok", "pw-ok", "%", ("a",))])
    with login(config, "ok", "pw-ok", "a") as conn:
        assert query(conn, "SELECT 1") == [(1,)]


def test_read_parameters() -> None:
    params = {p.name: p for p in read_parameters(FOUND[-1].bin_dir)}
    conns = params["max_connections"]
    assert conns.type is ParamType.INTEGER and not conns.restart_required
    assert conns.min is not None and conns.max is not None and conns.min < conns.max
    assert params["long_query_time"].type is ParamType.FLOAT
    assert params["autocommit"].type is ParamType.BOOLEAN
    assert params["innodb_log_buffer_size"].restart_required
    assert params["concurrent_insert"].allowed == ("NEVER", "AUTO", "ALWAYS")
    for name in ("datadir", "port", "bind_address", "socket", "tmpdir", "log_bin", "server_id"):
        assert name not in params
    assert not [name for name in params if denied("mariadb", name)]
    # Session-only and informational variables never enter: my.cnf cannot set them.
    for name in ("timestamp", "license", "version", "error_count", "hostname"):
        assert name not in params


def error_code(exc: pytest.ExceptionInfo[pymysql.MySQLError]) -> int:
    return int(exc.value.args[0])


def test_root_cannot_reach_past_its_privileges(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.prepare([DatabaseSpec("shop")], [UserSpec("clerk", "pw-clerk", "%", ("shop",))])
    agent.enable_root(CTX, ROOT_PASSWORD)

    # SHOW DATABASES on *.*; the data and schema privileges on every database but the
    # server's own; GRANT OPTION and CREATE USER nowhere.
    with login(config, "root", ROOT_PASSWORD) as root:
        grants = [str(r[0]) for r in query(root, "SHOW GRANTS")]
    assert grants[0].startswith("GRANT SHOW DATABASES ON *.* TO `root`@`%`"), grants
    assert "GRANT ALL PRIVILEGES ON `%`.* TO `root`@`%`" in grants
    assert "GRANT SHOW VIEW ON `mysql`.* TO `root`@`%`" in grants
    assert "GRANT SELECT, EXECUTE ON `sys`.* TO `root`@`%`" in grants
    assert "GRANT SELECT ON `performance\\_schema`.* TO `root`@`%`" in grants
    assert len(grants) == 5 and "WITH GRANT OPTION" not in " ".join(grants)
    access = manager.admin._run(
        "SELECT JSON_VALUE(Priv, '$.access') FROM mysql.global_priv WHERE User = 'root'"
    )
    assert int(str(access[0][0])) == TENANT_ACCESS

    init_file = config.conf_dir / "init.sql"
    assert init_file.stat().st_mode & 0o777 == 0o600
    admin_password = (config.conf_dir / "admin.secret").read_text().strip()
    assert admin_password not in init_file.read_text()
    assert native_password_hash(admin_password) in init_file.read_text()

    with login(config, "root", ROOT_PASSWORD, "shop") as root:
        # A database superuser: its own databases and everything in them, every tenant's.
        names = [r[0] for r in query(root, "SHOW DATABASES")]
        assert {"shop", "mysql", "sys", "information_schema"} <= set(names)
        query(root, "CREATE TABLE shop.goods (id INT PRIMARY KEY, name VARCHAR(20))")
        query(root, "INSERT INTO shop.goods VALUES (1, 'root'), (2, 'other')")
        query(root, "DELETE FROM shop.goods WHERE id = 2")
        query(root, "CREATE DATABASE own")
        query(root, "CREATE TABLE own.t (x INT)")
        query(root, "CREATE VIEW own.v AS SELECT x * 2 AS y FROM own.t")
        query(
            root,
            "CREATE TRIGGER own.bump BEFORE INSERT ON own.t FOR EACH ROW SET NEW.x = NEW.x + 1",
        )
        query(root, "CREATE PROCEDURE own.add_one() INSERT INTO own.t VALUES (1)")
        query(root, "CALL own.add_one()")
        assert query(root, "SELECT y FROM own.v") == [(4,)]
        query(root, "CREATE EVENT own.tick ON SCHEDULE EVERY 1 DAY DO DELETE FROM own.t")
        query(root, "CREATE TEMPORARY TABLE own.scratch (x INT)")
        query(root, "LOCK TABLES own.t WRITE")
        query(root, "UNLOCK TABLES")
        assert query(root, "SELECT sys.format_bytes(2048)") == [("2.00 KiB",)]
        assert query(root, "SELECT COUNT(*) FROM sys.version") == [(1,)]
        assert query(root, "SELECT LOAD_FILE('/etc/passwd')") == [(None,)]  # no FILE

        # No account administration: no account made, renamed, changed or granted.
        refused = {
            "CREATE USER made@'%' IDENTIFIED BY 'pw-made'": 1227,
            "RENAME USER cove_admin@localhost TO taken@'%'": 1227,
            "ALTER USER cove_admin@localhost IDENTIFIED BY 'pw-taken'": 1227,
            "DROP USER clerk@'%'": 1227,
            "GRANT SELECT ON shop.* TO clerk@'%'": 1044,
            "GRANT SELECT ON own.* TO PUBLIC": 1044,
            "GRANT SELECT ON shop.goods TO clerk@'%'": 1142,
            "REVOKE ALL PRIVILEGES ON shop.* FROM clerk@'%'": 1044,
            "CREATE ROLE boss": 1227,
            # No write to the grant tables, nor to the server's schemas at all.
            "UPDATE mysql.proc SET definer = 'cove_admin@localhost'": 1142,
            "UPDATE mysql.global_priv SET Priv = '{}' WHERE User = 'root'": 1142,
            "INSERT INTO mysql.db (Host, Db, User) VALUES ('%', 'x', 'root')": 1142,
            "SELECT * FROM mysql.global_priv": 1142,
            "ALTER TABLE mysql.db COMMENT 'gone'": 1142,
            "RENAME TABLE mysql.db TO mysql.db_gone": 1142,
            "DROP TABLE mysql.db": 1142,
            "CREATE TABLE mysql.extra (x INT)": 1142,
            "DROP DATABASE mysql": 1044,
            "DROP DATABASE sys": 1044,
            "UPDATE sys.sys_config SET value = '1'": 1142,
            "UPDATE performance_schema.setup_instruments SET ENABLED = 'NO'": 1142,
            # No definer but itself, no FLUSH PRIVILEGES, no server setting, no plugin.
            "CREATE DEFINER = 'cove_admin'@'localhost' PROCEDURE own.p() "
            "SQL SECURITY DEFINER SELECT 1": 1227,
            "FLUSH PRIVILEGES": 1227,
            "SET GLOBAL max_connections = 10": 1227,
            "SHUTDOWN": 1227,
            "INSTALL SONAME 'ha_federatedx'": 1142,  # INSERT on mysql.plugin
        }
        for sql, code in refused.items():
            with pytest.raises(pymysql.MySQLError) as exc:
                query(root, sql)
            assert error_code(exc) == code, sql
    assert [u.name for u in agent.list_users(CTX)] == ["clerk"]
    assert agent.get_user(CTX, "clerk", "%").databases == ("shop",)

    # The API manages the users of root's databases.
    agent.create_users(CTX, [UserSpec("reader", "pw-reader", "%", ("own",))])
    with login(config, "reader", "pw-reader", "own") as reader:
        assert query(reader, "SELECT x FROM t") == [(2,)]
    with login(config, "clerk", "pw-clerk", "shop") as clerk:
        assert query(clerk, "SELECT name FROM goods") == [("root",)]

    # Grant tables as an account with more than the tenant's privileges could leave them
    # (written here as the agent): every start takes it back. Global privileges beyond
    # root's, a wildcard database grant reaching mysql, table grants on mysql, root's mysql
    # row widened, a routine as the agent, and the agent's account locked.
    everything = (1 << 39) - 1
    manager.admin._run(
        "CREATE USER made@'%%' IDENTIFIED BY PASSWORD %s", [native_password_hash("pw-made")]
    )
    manager.admin._run("GRANT ALL PRIVILEGES ON `%`.* TO made@'%' WITH GRANT OPTION")
    manager.admin._run("GRANT UPDATE ON mysql.proc TO made@'%'")
    manager.admin._run(
        "UPDATE mysql.global_priv SET Priv = JSON_SET(Priv, '$.access', "
        f"{everything}) WHERE User IN ('root', 'made')"
    )
    manager.admin._run("UPDATE mysql.db SET Update_priv = 'Y', Drop_priv = 'Y' WHERE Db = 'mysql'")
    with login(config, "root", ROOT_PASSWORD, "own") as root:
        query(root, "CREATE PROCEDURE forged() SQL SECURITY DEFINER SELECT CURRENT_USER()")
    manager.admin._run(
        "UPDATE mysql.proc SET definer = 'cove_admin@localhost' WHERE name = 'forged'"
    )
    manager.admin._run("ALTER USER cove_admin@localhost ACCOUNT LOCK")
    with pytest.raises(GuestError):
        agent.list_databases(CTX)
    manager.restart()
    assert manager.status() is GuestStatus.HEALTHY
    assert [d.name for d in agent.list_databases(CTX)] == ["own", "shop"]
    assert manager.admin._run("SELECT name FROM mysql.proc WHERE name = 'forged'") == []
    with login(config, "root", ROOT_PASSWORD, "own") as root:
        grants = " ".join(str(r[0]) for r in query(root, "SHOW GRANTS"))
        assert "SUPER" not in grants and "CREATE USER" not in grants
        for sql in ("UPDATE mysql.proc SET definer = 'x'", "DROP TABLE mysql.db"):
            with pytest.raises(pymysql.MySQLError) as exc:
                query(root, sql)
            assert error_code(exc) == 1142
        with pytest.raises(pymysql.MySQLError) as exc:
            query(root, "SET GLOBAL max_connections = 10")
        assert error_code(exc) == 1227
    with login(config, "made", "pw-made", "shop") as made:
        grants = " ".join(str(r[0]) for r in query(made, "SHOW GRANTS"))
        assert "SUPER" not in grants and "FILE" not in grants, grants
        assert "ALL PRIVILEGES ON *.*" not in grants and "mysql`.`proc" not in grants, grants
        assert query(made, "SELECT name FROM goods") == [("root",)]  # its wildcard row stays
        for sql in ("UPDATE mysql.proc SET definer = 'x'", "SELECT * FROM mysql.db"):
            with pytest.raises(pymysql.MySQLError) as exc:
                query(made, sql)
            assert error_code(exc) == 1142
        with pytest.raises(pymysql.MySQLError) as exc:
            query(made, "CREATE USER more@'%' IDENTIFIED BY 'pw-more'")
        assert error_code(exc) == 1227

    # The agent's account renamed away and root dropped: the next start brings the agent back.
    manager.admin._run("DROP USER root@'%'")
    manager.admin._run("RENAME USER cove_admin@localhost TO taken@'%'")
    with pytest.raises(GuestError):
        agent.list_databases(CTX)
    manager.restart()
    assert [d.name for d in agent.list_databases(CTX)] == ["own", "shop"]
    taken = manager.admin._run(
        "SELECT JSON_VALUE(Priv, '$.access') FROM mysql.global_priv WHERE User = 'taken'"
    )
    assert int(str(taken[0][0])) & ~TENANT_ACCESS == 0
    assert agent.is_root_enabled(CTX) is False
    agent.enable_root(CTX, ROOT_PASSWORD)
    assert agent.is_root_enabled(CTX) is True
    with login(config, "root", ROOT_PASSWORD, "own") as root:
        assert query(root, "SELECT COUNT(*) FROM t") == [(1,)]


def test_trove_utf8_names(config: GuestSettings, managers: list[MariaManager]) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.prepare([DatabaseSpec("legacy", "utf8", "utf8_general_ci")], [])
    agent.create_databases(CTX, [DatabaseSpec("other", None, "utf8_unicode_ci")])
    agent.create_databases(CTX, [DatabaseSpec("third", "UTF8")])
    assert [(d.name, d.character_set, d.collate) for d in agent.list_databases(CTX)] == [
        ("legacy", "utf8mb3", "utf8mb3_general_ci"),
        ("other", "utf8mb3", "utf8mb3_unicode_ci"),
        ("third", "utf8mb3", "utf8mb3_general_ci"),
    ]
    with pytest.raises(BadRequest, match="not one of character set"):
        agent.create_databases(CTX, [DatabaseSpec("x", "utf8mb4", "utf8_general_ci")])


def test_revoking_ends_only_that_accounts_sessions(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.prepare([DatabaseSpec("a")], [UserSpec("s", "pw-any", "%", ("a",))])
    with login(config, "s", "pw-any") as probe:
        client = str(query(probe, "SELECT USER()")[0][0]).rpartition("@")[2]
    # The same name from the client's own address is another, more specific account.
    agent.create_users(CTX, [UserSpec("s", "pw-near", client, ("a",))])
    with login(config, "s", "pw-near", "a") as near:
        assert query(near, "SELECT CURRENT_USER()") == [(f"s@{client}",)]
        agent.revoke_access(CTX, "s", "%", "a")
        assert query(near, "SELECT 1") == [(1,)]  # not s@'%': still connected
        agent.revoke_access(CTX, "s", client, "a")
        with pytest.raises(pymysql.err.OperationalError):
            query(near, "SELECT 1")


def test_vital_signs_move_with_the_load(
    config: GuestSettings, managers: list[MariaManager]
) -> None:
    manager = new_manager(config, managers)
    assert manager.vitals() is None  # nothing prepared yet
    manager.prepare([DatabaseSpec("shop")], [UserSpec("app", "pw-App-1", databases=("shop",))])
    before = manager.vitals()
    assert before is not None and before.commits is not None and before.operations is not None
    assert before.cache_reads is not None and before.cache_hits is not None
    assert before.replication_lag_seconds is None  # no replica
    with login(config, "app", "pw-App-1", "shop") as conn:
        query(conn, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        query(conn, "BEGIN")
        query(conn, "INSERT INTO t VALUES (1, 'a')")
        query(conn, "COMMIT")
        query(conn, "BEGIN")
        query(conn, "INSERT INTO t VALUES (2, 'b')")
        query(conn, "ROLLBACK")
        during = manager.vitals()
    assert during is not None and during.connections is not None and during.connections >= 2
    assert during.commits == before.commits + 1
    assert during.rollbacks == (before.rollbacks or 0) + 1
    assert during.operations is not None and during.operations >= before.operations + 6
    assert during.cache_reads is not None and during.cache_reads > before.cache_reads


def test_guest_logs_are_turned_on_live_kept_at_restart_and_published(
    config: GuestSettings, managers: list[MariaManager], tmp_path: Path
) -> None:
    """The general and slow-query logs set live and kept in my.cnf, a tenant's statements in
    them and never the agent's own, each log published into a real store, sealed."""
    manager = new_manager(config, managers)
    manager.prepare([DatabaseSpec("shop")], [UserSpec("clerk", "pw-clerk", "%", ("shop",))])
    target = LogTarget(
        StoreSpec(kind="filesystem", location=str(tmp_path), prefix="database-logs"),
        SealKey("bk-0000logs", "22" * 32),
    )
    store = open_store(target.store)
    assert not manager.logs.show("general").enabled
    manager.logs.set_enabled("general", True)
    manager.logs.set_enabled("slow_query", True)
    with login(config, "clerk", "pw-clerk", "shop") as tenant:
        assert query(tenant, "SELECT @@global.general_log, @@global.slow_query_log") == [(1, 1)]
        query(tenant, "SELECT 'marker-general'")
        query(tenant, "SELECT SLEEP(1.2), 'marker-slow'")
    assert [d.name for d in manager.admin.list_databases()] == ["shop"]  # the agent's own
    manager.restart()
    with login(config, "clerk", "pw-clerk", "shop") as tenant:
        assert query(tenant, "SELECT @@global.general_log") == [(1,)]

    def published(log: str) -> bytes:
        state = manager.logs.publish(log, target)
        assert guestlogs.status(state) is LogStatus.PUBLISHED, state
        index = LogIndex.from_json(b"".join(store.get(guestlogs.index_key("m1", log))))
        sealed = [b"".join(store.get(p.key)) for p in index.parts]
        assert all(b"marker" not in s for s in sealed)
        return b"".join(
            b"".join(unsealed([s], target.seal, p.checksum))
            for s, p in zip(sealed, index.parts, strict=True)
        )

    general = published("general")
    assert b"marker-general" in general and b"SCHEMATA" not in general
    slow = published("slow_query")
    assert b"marker-slow" in slow and b"marker-general" not in slow
    assert b"ready for connections" in published("error")
    manager.logs.set_enabled("general", False)
    with login(config, "clerk", "pw-clerk", "shop") as tenant:
        assert query(tenant, "SELECT @@global.general_log") == [(0,)]
