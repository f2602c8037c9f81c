"""The Redis datastore manager against a real redis-server, checked with the real Redis client:
ACL users, root as the default user, AOF and the ACL file across restarts, adoption, and no
password in clear text anywhere on the host."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cove.common.errors import (
    BadRequest,
    OperationNotSupported,
    UserAlreadyExists,
    UserNotFound,
)
from cove.domain.capabilities import Capability
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.datastores import load_manager
from cove.guestagent.datastores.redis.manager import RedisManager
from cove.rpc import RequestContext
from servers import free_address

REDIS_BIN = Path("/usr/bin")
PORT = 6379

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (REDIS_BIN / "redis-server").is_file(), reason="needs /usr/bin/redis-server"
    ),
]

#: Distinct enough that finding them anywhere is no accident.
PASSWORDS = {"u1": "pw-one-Zq81x", "u2": "pw-two-Kd27y"}
NEW_PASSWORD = "pw-new-Tr55w"
ROOT_PASSWORD = "pw-root-Hb93v"
#: What the agent's RPC methods take first; the guest's admin endpoints do not read it.
CTX = RequestContext()


@pytest.fixture
def config() -> Iterator[GuestSettings]:
    base = Path(tempfile.mkdtemp(prefix="cove-redis-"))
    for sub in ("data", "conf", "log", "run"):
        (base / sub).mkdir()
    yield GuestSettings(
        instance_id="r1",
        datastore="redis",
        datastore_version="7.0",
        bin_dir=str(REDIS_BIN),
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
def managers(config: GuestSettings) -> Iterator[list[RedisManager]]:
    made: list[RedisManager] = []
    yield made
    for manager in reversed(made):
        manager.stop()


def client(config: GuestSettings, user: str | None, password: str | None) -> redis.Redis:
    return redis.Redis(
        host=config.address,
        port=config.port,
        username=user,
        password=password,
        socket_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def new_manager(config: GuestSettings, managers: list[RedisManager]) -> RedisManager:
    manager = load_manager(config)
    assert isinstance(manager, RedisManager)
    managers.append(manager)
    return manager


def assert_no_clear_passwords(config: GuestSettings, secrets: list[str]) -> None:
    for directory in (config.conf_dir, config.log_dir, config.data_dir):
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


def test_redis_manager(config: GuestSettings, managers: list[RedisManager]) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    assert manager.capabilities == {
        Capability.USERS,
        Capability.ROOT,
        Capability.CONFIGURATION,
        Capability.BACKUPS,
        Capability.REPLICATION,
    }
    assert manager.status() is GuestStatus.NEW

    # Databases are no Redis concept: refused before anything is made.
    with pytest.raises(OperationNotSupported):
        manager.prepare([DatabaseSpec("db1")], [])
    assert not manager.prepared

    manager.prepare([], [UserSpec(name, pw) for name, pw in PASSWORDS.items()])
    assert manager.prepared
    assert manager.status() is GuestStatus.HEALTHY
    for path in (config.conf_dir / "redis.conf", config.conf_dir / "users.acl"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert (config.conf_dir / "admin.secret").stat().st_mode & 0o777 == 0o600
    server_conf = (config.conf_dir / "redis.conf").read_text()
    assert f"bind {config.address}\n" in server_conf

    # Each user works over TCP on the instance's address, with data commands only.
    for name, pw in PASSWORDS.items():
        user = client(config, name, pw)
        assert user.ping()
        assert user.set(f"key-{name}", name) and user.get(f"key-{name}") == name
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.config_get("dir")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command("ACL", "LIST")
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command("SHUTDOWN", "NOSAVE")
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(config, "u1", "wrong").ping()
    # The default user is off until root is enabled: no anonymous access.
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(config, None, None).get("key-u1")
    info = client(config, "u1", PASSWORDS["u1"]).info("server")
    assert info["tcp_port"] == PORT

    # Users: list, show, mistakes answered with the right errors.
    assert [u.name for u in agent.list_users(CTX)] == ["u1", "u2"]
    assert agent.get_user(CTX, "u1", "%") == UserInfo("u1", "%", ())
    with pytest.raises(BadRequest):
        agent.get_user(CTX, "u1", "10.0.0.1")
    with pytest.raises(UserNotFound):
        agent.get_user(CTX, "cove_admin", "%")
    with pytest.raises(UserAlreadyExists):
        agent.create_users(CTX, [UserSpec("u1", "x")])
    for reserved in ("cove_admin", "default"):
        with pytest.raises(BadRequest):
            agent.create_users(CTX, [UserSpec(reserved, "x")])
        with pytest.raises(UserNotFound):
            agent.delete_user(CTX, reserved, "%")
    with pytest.raises(BadRequest):
        agent.create_users(CTX, [UserSpec("u9", "x", host="localhost")])
    with pytest.raises(BadRequest):
        agent.create_users(CTX, [UserSpec("bad name", "x")])
    with pytest.raises(OperationNotSupported):
        agent.create_users(CTX, [UserSpec("u9", "x", databases=("db1",))])
    # A mistake in one item leaves the server as it was.
    with pytest.raises(UserAlreadyExists):
        agent.create_users(CTX, [UserSpec("fresh", "x"), UserSpec("u2", "x")])
    assert [u.name for u in agent.list_users(CTX)] == ["u1", "u2"]

    # Databases and access are refused.
    with pytest.raises(OperationNotSupported):
        agent.list_databases(CTX)
    with pytest.raises(OperationNotSupported):
        agent.create_databases(CTX, [DatabaseSpec("db1")])
    with pytest.raises(OperationNotSupported):
        agent.delete_database(CTX, "db1")
    with pytest.raises(OperationNotSupported):
        agent.grant_access(CTX, "u1", "%", ["db1"])
    with pytest.raises(OperationNotSupported):
        agent.revoke_access(CTX, "u1", "%", "db1")
    with pytest.raises(OperationNotSupported):
        manager.admin.list_databases()  # the admin object refuses them too

    # Password change and rename.
    agent.update_user(CTX, "u2", "%", None, NEW_PASSWORD)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(config, "u2", PASSWORDS["u2"]).ping()
    assert client(config, "u2", NEW_PASSWORD).ping()
    agent.update_user(CTX, "u2", "%", "u3", None)
    assert [u.name for u in agent.list_users(CTX)] == ["u1", "u3"]
    renamed = client(config, "u3", NEW_PASSWORD)
    assert renamed.get("key-u2") == "u2"
    with pytest.raises(redis.exceptions.NoPermissionError):
        renamed.config_get("dir")  # the rules moved with the name
    with pytest.raises(UserAlreadyExists):
        agent.update_user(CTX, "u3", "%", "u1", None)

    # Root is the default user: a password alone logs in; still no CONFIG, ACL or MODULE.
    assert agent.is_root_enabled(CTX) is False
    assert agent.enable_root(CTX, ROOT_PASSWORD).name == "default"
    assert agent.is_root_enabled(CTX) is True
    root = client(config, None, ROOT_PASSWORD)
    assert root.get("key-u1") == "u1"
    assert root.client_list()  # the tenant's administrator watches its clients
    for command in (("CONFIG", "GET", "dir"), ("ACL", "USERS"), ("MODULE", "LIST")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            root.execute_command(*command)
    agent.disable_root(CTX)
    assert agent.is_root_enabled(CTX) is False
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(config, None, ROOT_PASSWORD).ping()
    agent.enable_root(CTX, ROOT_PASSWORD)

    # Delete a user: it can no longer log in.
    agent.delete_user(CTX, "u1", "%")
    with pytest.raises(UserNotFound):
        agent.delete_user(CTX, "u1", "%")
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(config, "u1", PASSWORDS["u1"]).ping()

    # A restart keeps the data (AOF) and the users and root (ACL file).
    client(config, "u3", NEW_PASSWORD).set("kept", "yes")
    manager.restart()
    manager.restart()  # idempotent
    assert manager.status() is GuestStatus.HEALTHY
    assert client(config, "u3", NEW_PASSWORD).get("kept") == "yes"
    assert client(config, None, ROOT_PASSWORD).get("key-u2") == "u2"
    assert [u.name for u in agent.list_users(CTX)] == ["u3"]
    assert agent.is_root_enabled(CTX) is True
    manager.stop()
    manager.stop()
    assert manager.status() is GuestStatus.SHUTDOWN
    manager.start()
    manager.start()
    assert client(config, "u3", NEW_PASSWORD).get("kept") == "yes"

    # The agent is the server's parent: a crash is reported at once.
    crashed = threading.Event()
    manager.on_change = lambda status: crashed.set() if status is GuestStatus.CRASHED else None
    pid = int((config.run_dir / "redis.pid").read_text())
    assert manager.server.pid == pid
    os.kill(pid, signal.SIGKILL)
    assert crashed.wait(2)
    assert manager.status() is GuestStatus.CRASHED
    manager.restart()
    assert manager.status() is GuestStatus.HEALTHY
    assert client(config, "u3", NEW_PASSWORD).get("kept") == "yes"

    # A new agent adopts the running server instead of starting another.
    pid = int((config.run_dir / "redis.pid").read_text())
    manager.on_change = lambda _status: None
    manager.server._stopping = True  # the old agent is gone; its watcher must stay quiet
    successor = new_manager(config, managers)
    assert successor.adopt()
    assert successor.server.pid == pid
    assert successor.status() is GuestStatus.HEALTHY
    assert [u.name for u in GuestAdminEndpoints(successor).list_users(CTX)] == ["u3"]
    successor.prepare([], [])  # already prepared: nothing is remade
    assert successor.server.pid == pid
    assert client(config, "u3", NEW_PASSWORD).get("kept") == "yes"

    assert_no_clear_passwords(config, [*PASSWORDS.values(), NEW_PASSWORD, ROOT_PASSWORD])

    successor.stop()
    assert successor.status() is GuestStatus.SHUTDOWN
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_stale_pid_file_is_not_adopted(config: GuestSettings, managers: list[RedisManager]) -> None:
    manager = new_manager(config, managers)
    manager.prepare([], [])
    real = manager.server.pid
    manager.stop()
    # After a reboot the pid file may name any process: here, this test's own.
    (config.run_dir / "redis.pid").write_text(f"{os.getpid()}\n")
    successor = new_manager(config, managers)
    assert not successor.adopt()
    successor.stop()  # signals nothing
    assert Path(f"/proc/{os.getpid()}").exists()
    successor.start()
    assert successor.server.pid not in (None, real)
    assert successor.status() is GuestStatus.HEALTHY


def test_failed_prepare_starts_over(config: GuestSettings, managers: list[RedisManager]) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.warm_up()
    assert manager.status() is GuestStatus.BUILDING
    with pytest.raises(BadRequest):
        manager.prepare([], [UserSpec("ok", "pw"), UserSpec("ok", "pw")])
    assert not manager.prepared
    manager.prepare([], [UserSpec("ok", "pw-ok")])
    assert client(config, "ok", "pw-ok").ping()
    assert [u.name for u in agent.list_users(CTX)] == ["ok"]


def test_a_new_password_ends_old_sessions_and_restore_is_refused(
    config: GuestSettings, managers: list[RedisManager]
) -> None:
    manager = new_manager(config, managers)
    agent = GuestAdminEndpoints(manager)
    manager.prepare([], [UserSpec("ann", "first-pw")])
    old = client(config, "ann", "first-pw")
    assert old.set("k", "v")
    dump = old.dump("k")
    with pytest.raises(redis.exceptions.NoPermissionError):
        old.restore("k2", 0, dump)
    agent.update_user(CTX, "ann", "%", None, "second-pw")
    with pytest.raises(redis.exceptions.ConnectionError):
        old.get("k")  # the session opened with the old password was ended
    assert client(config, "ann", "second-pw").get("k") == "v"
    assert "sanitize-dump-payload yes" in (config.conf_dir / "redis.conf").read_text()


def test_vital_signs_move_with_the_load(
    config: GuestSettings, managers: list[RedisManager]
) -> None:
    manager = new_manager(config, managers)
    assert manager.vitals() is None  # nothing prepared yet
    manager.prepare([], [UserSpec("app", "pw-app")])
    before = manager.vitals()
    assert before is not None and before.operations is not None
    assert before.cache_reads is not None and before.cache_hits is not None
    assert before.commits is None and before.replication_lag_seconds is None
    app = client(config, "app", "pw-app")
    app.set("k", "v")
    assert app.get("k") == "v" and app.get("missing") is None
    after = manager.vitals()
    assert after is not None and after.operations is not None
    assert after.operations >= before.operations + 3
    assert after.cache_reads == before.cache_reads + 2
    assert after.cache_hits == before.cache_hits + 1
    assert after.connections is not None and after.connections >= 1
    app.close()
    manager.stop()
    assert manager.vitals() is None  # the server is down: the heartbeat says nothing
