"""PostgreSQL streaming replication through real guest agents on a private bus: a primary answers
its replication account, a new instance prepared from it becomes a read-only hot standby that
streams what the primary writes, the password stays out of command lines, environments and
logs, and a detached replica is a read-write server for good."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from guesthost import Host
from replication_helpers import ProcWatch, eventually, files_holding, logs, prepare

from cove.common.errors import GuestError
from cove.compute.discovery import find_postgresql
from cove.domain.backups import BackupJob, JobState, SealKey, StoreSpec
from cove.domain.guest import GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import GuestStatus
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient, GuestReplicationClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries"),
]

CTX = RequestContext()
APP_PASSWORD = "app-Secret-1"
#: Generous: the machine is shared, and a loaded one copies and replays slowly.
DEADLINE = 90.0


def pg(spec: GuestSettings, dbname: str = "shop") -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=spec.address,
        user="app",
        password=APP_PASSWORD,
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


def stream_from(spec: GuestSettings, password: str) -> psycopg.Connection[Any]:
    """A physical replication connection as the replication account."""
    return psycopg.connect(
        host=spec.address,
        user="cove_replication",
        password=password,
        replication="true",
        connect_timeout=10,
    )


def count(spec: GuestSettings) -> int:
    with pg(spec) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


def store_for(host: Host) -> StoreSpec:
    root = Path(host.settings.data_dir) / "backups"
    root.mkdir(exist_ok=True, mode=0o700)
    os.chown(root, host.driver.uid, host.driver.gid)
    return StoreSpec(kind="filesystem", location=str(root), prefix="cove-backups")


def setting(spec: GuestSettings, name: str) -> str:
    with pg(spec) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def test_a_replica_streams_from_its_primary_and_detaches_for_good(host: Host) -> None:
    # A larger flavor than the replica's: a standby needs as many connections as its primary.
    primary = dataclasses.replace(host.spec_of("postgresql"), ram_mb=1024)
    host.create(primary)
    p_guest = GuestClient(host.bus, primary.instance_id)
    p_repl = GuestReplicationClient(host.bus, primary.instance_id)
    prepare(p_guest, [DatabaseSpec("shop")], [UserSpec("app", APP_PASSWORD, databases=("shop",))])
    with pg(primary) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 1000) g")

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
    # The account streams and reads the files pg_rewind needs; no tenant database lets it in,
    # and it is no tenant's.
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(
            host=primary.address, user=source.user, password=source.password, dbname="shop"
        )
    assert [u.name for u in p_guest.list_users(CTX)] == ["app"]
    stream_from(primary, source.password).close()

    replica = host.spec_of("postgresql")
    host.create(replica)
    r_guest = GuestClient(host.bus, replica.instance_id)
    r_repl = GuestReplicationClient(host.bus, replica.instance_id)
    # A replica gets its source's databases and users, and nothing else.
    with pytest.raises(GuestError, match="without databases, users"):
        r_guest.prepare(CTX, [], [UserSpec("other", "pw-other-1")], replica_of=source)
    with pytest.raises(GuestError, match="without databases, users"):
        r_guest.prepare(CTX, [DatabaseSpec("more")], [], replica_of=source)
    # A source that refuses the account fails the prepare; the next one starts over.
    wrong = dataclasses.replace(source, password="wrong-" + secrets.token_hex(12))
    with pytest.raises(GuestError, match=f"cannot copy the data of instance {primary.instance_id}"):
        prepare(r_guest, [], [], replica_of=wrong)

    with ProcWatch(source.password, wrong.password) as watch:
        prepare(r_guest, [], [], replica_of=source)
        watch.scan()  # at least one whole scan while the replica streams
    assert watch.rounds >= 2
    assert watch.found == []
    prepare(r_guest, [], [], replica_of=source)  # prepared: only starts its server

    # What the primary held, and what it writes from now on.
    assert count(replica) == 1000
    assert setting(primary, "max_connections") == setting(replica, "max_connections") == "51"
    with pg(primary) as conn:
        conn.execute("INSERT INTO orders VALUES (1001, 'after the copy')")
    eventually(lambda: count(replica) == 1001, "the primary's write on the replica")
    with pg(replica) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO orders VALUES (5000, 'on the replica')")

    eventually(lambda: r_repl.replication_state(CTX).streaming, "the replica streaming")
    state = r_repl.replication_state(CTX)
    assert state.role == "replica" and state.position
    with pg(primary) as conn:
        conn.execute("INSERT INTO orders SELECT g, 'more' FROM generate_series(2000, 2100) g")
    eventually(
        lambda: (r_repl.replication_state(CTX).position or 0) > (state.position or 0),
        "the replica's position advancing",
    )
    primary_state = p_repl.replication_state(CTX)
    assert primary_state.role == "primary" and primary_state.position
    assert not primary_state.streaming

    # A healthy instance to the control plane; reads work, changes are refused clearly.
    assert r_guest.get_status(CTX) is GuestStatus.HEALTHY
    host.wait_event(
        30, method="heartbeat", instance_id=replica.instance_id, service_status="healthy"
    )
    assert [(u.name, list(u.databases)) for u in r_guest.list_users(CTX)] == [("app", ["shop"])]
    assert [d.name for d in r_guest.list_databases(CTX)] == ["shop"]
    with pytest.raises(GuestError, match="is a read-only replica"):
        r_guest.create_databases(CTX, [DatabaseSpec("more")])
    with pytest.raises(GuestError, match="is a read-only replica"):
        r_guest.create_users(CTX, [UserSpec("other", "pw-other-1")])
    with pytest.raises(GuestError, match="is a read-only replica"):
        r_guest.enable_root(CTX, "r00t-pw-1")
    with pytest.raises(GuestError, match="is a read-only replica"):
        r_repl.replication_source(CTX)
    store = store_for(host)
    r_guest.start_backup(CTX, BackupJob("b-r", store, "p/b-r", SealKey("bk-0", "00" * 32)))
    eventually(
        lambda: r_guest.backup_progress(CTX, "b-r").state is not JobState.RUNNING,
        "the replica's backup ending",
    )
    backup = r_guest.backup_progress(CTX, "b-r")
    assert backup.state is JobState.FAILED and "is a read-only replica" in backup.error

    # New settings on the primary keep its replicas' access; a restarted replica streams again.
    p_guest.apply_configuration(CTX, 512, 1, 1, {"work_mem": 8192})
    r_guest.restart(CTX)
    with pg(primary) as conn:
        conn.execute("INSERT INTO orders VALUES (3000, 'after the restart')")
    eventually(lambda: count(replica) == 1103, "the write after the replica's restart")
    assert r_repl.replication_state(CTX).role == "replica"

    # The password: only in the two private files that need it, never in a log.
    replica_dir = host.driver.instance_dir(replica.instance_id)
    for secret in (source.password, wrong.password):
        for root in (primary_dir, replica_dir):
            for log in logs(root):
                assert secret.encode() not in log.read_bytes(), log
    holding = files_holding(primary_dir, source.password.encode())
    holding |= files_holding(replica_dir, source.password.encode())
    assert holding == {
        primary_dir / "conf" / "replication-password": 0o600,
        replica_dir / "conf" / "replication.pgpass": 0o600,
    }
    # Not in a setting: a tenant's root (pg_read_all_settings) reads primary_conninfo.
    auto = (replica_dir / "data" / "postgresql.auto.conf").read_text()
    assert "primary_conninfo" in auto and "passfile=" in auto
    assert (replica_dir / "data").stat().st_mode & 0o777 == 0o700
    assert files_holding(replica_dir, wrong.password.encode()) == {}

    # Detached: a standalone read-write server, also after a restart.
    r_repl.detach_replica(CTX)
    assert r_repl.replication_state(CTX).role == "primary"
    with pg(replica) as conn:
        conn.execute("INSERT INTO orders VALUES (7000, 'on the detached one')")
    started = time.monotonic()
    r_repl.detach_replica(CTX)  # not a replica any more: answers at once
    assert time.monotonic() - started < 5
    r_guest.restart(CTX)
    assert r_repl.replication_state(CTX).role == "primary"
    with pg(replica) as conn:
        conn.execute("INSERT INTO orders VALUES (7001, 'after its restart')")
    assert count(replica) == 1105
    assert setting(replica, "max_connections") == "25"  # its own flavor's, once standalone
    assert not (replica_dir / "data" / "standby.signal").exists()
    assert files_holding(replica_dir, source.password.encode()) == {}
    # The account came with the copy: the old primary's password no longer lets anyone in.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        stream_from(replica, source.password)
    r_guest.create_databases(CTX, [DatabaseSpec("its_own")])
    assert r_guest.get_status(CTX) is GuestStatus.HEALTHY
    # The primary goes on by itself.
    with pg(primary) as conn:
        conn.execute("INSERT INTO orders VALUES (8000, 'only on the primary')")
    assert count(primary) == 1104
    assert count(replica) == 1105
    assert setting(replica, "max_connections") == "25"  # its own flavor's, once standalone


def test_a_replica_needs_a_source_that_answers(host: Host) -> None:
    spec = host.spec_of("postgresql")
    host.create(spec)
    guest = GuestClient(host.bus, spec.instance_id)
    nowhere = ReplicaSource("i-gone", spec.address, 5999, "cove_replication", "pw-" + "x" * 30)
    with pytest.raises(GuestError, match="cannot copy the data of instance i-gone"):
        prepare(guest, [], [], replica_of=nowhere)
    # Nothing is left half-made: the instance is prepared as usual afterwards.
    prepare(guest, [DatabaseSpec("shop")], [UserSpec("app", APP_PASSWORD, databases=("shop",))])
    with pg(spec) as conn:
        conn.execute("CREATE TABLE orders (id int)")
    assert count(spec) == 0


def make_group(host: Host, replicas: int) -> tuple[GuestSettings, list[GuestSettings]]:
    """A prepared primary with an ``orders`` table of 100 rows, and ``replicas`` streaming
    replicas of it."""
    primary = host.spec_of("postgresql")
    host.create(primary)
    prepare(
        GuestClient(host.bus, primary.instance_id),
        [DatabaseSpec("shop")],
        [UserSpec("app", APP_PASSWORD, databases=("shop",))],
    )
    with pg(primary) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'first' FROM generate_series(1, 100) g")
    source = GuestReplicationClient(host.bus, primary.instance_id).replication_source(CTX)
    made = []
    for _ in range(replicas):
        spec = host.spec_of("postgresql")
        host.create(spec)
        prepare(GuestClient(host.bus, spec.instance_id), [], [], replica_of=source)
        made.append(spec)
    return primary, made


def writes_refused(spec: GuestSettings) -> bool:
    """Whether the server takes no write: it does not answer, or is read-only."""
    try:
        with pg(spec) as conn:
            conn.execute("INSERT INTO orders VALUES (-1, 'must not land')")
    except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction):
        return True
    return False


def test_a_switchover_loses_nothing_and_the_old_primary_follows(host: Host) -> None:
    old, (new, other) = make_group(host, 2)
    old_repl = GuestReplicationClient(host.bus, old.instance_id)
    new_repl = GuestReplicationClient(host.bus, new.instance_id)
    other_repl = GuestReplicationClient(host.bus, other.instance_id)
    with pg(old) as conn:
        conn.execute("INSERT INTO orders SELECT g, 'late' FROM generate_series(101, 600) g")

    position = old_repl.fence_primary(CTX)
    assert position is not None
    assert old_repl.fence_primary(CTX) == position  # idempotent
    assert writes_refused(old)
    eventually(
        lambda: (new_repl.replication_state(CTX).position or 0) >= position,
        "the replica replaying the old primary's last record",
    )
    source = new_repl.promote_replica(CTX)
    assert (source.instance_id, source.host) == (new.instance_id, new.address)
    assert new_repl.promote_replica(CTX) == source  # idempotent
    assert count(new) == 600  # nothing lost
    with pg(new) as conn:
        conn.execute("INSERT INTO orders VALUES (601, 'on the new primary')")

    other_repl.follow_primary(CTX, source)
    old_repl.follow_primary(CTX, source)
    for spec, repl in ((other, other_repl), (old, old_repl)):
        eventually(lambda spec=spec: count(spec) == 601, f"the new primary's write on {spec}")
        assert repl.replication_state(CTX).role == "replica"
        assert writes_refused(spec)
    eventually(lambda: old_repl.replication_state(CTX).streaming, "the old primary streaming")
    old_dir = host.driver.instance_dir(old.instance_id)
    # It owns no replication password any more, and keeps its own configuration.
    assert not (old_dir / "conf" / "replication-password").exists()
    assert not (old_dir / "conf" / "fenced").exists()


def test_a_diverged_old_primary_is_rewound(host: Host) -> None:
    old, (new,) = make_group(host, 1)
    old_repl = GuestReplicationClient(host.bus, old.instance_id)
    new_repl = GuestReplicationClient(host.bus, new.instance_id)
    # The replica is promoted while the old primary still takes writes (a partition): the
    # two histories fork.
    source = new_repl.promote_replica(CTX)
    with pg(old) as conn:
        conn.execute("INSERT INTO orders SELECT g, 'lost' FROM generate_series(1000, 1200) g")
    with pg(new) as conn:
        conn.execute("INSERT INTO orders VALUES (500, 'kept')")
    old_repl.fence_primary(CTX)
    assert writes_refused(old)
    # A new agent does not start a fenced server.
    old_guest = GuestClient(host.bus, old.instance_id)
    with pytest.raises(GuestError, match="fenced"):
        old_guest.restart(CTX)
    assert writes_refused(old)

    old_repl.follow_primary(CTX, source)
    eventually(lambda: count(old) == 101, "the rewound old primary holding the new history")
    with pg(old) as conn:
        row = conn.execute("SELECT note FROM orders WHERE id = 500").fetchone()
    assert row == ("kept",)
    log = "".join(
        p.read_text(errors="replace") for p in logs(host.driver.instance_dir(old.instance_id))
    )
    assert "pg_rewind" in log and "copying the data" not in log


def test_synchronous_mode_makes_a_commit_wait_for_a_replica(host: Host) -> None:
    primary, (replica,) = make_group(host, 1)
    p_repl = GuestReplicationClient(host.bus, primary.instance_id)
    r_repl = GuestReplicationClient(host.bus, replica.instance_id)
    for repl in (r_repl, p_repl):  # replicas first, as the API does
        repl.set_synchronous(CTX, True)
        repl.set_synchronous(CTX, True)  # idempotent
    assert setting(primary, "synchronous_standby_names") == "ANY 1 (*)"
    eventually(lambda: r_repl.replication_state(CTX).streaming, "the replica streaming")
    with pg(primary) as conn:
        conn.execute("INSERT INTO orders VALUES (500, 'acknowledged by the replica')")
    # Flushed there when the commit returned; applied a moment later.
    eventually(lambda: count(replica) == 101, "the acknowledged commit on the replica")
    with pg(replica) as conn:
        receiver = conn.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone()
    assert receiver is not None
    done = threading.Event()

    def commit() -> None:
        with pg(primary) as conn:
            conn.execute("INSERT INTO orders VALUES (501, 'waits')")
        done.set()

    os.kill(receiver[0], signal.SIGSTOP)  # the replica acknowledges nothing
    try:
        waiter = threading.Thread(target=commit, daemon=True)
        waiter.start()
        assert not done.wait(3), "a commit returned with no replica acknowledging it"
    finally:
        os.kill(receiver[0], signal.SIGCONT)
    assert done.wait(DEADLINE), "the commit did not return once the replica acknowledged it"

    p_repl.set_synchronous(CTX, False)
    assert setting(primary, "synchronous_standby_names") == ""
