"""Redis replication (REPLICAOF) through real guest agents on a private bus: a primary answers
its replication account, instances prepared from it are read-only replicas that receive what
it writes, the password stays out of command lines, environments, logs and whatever a
tenant's root can ask the servers, a detached replica is a read-write server for good, and a
switchover (fence, promote, follow) loses nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from guesthost import Host
from redis.backoff import NoBackoff
from redis.retry import Retry
from replication_helpers import (
    ProcWatch,
    eventually,
    files_holding,
    log_tails,
    logs,
    prepare,
)

from cove.common.errors import CoveError, GuestError
from cove.compute.base import ComputeState
from cove.domain.guest import GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import UserSpec
from cove.domain.status import GuestStatus
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient, GuestReplicationClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/bin/redis-server").is_file(), reason="needs redis-server"),
]

CTX = RequestContext()
ROOT_PASSWORD = "root-Secret-Rq71"


def root(spec: GuestSettings) -> redis.Redis:
    """The tenant's root (Redis's ``default`` user, a password only)."""
    return redis.Redis(
        host=spec.address,
        port=spec.port,
        password=ROOT_PASSWORD,
        socket_timeout=10,
        socket_connect_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def read(spec: GuestSettings, key: str) -> str | None:
    """``key`` as the tenant's root reads it; None also while the server does not answer."""
    try:
        with root(spec) as client:
            value = client.get(key)
    except redis.ConnectionError:
        return None
    return None if value is None else str(value)


def writes_refused(spec: GuestSettings) -> bool:
    """Whether the server takes no write: it does not answer, or is a read-only replica."""
    try:
        with root(spec) as client:
            client.set("must-not-land", "1")
    except (redis.ConnectionError, redis.ReadOnlyError):
        return True
    return False


def start_with_root(host: Host, spec: GuestSettings, **prepare_args: Any) -> None:
    """Create and prepare ``spec`` (as a replica when ``replica_of`` is given), with root on
    (Redis keeps users per server: a replica has its own)."""
    host.create(spec)
    guest = GuestClient(host.bus, spec.instance_id)
    prepare(guest, [], [], **prepare_args)
    guest.enable_root(CTX, ROOT_PASSWORD)


def make_group(
    host: Host, replicas: int
) -> tuple[GuestSettings, list[GuestSettings], ReplicaSource]:
    """A prepared primary holding ``orders`` (100 fields), ``replicas`` replicas of it, and the
    source they stream from."""
    primary = host.spec_of("redis")
    start_with_root(host, primary)
    with root(primary) as client:
        client.hset("orders", mapping={str(n): "first" for n in range(100)})
    source = GuestReplicationClient(host.bus, primary.instance_id).replication_source(CTX)
    made = []
    for _ in range(replicas):
        spec = host.spec_of("redis")
        start_with_root(host, spec, replica_of=source)
        made.append(spec)
    return primary, made, source


class Monitor:
    """MONITOR as the tenant's root, recording what the server shows until closed."""

    def __init__(self, spec: GuestSettings) -> None:
        self.client = root(spec)
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.monitor.listen():
                self.seen.append(str(event))
        except (redis.RedisError, OSError, ValueError):
            return  # closed

    def close(self) -> str:
        self.monitor.connection.disconnect()
        self._thread.join(10)
        self.client.close()
        return "\n".join(self.seen)


def tenant_view(spec: GuestSettings) -> str:
    """Everything the tenant's root may ask a server about itself and its replication; CONFIG
    must be refused to it."""
    with root(spec) as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("*")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.acl_list()
        parts = [
            str(client.info("everything")),
            str(client.execute_command("ROLE")),  # type: ignore[no-untyped-call]
            str(client.client_list()),
            str(client.slowlog_get(128)),
        ]
    return "\n".join(parts)


def restart_agent(host: Host, spec: GuestSettings, sig: signal.Signals) -> None:
    """End the instance's agent with ``sig`` (SIGTERM also stops its server, SIGKILL leaves it
    running) and have the driver start a new one."""
    instance_id = spec.instance_id
    agent = host.driver.agent_pid(instance_id)
    assert agent is not None and agent > 0
    os.kill(agent, sig)
    eventually(
        lambda: host.driver.state(instance_id) is ComputeState.SHUTDOWN, "the agent gone", 60
    )
    assert host.driver.ensure_running(instance_id)
    eventually(lambda: host.driver.agent_pid(instance_id) not in (None, agent), "a new agent", 60)


def test_replicas_receive_the_primarys_writes_and_a_detached_one_stays_writable(
    host: Host,
) -> None:
    primary = host.spec_of("redis")
    start_with_root(host, primary)
    p_guest = GuestClient(host.bus, primary.instance_id)
    p_repl = GuestReplicationClient(host.bus, primary.instance_id)
    with root(primary) as client:
        client.set("greeting", "hello")
        client.hset("orders", mapping={str(n): "first" for n in range(1000)})

    source = p_repl.replication_source(CTX)
    assert (source.instance_id, source.host, source.port, source.user) == (
        primary.instance_id,
        primary.address,
        primary.port,
        "cove_replication",
    )
    assert len(source.password) >= 32
    assert source.password not in repr(source)
    assert p_repl.replication_source(CTX) == source  # the same password every time
    primary_dir = host.driver.instance_dir(primary.instance_id)
    assert (primary_dir / "conf" / "replication-password").stat().st_mode & 0o777 == 0o600
    # The account replicates and does nothing else, and is no tenant's.
    with redis.Redis(
        host=primary.address, port=primary.port, username=source.user, password=source.password
    ) as account:
        assert account.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            account.get("greeting")
        with pytest.raises(redis.exceptions.NoPermissionError):
            account.config_get("masterauth")
    assert p_guest.list_users(CTX) == []
    with pytest.raises(CoveError, match="reserved"):
        p_guest.create_users(CTX, [UserSpec("cove_replication", "pw-other-19")])

    replicas = [host.spec_of("redis"), host.spec_of("redis")]
    wrong = dataclasses.replace(source, password="wrong-" + "x" * 30)
    with ProcWatch(source.password, wrong.password) as watch:
        host.create(replicas[0])
        r_guest = GuestClient(host.bus, replicas[0].instance_id)
        # A source that refuses the account fails the prepare; the next one starts over.
        with pytest.raises(GuestError, match=r"cannot copy the data .*WRONGPASS"):
            prepare(r_guest, [], [], replica_of=wrong)
        prepare(r_guest, [], [], replica_of=source)
        r_guest.enable_root(CTX, ROOT_PASSWORD)
        start_with_root(host, replicas[1], replica_of=source)
        watch.scan()  # at least one whole scan while the replicas stream
    assert watch.rounds >= 2
    assert watch.found == []
    prepare(r_guest, [], [], replica_of=source)  # prepared: only starts its server
    r_repl = GuestReplicationClient(host.bus, replicas[0].instance_id)

    # What the primary held, and what it writes from now on, on both; no write on a replica.
    for spec in replicas:
        assert read(spec, "greeting") == "hello"
        with root(spec) as client:
            assert client.hlen("orders") == 1000
    with root(primary) as client:
        client.set("later", "after the copy")
    for spec in replicas:
        eventually(lambda spec=spec: read(spec, "later") == "after the copy", "the write")
        with root(spec) as client, pytest.raises(redis.ReadOnlyError):
            client.set("on-the-replica", "1")
    with pytest.raises(GuestError, match="is a read-only replica"):
        r_repl.replication_source(CTX)

    # Positions: a replica streams, and reaches what the primary wrote.
    eventually(lambda: r_repl.replication_state(CTX).streaming, "the replica streaming")
    with root(primary) as client:
        client.hset("orders", mapping={str(n): "more" for n in range(1000, 1100)})
    written = p_repl.replication_state(CTX)
    assert written.role == "primary" and written.position and not written.streaming
    eventually(
        lambda: (r_repl.replication_state(CTX).position or 0) >= (written.position or 0),
        "the replica's position reaching the primary's",
    )
    state = r_repl.replication_state(CTX)
    assert state.role == "replica" and state.streaming
    assert r_guest.get_status(CTX) is GuestStatus.HEALTHY

    # New settings and a restart keep the replica a replica.
    r_guest.apply_configuration(CTX, 256, 1, 1, {"slowlog-log-slower-than": 0})
    r_guest.restart(CTX)
    with root(primary) as client:
        client.set("after-restart", "yes")
    eventually(lambda: read(replicas[0], "after-restart") == "yes", "the write after a restart")
    assert r_repl.replication_state(CTX).role == "replica"

    # The password: only in the private files that need it; never in a log, nor in what
    # the tenant's root can ask (every command is in the slow log now).
    dirs = [host.driver.instance_dir(s.instance_id) for s in (primary, *replicas)]
    for secret in (source.password, wrong.password):
        for instance_dir in dirs:
            for log in logs(instance_dir):
                assert secret.encode() not in log.read_bytes(), log
        for spec in (primary, *replicas):
            assert secret not in tenant_view(spec)
    holding: dict[Path, int] = {}
    for instance_dir in dirs:
        holding |= files_holding(instance_dir, source.password.encode())
    assert holding == {
        dirs[0] / "conf" / "replication-password": 0o600,
        **{
            d / "conf" / name: 0o600 for d in dirs[1:] for name in ("redis.conf", "replica-of.json")
        },
    }

    # Detached: a standalone read-write server, also after a restart of its server, and of
    # its agent with it.
    r_repl.detach_replica(CTX)
    assert r_repl.replication_state(CTX).role == "primary"
    with root(replicas[0]) as client:
        client.set("own", "detached")
    started = time.monotonic()
    r_repl.detach_replica(CTX)  # not a replica any more: answers at once
    assert time.monotonic() - started < 5
    assert files_holding(dirs[1], source.password.encode()) == {}
    r_guest.restart(CTX)
    restart_agent(host, replicas[0], signal.SIGTERM)
    assert r_guest.get_status(CTX) is GuestStatus.HEALTHY
    assert r_repl.replication_state(CTX).role == "primary"
    with root(replicas[0]) as client:
        client.set("own-2", "after the restarts")
        assert client.get("own") == "detached"
    # The primary goes on with its other replica only.
    with root(primary) as client:
        client.set("only-on-the-group", "1")
    eventually(lambda: read(replicas[1], "only-on-the-group") == "1", "the other replica")
    assert read(replicas[0], "only-on-the-group") is None
    assert read(primary, "own") is None


def test_a_switchover_loses_nothing_and_the_old_primary_follows(host: Host) -> None:
    old, (new, other), old_source = make_group(host, 2)
    old_repl = GuestReplicationClient(host.bus, old.instance_id)
    new_repl = GuestReplicationClient(host.bus, new.instance_id)
    other_repl = GuestReplicationClient(host.bus, other.instance_id)
    with root(old) as client:
        client.hset("orders", mapping={str(n): "late" for n in range(100, 600)})

    position = old_repl.fence_primary(CTX)
    assert position is not None
    assert old_repl.fence_primary(CTX) == position  # idempotent, the server stopped
    assert writes_refused(old)
    # Neither its agent nor a new one starts it again.
    old_guest = GuestClient(host.bus, old.instance_id)
    with pytest.raises(GuestError, match="fenced"):
        old_guest.restart(CTX)
    restart_agent(host, old, signal.SIGKILL)
    old_guest.get_status(CTX)  # the new agent is up, past its start
    assert writes_refused(old)
    assert old_repl.fence_primary(CTX) == position

    eventually(
        lambda: (new_repl.replication_state(CTX).position or 0) >= position,
        "the replica reaching the old primary's last offset",
    )
    source = new_repl.promote_replica(CTX)
    assert (source.instance_id, source.host, source.port) == (new.instance_id, new.address, 6379)
    assert source.password != old_source.password  # the new primary's own
    assert new_repl.promote_replica(CTX) == source  # idempotent
    with root(new) as client:
        assert client.hlen("orders") == 600  # nothing lost
        client.set("on-the-new-primary", "1")

    # The other replica is re-pointed live (the same server; MONITOR and the slow log, which
    # root may read, do not show the new account's password); the old primary rejoins from a
    # fresh copy.
    other_guest = GuestClient(host.bus, other.instance_id)
    other_guest.apply_configuration(CTX, 256, 1, 1, {"slowlog-log-slower-than": 0})
    server = host.server_pid(other.instance_id, "redis")
    watching = Monitor(other)
    other_repl.follow_primary(CTX, source)
    old_repl.follow_primary(CTX, source)
    for spec, repl in ((other, other_repl), (old, old_repl)):
        eventually(lambda spec=spec: read(spec, "on-the-new-primary") == "1", f"the write {spec}")
        with root(spec) as client:
            assert client.hlen("orders") == 600
        assert repl.replication_state(CTX).role == "replica"
        assert writes_refused(spec)
        eventually(lambda repl=repl: repl.replication_state(CTX).streaming, "streaming")
    assert host.server_pid(other.instance_id, "redis") == server
    seen = watching.close()
    assert "on-the-new-primary" in seen  # it did watch
    assert source.password not in seen
    with root(other) as client:
        logged = str(client.slowlog_get(1024))
    assert "masterauth" in logged and source.password not in logged
    old_dir = host.driver.instance_dir(old.instance_id)
    # It owns no replication password nor account any more, and is no longer fenced.
    assert not (old_dir / "conf" / "replication-password").exists()
    assert not (old_dir / "conf" / "fenced").exists()
    assert "cove_replication" not in (old_dir / "conf" / "users.acl").read_text()
    assert old_guest.get_status(CTX) is GuestStatus.HEALTHY
    for spec in (old, other, new):
        assert source.password not in tenant_view(spec)


def login(spec: GuestSettings, user: str, password: str) -> redis.Redis:
    return redis.Redis(
        host=spec.address,
        port=spec.port,
        username=user,
        password=password,
        socket_timeout=10,
        socket_connect_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def read_as(spec: GuestSettings, user: str, password: str, key: str) -> str | None:
    """``key`` as ``user`` reads it on ``spec``; "refused" when the login is refused."""
    try:
        with login(spec, user, password) as client:
            value = client.get(key)
    except redis.AuthenticationError:
        return "refused"
    return None if value is None else str(value)


def root_reads(spec: GuestSettings, key: str) -> str | None:
    """``key`` as the tenant's root reads it; "refused" when root cannot log in."""
    try:
        with root(spec) as client:
            value = client.get(key)
    except redis.AuthenticationError:
        return "refused"
    return None if value is None else str(value)


def test_replicas_copy_the_primarys_users_and_root_and_keep_them_when_promoted(
    host: Host,
) -> None:
    primary = host.spec_of("redis")
    host.create(primary)
    p_guest = GuestClient(host.bus, primary.instance_id)
    p_repl = GuestReplicationClient(host.bus, primary.instance_id)
    prepare(p_guest, [], [UserSpec("alice", "pw-alice-1")])  # root stays off
    with login(primary, "alice", "pw-alice-1") as client:
        client.set("k", "v1")
    source = p_repl.replication_source(CTX)
    # The account may list users, to read only.
    with redis.Redis(
        host=primary.address, port=primary.port, username=source.user, password=source.password
    ) as account:
        assert any(str(line).startswith("user alice ") for line in account.acl_list())
        refusals: list[Callable[[], object]] = [
            lambda: account.acl_setuser("mallory", enabled=True, nopass=True),
            lambda: account.acl_deluser("alice"),
            lambda: account.acl_getuser("alice"),
            lambda: account.acl_save(),
            lambda: account.acl_load(),
        ]
        for refused in refusals:
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
    assert [u.name for u in p_guest.list_users(CTX)] == ["alice"]

    # A new replica has the primary's users as soon as it is prepared; root, off on the
    # primary, is off on it too.
    one = host.spec_of("redis")
    host.create(one)
    one_guest = GuestClient(host.bus, one.instance_id)
    prepare(one_guest, [], [], replica_of=source)
    assert one_guest.list_users(CTX) == p_guest.list_users(CTX)
    assert read_as(one, "alice", "pw-alice-1", "k") == "v1"
    assert read_as(one, "alice", "wrong-pw", "k") == "refused"
    assert root_reads(one, "k") == "refused"
    assert not one_guest.is_root_enabled(CTX)

    def in_step(*replicas: GuestSettings) -> bool:
        wanted = p_guest.list_users(CTX)
        return all(GuestClient(host.bus, r.instance_id).list_users(CTX) == wanted for r in replicas)

    # Users made, root enabled, a password changed, a user renamed and one deleted on the
    # primary follow on the replica.
    p_guest.create_users(CTX, [UserSpec("bob", "pw-bob-1"), UserSpec("carol", "pw-carol-1")])
    p_guest.enable_root(CTX, ROOT_PASSWORD)
    eventually(lambda: in_step(one), "the new users on the replica")
    assert [u.name for u in one_guest.list_users(CTX)] == ["alice", "bob", "carol"]
    eventually(lambda: root_reads(one, "k") == "v1", "root on the replica")
    assert one_guest.is_root_enabled(CTX)
    assert read_as(one, "bob", "pw-bob-1", "k") == "v1"
    with login(one, "carol", "pw-carol-1") as client, pytest.raises(redis.ReadOnlyError):
        client.set("k", "on the replica")
    p_guest.update_user(CTX, "alice", "%", None, "pw-alice-2")
    p_guest.update_user(CTX, "carol", "%", "dave", None)
    p_guest.delete_user(CTX, "bob", "%")
    eventually(lambda: read_as(one, "alice", "pw-alice-2", "k") == "v1", "the new password")
    assert read_as(one, "alice", "pw-alice-1", "k") == "refused"
    eventually(lambda: in_step(one), "the deletion and the rename on the replica")
    assert [u.name for u in one_guest.list_users(CTX)] == ["alice", "dave"]
    assert read_as(one, "bob", "pw-bob-1", "k") == "refused"
    assert read_as(one, "dave", "pw-carol-1", "k") == "v1"

    # A restart keeps them (the ACL file), and the password hashes reach no log.
    one_guest.restart(CTX)
    assert one_guest.list_users(CTX) == p_guest.list_users(CTX)
    assert read_as(one, "alice", "pw-alice-2", "k") == "v1"
    one_dir = host.driver.instance_dir(one.instance_id)
    acl_text = (one_dir / "conf" / "users.acl").read_text()
    assert "user alice " in acl_text and "cove_replication" not in acl_text
    hashes = [conf_hash(p) for p in ("pw-alice-1", "pw-alice-2", "pw-bob-1", ROOT_PASSWORD)]
    for instance_dir in (one_dir, host.driver.instance_dir(primary.instance_id)):
        for log in logs(instance_dir):
            text = log.read_text(errors="replace")
            assert not any(h in text for h in hashes), log

    # A switchover: the promoted replica keeps serving the tenant's users, and the other
    # replica and the old primary, following it, get the users made on it.
    two = host.spec_of("redis")
    host.create(two)
    two_guest = GuestClient(host.bus, two.instance_id)
    prepare(two_guest, [], [], replica_of=source)
    assert two_guest.list_users(CTX) == p_guest.list_users(CTX)
    users = p_guest.list_users(CTX)
    # The restarted replica streams again before the fence (it connects within a second
    # or so): a replica the primary never sent its last writes to cannot reach them.
    one_repl = GuestReplicationClient(host.bus, one.instance_id)
    eventually(lambda: one_repl.replication_state(CTX).streaming, "the replica streaming again")
    position = p_repl.fence_primary(CTX)
    try:
        eventually(
            lambda: (one_repl.replication_state(CTX).position or 0) >= (position or 0),
            "the replica reaching the old primary's last offset",
        )
    except AssertionError as exc:
        dirs = [host.driver.instance_dir(i.instance_id) for i in (primary, one)]
        raise AssertionError(
            f"{exc}: fenced at {position}, the replica is at "
            f"{one_repl.replication_state(CTX)}\n{log_tails(*dirs)}"
        ) from None
    new_source = one_repl.promote_replica(CTX)
    assert one_guest.list_users(CTX) == users
    with login(one, "alice", "pw-alice-2") as client:
        client.set("k", "v2")  # writable now, by the tenant's user
    assert root_reads(one, "k") == "v2"
    one_guest.create_users(CTX, [UserSpec("erin", "pw-erin-1")])
    for follower in (two, primary):
        GuestReplicationClient(host.bus, follower.instance_id).follow_primary(CTX, new_source)
    for follower in (two, primary):
        guest = GuestClient(host.bus, follower.instance_id)
        eventually(
            lambda guest=guest: guest.list_users(CTX) == one_guest.list_users(CTX),
            f"the new primary's users on {follower.instance_id}",
        )
        eventually(
            lambda follower=follower: read_as(follower, "erin", "pw-erin-1", "k") == "v2",
            "the new primary's user reading",
        )
        assert root_reads(follower, "k") == "v2"
    # Detached, a replica keeps the users too: they are the tenant's.
    GuestReplicationClient(host.bus, two.instance_id).detach_replica(CTX)
    assert [u.name for u in two_guest.list_users(CTX)] == ["alice", "dave", "erin"]
    with login(two, "erin", "pw-erin-1") as client:
        client.set("own", "detached")


def conf_hash(password: str) -> str:
    """The SHA-256 a server holds of ``password`` (as ACL LIST shows it, without ``#``)."""
    return hashlib.sha256(password.encode()).hexdigest()


def test_an_earlier_agents_replication_account_may_list_users_once_a_new_agent_runs(
    host: Host,
) -> None:
    primary = host.spec_of("redis")
    start_with_root(host, primary)
    source = GuestReplicationClient(host.bus, primary.instance_id).replication_source(CTX)
    conf_dir = host.driver.instance_dir(primary.instance_id) / "conf"
    # The account as an agent made it before replicas copied their source's users.
    with redis.Redis(
        unix_socket_path=str(conf_dir.parent / "run" / "redis.sock"),
        username="cove_admin",
        password=(conf_dir / "admin.secret").read_text().strip(),
    ) as admin:
        former = ("resetkeys", "resetchannels", "-@all", "+psync", "+replconf", "+ping")
        rules = ("reset", "on", "#" + conf_hash(source.password), *former)
        admin.execute_command("ACL", "SETUSER", source.user, *rules)
        admin.acl_save()
    account = redis.Redis(
        host=primary.address, port=primary.port, username=source.user, password=source.password
    )

    def may_list() -> bool:
        try:
            account.acl_list()
        except redis.exceptions.NoPermissionError:
            return False
        return True

    with account:
        assert not may_list()
        restart_agent(host, primary, signal.SIGKILL)  # the server keeps running
        eventually(may_list, "ACL LIST for the account")
        with pytest.raises(redis.exceptions.NoPermissionError):
            account.acl_setuser("mallory", enabled=True, nopass=True)
    assert GuestReplicationClient(host.bus, primary.instance_id).replication_source(CTX) == source
