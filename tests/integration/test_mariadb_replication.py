"""MariaDB GTID replication through real guest agents on a private bus: a primary answers its
replication account and a copy offer, two instances prepared from it become read-only replicas
that apply what it writes, the password stays out of command lines, logs and every tenant's
view, a switchover moves the primary to a replica (the old primary fenced, the other replica
re-pointed, the old primary copied afresh), a detached replica is a read-write server for
good, and in synchronous mode a commit returns only once a replica holds it."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
import replication_helpers
from guesthost import Host
from replication_helpers import ProcWatch, files_holding, logs

from cove.common.errors import BadRequest, GuestError, ServiceUnavailable
from cove.domain.guest import GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.datastores.mariadb.replication import gtid_seq
from cove.rpc import RequestContext
from cove.rpc.guest import GuestClient, GuestReplicationClient

pytestmark = [pytest.mark.integration]

CTX = RequestContext()
APP_PASSWORD = "app-Secret-Rq71v"
ROOT_PASSWORD = "root-Secret-Lx09c"
#: Generous: the machine is shared, and a loaded one copies and applies slowly.
DEADLINE = 120.0
#: MariaDB's refusals: a read-only server, a missing privilege, a table or schema out of reach.
ER_OPTION_PREVENTS_STATEMENT = 1290
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_TABLEACCESS_DENIED = 1142
ER_DBACCESS_DENIED = 1044

#: The shared helpers with this module's longer deadlines and slower polling (MariaDB copies
#: and applies slowly).
eventually = functools.partial(replication_helpers.eventually, timeout=DEADLINE, interval=0.1)
prepare = functools.partial(replication_helpers.prepare, deadline=300.0)


def login(
    spec: GuestSettings, user: str = "app", password: str = APP_PASSWORD
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A tenant's session (in ``shop``, which the sequence tables need, unless the account
    is the replication one)."""
    return pymysql.connect(
        host=spec.address,
        port=spec.port,
        user=user,
        password=password,
        database=None if user == "cove_replication" else "shop",
        autocommit=True,
        connect_timeout=10,
    )


def query(spec: GuestSettings, sql: str, user: str = "app", password: str = APP_PASSWORD) -> Any:
    with login(spec, user, password) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def count(spec: GuestSettings) -> int:
    return int(query(spec, "SELECT count(*) FROM shop.orders")[0][0])


def counts(spec: GuestSettings) -> int | None:
    """``count``, or None while the server does not answer (a rejoin restarts it)."""
    try:
        return count(spec)
    except pymysql.MySQLError:
        return None


def refused(spec: GuestSettings, sql: str, user: str = "app", password: str = APP_PASSWORD) -> int:
    """The error number the server answers ``sql`` with."""
    with pytest.raises(pymysql.MySQLError) as exc:
        query(spec, sql, user, password)
    return int(exc.value.args[0])


def as_agent(home: Path, sql: str) -> Any:
    """``sql`` as the instance's guest agent (its account, over the unix socket)."""
    with (
        pymysql.connect(
            unix_socket=str(home / "run" / "mariadb.sock"),
            user="cove_admin",
            password=(home / "conf" / "admin.secret").read_text().strip(),
            autocommit=True,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql)
        return cur.fetchall()


@dataclasses.dataclass
class Member:
    """One instance of the group and its guest's clients."""

    spec: GuestSettings
    guest: GuestClient
    repl: GuestReplicationClient
    home: Path

    def position(self) -> int:
        return self.repl.replication_state(CTX).position or 0


def new_member(host: Host) -> Member:
    spec = host.spec_of("mariadb")
    host.create(spec)
    return Member(
        spec,
        GuestClient(host.bus, spec.instance_id),
        GuestReplicationClient(host.bus, spec.instance_id),
        host.driver.instance_dir(spec.instance_id),
    )


def restart_agent(host: Host, member: Member) -> None:
    """Kill the guest agent (its server runs on) and have the driver start a new one."""
    pid = host.driver.agent_pid(member.spec.instance_id)
    assert pid is not None and pid > 0
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: host.driver.agent_pid(member.spec.instance_id) is None, "the agent gone")
    assert host.driver.ensure_running(member.spec.instance_id)
    eventually(lambda: healthy(member.guest), "the new agent answering")


def healthy(guest: GuestClient) -> bool:
    try:
        return guest.get_status(CTX) is GuestStatus.HEALTHY
    except ServiceUnavailable:  # the new agent is not listening yet
        return False


@pytest.fixture
def primary(host: Host) -> Member:
    """A primary with a database, a user, root and 1000 rows."""
    member = new_member(host)
    prepare(
        member.guest,
        [DatabaseSpec("shop")],
        [UserSpec("app", APP_PASSWORD, databases=("shop",))],
    )
    member.guest.enable_root(CTX, ROOT_PASSWORD)
    with login(member.spec) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE shop.orders (id int PRIMARY KEY, note text) ENGINE=InnoDB")
        cur.execute("INSERT INTO shop.orders SELECT seq, md5(seq) FROM seq_1_to_1000")
    return member


@pytest.fixture
def group(host: Host, primary: Member) -> tuple[Member, Member, Member]:
    """:func:`primary` and two replicas not yet prepared."""
    return primary, new_member(host), new_member(host)


def test_replicas_apply_their_primary_and_keep_its_password_secret(
    host: Host, group: tuple[Member, Member, Member]
) -> None:
    primary, one, two = group
    # A standalone server writes no binary log; its first replica's source restarts it once
    # to begin one, with its data.
    assert query(primary.spec, "SELECT @@log_bin") == ((0,),)
    source = primary.repl.replication_source(CTX)
    assert query(primary.spec, "SELECT @@log_bin") == ((1,),) and count(primary.spec) == 1000
    assert (primary.home / "conf" / "source").is_file()
    assert (source.instance_id, source.host, source.port, source.user) == (
        primary.spec.instance_id,
        primary.spec.address,
        primary.spec.port,
        "cove_replication",
    )
    assert len(source.password) >= 32 and len(source.copy_token) >= 32
    assert source.copy_port is not None
    assert source.password not in repr(source) and source.copy_token not in repr(source)
    again = primary.repl.replication_source(CTX)
    # The same account every time; a copy offer of its own for each replica.
    assert again.password == source.password
    assert (again.copy_port, again.copy_token) != (source.copy_port, source.copy_token)
    assert (primary.home / "conf" / "replication-password").stat().st_mode & 0o777 == 0o600
    # The account replicates and does nothing else; it is no tenant's.
    account = {"user": source.user, "password": source.password}
    grants = [str(r[0]) for r in query(primary.spec, "SHOW GRANTS", **account)]
    assert len(grants) == 1
    assert grants[0].startswith("GRANT REPLICATION SLAVE ON *.* TO `cove_replication`@`%`")
    assert refused(primary.spec, "SELECT * FROM shop.orders", **account) == ER_TABLEACCESS_DENIED
    assert [u.name for u in primary.guest.list_users(CTX)] == ["app"]
    with pytest.raises(BadRequest, match="reserved"):
        primary.guest.create_users(CTX, [UserSpec("cove_replication", "pw-x-1")])

    # A replica gets its source's databases and users, and nothing else.
    with pytest.raises(GuestError, match="without databases, users"):
        one.guest.prepare(CTX, [DatabaseSpec("more")], [], replica_of=source)
    # A wrong token: the offer turns it away and the prepare fails; the next one starts over.
    wrong = dataclasses.replace(source, copy_token="not-the-token")
    with pytest.raises(GuestError, match=f"cannot copy the data of instance {source.instance_id}"):
        prepare(one.guest, [], [], replica_of=wrong)

    # Two replicas copied at once, each through an offer of its own.
    with ProcWatch(source.password, source.copy_token, again.copy_token) as watch:
        errors: list[BaseException] = []

        def build(member: Member, offer: ReplicaSource) -> None:
            try:
                prepare(member.guest, [], [], replica_of=offer)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=build, args=(one, source)),
            threading.Thread(target=build, args=(two, again)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        watch.scan()  # at least one whole scan while the replicas replicate
    assert watch.rounds >= 2
    assert watch.found == []
    prepare(one.guest, [], [], replica_of=source)  # prepared: only starts its server

    # What the primary held, and what it writes from now on. Its binary log began after all
    # of it: a replica that applied nothing yet is at position 0, a candidate for a failover.
    assert count(one.spec) == count(two.spec) == 1000
    assert one.repl.replication_state(CTX).position == 0
    with login(primary.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (1001, 'after the copies')")
    for member in (one, two):
        eventually(lambda m=member: count(m.spec) == 1001, "the primary's write on a replica")
        eventually(lambda m=member: m.repl.replication_state(CTX).streaming, "streaming")
    written = primary.repl.replication_state(CTX)
    assert written.role == "primary" and written.position and not written.streaming
    for member in (one, two):
        state = member.repl.replication_state(CTX)
        assert state.role == "replica" and state.position == written.position
    with login(primary.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders SELECT seq, 'more' FROM seq_2000_to_2009")
    assert primary.position() == (written.position or 0) + 1  # one transaction, one GTID
    eventually(lambda: one.position() == primary.position(), "the replica's position")

    # Read-only for every tenant account, root included; the agent refuses changes.
    assert refused(one.spec, "INSERT INTO shop.orders VALUES (5000, 'x')") == (
        ER_OPTION_PREVENTS_STATEMENT
    )
    root = {"user": "root", "password": ROOT_PASSWORD}
    assert refused(one.spec, "DELETE FROM shop.orders", **root) == ER_OPTION_PREVENTS_STATEMENT
    assert refused(one.spec, "CREATE DATABASE other", **root) == ER_OPTION_PREVENTS_STATEMENT
    for guest_call in (
        lambda: one.guest.create_databases(CTX, [DatabaseSpec("more")]),
        lambda: one.guest.create_users(CTX, [UserSpec("other", "pw-other-1")]),
        lambda: one.guest.delete_user(CTX, "app", "%"),
    ):
        with pytest.raises(GuestError, match="is a read-only replica"):
            guest_call()
    with pytest.raises(GuestError, match="is a read-only replica"):
        one.repl.replication_source(CTX)
    assert [(u.name, list(u.databases)) for u in one.guest.list_users(CTX)] == [("app", ["shop"])]
    assert one.guest.get_status(CTX) is GuestStatus.HEALTHY

    # Root sees nothing of the replication's password.
    assert refused(one.spec, "SHOW SLAVE STATUS", **root) == ER_SPECIFIC_ACCESS_DENIED
    assert refused(one.spec, "SELECT * FROM mysql.global_priv", **root) == ER_TABLEACCESS_DENIED
    assert refused(one.spec, "SHOW GRANTS FOR cove_replication@'%'", **root) == ER_DBACCESS_DENIED
    # The agent's own view of the replica: its source, and no password in it.
    status = as_agent(one.home, "SHOW SLAVE STATUS")
    assert source.password not in repr(status) and source.host in repr(status)

    # A restarted replica goes on replicating.
    one.guest.restart(CTX)
    with login(primary.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (3000, 'after the restart')")
    eventually(lambda: count(one.spec) == 1012, "the write after the replica's restart")
    assert one.repl.replication_state(CTX).role == "replica"

    # The password: only where the servers need it, never in a log; the setup file is gone.
    for member in (primary, one, two):
        for log in logs(member.home):
            for secret in (source.password, source.copy_token, again.copy_token):
                assert secret.encode() not in log.read_bytes(), log
        assert not (member.home / "conf" / "replication-setup.json").exists()
    holding: dict[Path, int] = {}
    for member in (primary, one, two):
        holding |= files_holding(member.home, source.password.encode())
    assert holding == {
        primary.home / "conf" / "replication-password": 0o600,
        one.home / "data" / "master.info": 0o600,
        two.home / "data" / "master.info": 0o600,
    }


def test_a_switchover_moves_the_primary_and_a_detached_replica_stays_writable(
    host: Host, group: tuple[Member, Member, Member]
) -> None:
    old, new, other = group
    root = {"user": "root", "password": ROOT_PASSWORD}
    prepare(new.guest, [], [], replica_of=old.repl.replication_source(CTX))
    prepare(other.guest, [], [], replica_of=old.repl.replication_source(CTX))
    # The statement history on: the re-pointed replica's password must not land there.
    other.guest.apply_configuration(CTX, 512, 1, 1, {"performance_schema": True})
    other.guest.restart(CTX)
    as_agent(
        other.home,
        "UPDATE performance_schema.setup_consumers SET ENABLED = 'YES' "
        "WHERE NAME LIKE 'events_statements%'",
    )
    assert query(other.spec, "SELECT 'history-marker'", **root) == (("history-marker",),)
    with login(old.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders SELECT seq, 'late' FROM seq_1001_to_1500")
        cur.execute("INSERT INTO shop.orders VALUES (1501, 'last on the old primary')")

    with ProcWatch() as watch:
        before = old.position()
        last = old.repl.fence_primary(CTX)
        assert last == before
        assert old.repl.fence_primary(CTX) == last  # idempotent, the server stopped
        assert old.guest.get_status(CTX) is GuestStatus.SHUTDOWN
        with pytest.raises(pymysql.OperationalError, match="Can't connect"):
            query(old.spec, "INSERT INTO shop.orders VALUES (9001, 'too late')")
        eventually(lambda: new.position() >= last, "the replica reaching the fenced position")
        assert count(new.spec) == 1501
        new_source = new.repl.promote_replica(CTX)
        watch.needles += [new_source.password.encode(), new_source.copy_token.encode()]
        assert new_source.instance_id == new.spec.instance_id
        assert new.repl.replication_state(CTX).role == "primary"
        new.repl.promote_replica(CTX)  # idempotent
        assert (new.home / "conf" / "source").is_file()  # its binary log stays, for good
        other.repl.follow_primary(CTX, new_source)  # re-pointed live
        old.repl.follow_primary(CTX, new_source)  # copied afresh
        watch.scan()
    assert watch.found == []

    with login(new.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (9000, 'on the new primary')")
    for member in (other, old):
        eventually(lambda m=member: counts(m.spec) == 1502, "the new primary's write")
        eventually(lambda m=member: m.repl.replication_state(CTX).streaming, "streaming")
        assert member.repl.replication_state(CTX).role == "replica"
        assert refused(member.spec, "INSERT INTO shop.orders VALUES (9001, 'x')") == (
            ER_OPTION_PREVENTS_STATEMENT
        )
    eventually(lambda: other.position() == new.position(), "the re-pointed replica's position")
    assert new.position() > last
    assert old.guest.get_status(CTX) is GuestStatus.HEALTHY
    history = repr(
        query(
            other.spec,
            "SELECT SQL_TEXT FROM performance_schema.events_statements_history_long",
            **root,
        )
    )
    assert "history-marker" in history  # it records the statements run
    assert "CHANGE MASTER" not in history and new_source.password not in history
    for member in (old, new, other):
        for log in logs(member.home):
            for secret in (new_source.password, new_source.copy_token):
                assert secret.encode() not in log.read_bytes(), log
    assert not (old.home / "conf" / "replication-password").exists()

    # Detached: a standalone read-write server, also after a new agent and a restart.
    other.repl.detach_replica(CTX)
    assert other.repl.replication_state(CTX).role == "primary"
    with login(other.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (7000, 'on the detached one')")
    started = time.monotonic()
    other.repl.detach_replica(CTX)  # not a replica any more: answers at once
    assert time.monotonic() - started < 5
    restart_agent(host, other)
    other.guest.restart(CTX)
    assert other.repl.replication_state(CTX).role == "primary"
    assert query(other.spec, "SELECT @@log_bin") == ((1,),)  # still a source to follow
    with login(other.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (7001, 'after its restart')")
    assert count(other.spec) == 1504
    other.guest.create_databases(CTX, [DatabaseSpec("its_own")])
    assert files_holding(other.home, new_source.password.encode()) == {}
    # The account came with the copy: the new primary's password no longer lets anyone in.
    with pytest.raises(pymysql.MySQLError, match="Access denied"):
        login(other.spec, new_source.user, new_source.password)
    # The new primary goes on by itself.
    with login(new.spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (8000, 'only on the new primary')")
    eventually(lambda: counts(old.spec) == 1503, "the new primary's write on the old one")
    assert count(other.spec) == 1504


#: A primary's semi-synchronous settings in synchronous mode.
SYNCHRONOUS_PRIMARY = {
    "rpl_semi_sync_master_enabled": "ON",
    "rpl_semi_sync_master_wait_point": "AFTER_SYNC",
    # The largest the server takes: a wait never times out into asynchronous replication.
    "rpl_semi_sync_master_timeout": str(2**64 - 1),
    "rpl_semi_sync_master_wait_no_slave": "ON",
    "rpl_semi_sync_slave_enabled": "ON",
}
#: A replica's: it acknowledges, but does not wait itself (its applier writes its binary log
#: too, and would wait there for a replica of its own).
SYNCHRONOUS_REPLICA = {**SYNCHRONOUS_PRIMARY, "rpl_semi_sync_master_enabled": "OFF"}
#: The same settings when synchronous mode is off: the server's defaults.
ASYNCHRONOUS = {
    "rpl_semi_sync_master_enabled": "OFF",
    "rpl_semi_sync_master_wait_point": "AFTER_COMMIT",
    "rpl_semi_sync_master_timeout": "10000",
    "rpl_semi_sync_master_wait_no_slave": "ON",
    "rpl_semi_sync_slave_enabled": "OFF",
}


def semi_sync(member: Member) -> dict[str, str]:
    """The server's semi-synchronous variables and counters, as the agent reads them."""
    rows = [
        *as_agent(member.home, "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync%'"),
        *as_agent(member.home, "SHOW GLOBAL STATUS LIKE 'rpl_semi_sync%'"),
    ]
    return {str(name).lower(): str(value) for name, value in rows}


def has(member: Member, settings: dict[str, str]) -> bool:
    return semi_sync(member).items() >= settings.items()


def received(member: Member) -> int:
    """The last transaction the replica's receiving thread holds (in its relay log)."""
    with (
        pymysql.connect(
            unix_socket=str(member.home / "run" / "mariadb.sock"),
            user="cove_admin",
            password=(member.home / "conf" / "admin.secret").read_text().strip(),
            cursorclass=pymysql.cursors.DictCursor,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SHOW SLAVE STATUS")
        row = cur.fetchone()
    assert row is not None
    return gtid_seq(str(row["Gtid_IO_Pos"])) or 0


def holds(spec: GuestSettings, order: int) -> bool:
    return bool(query(spec, f"SELECT count(*) FROM shop.orders WHERE id = {order}")[0][0])


class Commit:
    """An order written on ``spec`` by a client in a thread of its own, which waits as long
    as the commit does (``done`` is set once it returned)."""

    def __init__(self, spec: GuestSettings, order: int) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(spec, order), daemon=True)
        self._thread.start()

    def _run(self, spec: GuestSettings, order: int) -> None:
        try:
            with login(spec) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO shop.orders VALUES (%s, 'synchronous')", [order])
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def returned(self, timeout: float) -> bool:
        """Whether the commit returned within ``timeout``; raises what it raised."""
        if not self.done.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        return True


def commit(spec: GuestSettings, order: int) -> int:
    """Write an order on ``spec``; the GTID sequence number of its transaction."""
    with login(spec) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO shop.orders VALUES (%s, 'synchronous')", [order])
        cur.execute("SELECT @@last_gtid")
        row = cur.fetchone()
    assert row is not None
    return gtid_seq(str(row[0])) or 0


def test_in_synchronous_mode_a_commit_returns_once_a_replica_holds_it(
    host: Host, primary: Member
) -> None:
    replica = new_member(host)
    prepare(replica.guest, [], [], replica_of=primary.repl.replication_source(CTX))
    eventually(lambda: replica.repl.replication_state(CTX).streaming, "streaming")
    for member in (primary, replica):
        member.repl.set_synchronous(CTX, True)
        member.repl.set_synchronous(CTX, True)  # idempotent
    assert has(primary, SYNCHRONOUS_PRIMARY) and has(replica, SYNCHRONOUS_REPLICA)
    eventually(
        lambda: semi_sync(replica)["rpl_semi_sync_slave_status"] == "ON",
        "the replica acknowledging",
    )
    eventually(
        lambda: semi_sync(primary)["rpl_semi_sync_master_clients"] == "1",
        "the replica connected to acknowledge",
    )

    # A commit returns once the replica holds it: acknowledged, in its relay log, applied.
    acknowledged = int(semi_sync(primary)["rpl_semi_sync_master_yes_tx"])
    seq = commit(primary.spec, 1001)
    assert received(replica) >= seq
    assert int(semi_sync(primary)["rpl_semi_sync_master_yes_tx"]) == acknowledged + 1
    # MariaDB acknowledges what the replica received, not what it applied: the order is
    # visible there a moment later.
    eventually(
        lambda: holds(replica.spec, 1001), "the acknowledged order on the replica", timeout=5
    )

    # While the replica receives nothing, a commit does not return, however long it waits.
    as_agent(replica.home, "STOP SLAVE IO_THREAD")
    waiting = Commit(primary.spec, 1002)
    assert not waiting.returned(5), "a commit returned that no replica holds"
    state = semi_sync(primary)
    assert state["rpl_semi_sync_master_status"] == "ON"  # no fallback to asynchronous
    assert state["rpl_semi_sync_master_wait_sessions"] == "1"
    # Waiting after the binary log's sync: not even visible on the primary yet.
    assert not holds(primary.spec, 1002) and not holds(replica.spec, 1002)
    as_agent(replica.home, "START SLAVE IO_THREAD")
    assert waiting.returned(DEADLINE)
    eventually(lambda: holds(replica.spec, 1002), "the order on the replica once it returned")

    # Off: a commit returns without the replica.
    for member in (primary, replica):
        member.repl.set_synchronous(CTX, False)
        member.repl.set_synchronous(CTX, False)  # idempotent
        assert has(member, ASYNCHRONOUS)
        assert not (member.home / "conf" / "synchronous").exists()
    eventually(
        lambda: semi_sync(replica)["rpl_semi_sync_slave_status"] == "OFF", "acknowledging no more"
    )
    as_agent(replica.home, "STOP SLAVE IO_THREAD")
    alone = Commit(primary.spec, 1003)
    assert alone.returned(5)
    assert holds(primary.spec, 1003) and not holds(replica.spec, 1003)
    as_agent(replica.home, "START SLAVE IO_THREAD")
    eventually(lambda: holds(replica.spec, 1003), "the order on the replica later")

    # On again, and kept across a restart of the primary's server.
    for member in (primary, replica):
        member.repl.set_synchronous(CTX, True)
    primary.guest.restart(CTX)
    assert has(primary, SYNCHRONOUS_PRIMARY)
    assert semi_sync(primary)["rpl_semi_sync_master_yes_tx"] == "0"  # a new server
    assert "rpl_semi_sync_master_enabled = ON\n" in (primary.home / "conf" / "my.cnf").read_text()
    seq = commit(primary.spec, 1004)  # waits until the replica has connected again
    assert received(replica) >= seq
    assert semi_sync(primary)["rpl_semi_sync_master_yes_tx"] == "1"

    # A failover keeps the mode: the promoted replica waits for a replica from then on (its
    # replication account changes without waiting for one), and the old primary, copied
    # afresh as its replica, acknowledges with nothing more asked.
    last = primary.repl.fence_primary(CTX)
    assert last is not None and last >= seq
    eventually(lambda: replica.position() >= last, "the replica reaching the fenced position")
    new_source = replica.repl.promote_replica(CTX)
    assert has(replica, SYNCHRONOUS_PRIMARY)
    primary.repl.follow_primary(CTX, new_source)
    assert has(primary, SYNCHRONOUS_REPLICA)
    eventually(lambda: semi_sync(primary)["rpl_semi_sync_slave_status"] == "ON", "acknowledging")
    seq = commit(replica.spec, 1005)
    assert received(primary) >= seq
    assert semi_sync(replica)["rpl_semi_sync_master_yes_tx"] == "1"
    eventually(lambda: counts(primary.spec) == 1005, "every order on the old primary")
