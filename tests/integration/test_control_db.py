"""The control database layer on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from cove.common.ids import new_id, utcnow
from cove.conductor.service import SERVER_FAULT, Conductor
from cove.db.catalog import seed_flavors
from cove.db.engine import Database
from cove.db.instances import allocate_address, release_address
from cove.db.migrate import current, head, upgrade
from cove.db.models import AddressAllocation, Backup, GuestState, Instance
from cove.domain.guest import HeartbeatPayload
from cove.domain.status import GuestStatus, Task
from cove.rpc import RequestContext
from rows import add_instance

BEAT = HeartbeatPayload(agent_pid=1)

pytestmark = pytest.mark.integration


def _instance(db: Database, task: Task = Task.BUILDING) -> str:
    return add_instance(db, task)


def test_migrations_reach_head(db: Database) -> None:
    assert current(db.url) == head()
    upgrade(db.url)  # idempotent
    with db.session() as s:
        assert seed_flavors(s) == 4
    with db.session() as s:
        assert seed_flavors(s) == 0


def test_a_backup_over_4_gib_keeps_its_size(db: Database) -> None:
    iid = _instance(db)
    now = utcnow()
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        s.add(
            Backup(
                id=(bid := new_id()),
                project_id="p",
                name="big",
                instance_id=iid,
                datastore_version_id=inst.datastore_version_id,
                status="COMPLETED",
                store="{}",
                artifact=f"{iid}/{bid}.cbk",
                size=5 * 1024**3 + 1,
                key_id="k",
                created=now,
                updated=now,
            )
        )
    with db.session() as s:
        row = s.get(Backup, bid)
        assert row is not None and row.size == 5 * 1024**3 + 1


def test_timestamps_come_back_aware(db: Database) -> None:
    iid = _instance(db)
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None and inst.created.tzinfo is not None


def test_concurrent_address_allocation_never_hands_out_one_twice(db: Database) -> None:
    ids = [new_id() for _ in range(12)]
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(iid: str) -> None:
        try:
            with db.session() as s:
                got[iid] = allocate_address(s, "127.42.0.0/24", iid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(got.values())) == len(ids)
    with db.session() as s:
        assert allocate_address(s, "127.42.0.0/24", ids[0]) == got[ids[0]]  # idempotent
        release_address(s, ids[0])
    with db.session() as s:
        assert (
            s.scalar(select(AddressAllocation).where(AddressAllocation.instance_id == ids[0]))
            is None
        )


def test_conductor_discards_older_messages_and_ends_builds(db: Database) -> None:
    iid = _instance(db)
    conductor = Conductor(db)
    ctx = RequestContext()
    t0 = utcnow()
    conductor.heartbeat(ctx, iid, GuestStatus.BUILDING, BEAT, t0)
    conductor.report(ctx, iid, "prepare", "success", "", t0 + timedelta(seconds=1))
    conductor.heartbeat(ctx, iid, GuestStatus.HEALTHY, BEAT, t0 + timedelta(seconds=2))
    conductor.heartbeat(ctx, iid, GuestStatus.CRASHED, BEAT, t0 + timedelta(seconds=1))  # late
    with db.session() as s:
        inst = s.get(Instance, iid)
        guest = s.get(GuestState, iid)
        assert inst is not None and guest is not None
        assert inst.task == Task.NONE.value
        assert guest.status == "healthy"


def test_failed_prepare_records_the_fault(db: Database) -> None:
    iid = _instance(db)
    Conductor(db).report(RequestContext(), iid, "prepare", "failure", "disk full", utcnow())
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        assert inst.task == Task.BUILD_ERROR.value
        assert inst.fault_message is not None and "disk full" in inst.fault_message


def test_heartbeat_of_a_serving_guest_ends_a_build_whose_report_was_lost(db: Database) -> None:
    iid = _instance(db)
    Conductor(db).heartbeat(RequestContext(), iid, GuestStatus.HEALTHY, BEAT, utcnow())
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None and inst.task == Task.NONE.value


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_heartbeats_of_one_instance(db: Database, round_: int) -> None:
    iid = _instance(db, Task.NONE)
    conductor = Conductor(db)
    t0 = utcnow()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def beat(n: int) -> None:
        start.wait()
        try:
            conductor.heartbeat(
                RequestContext(),
                iid,
                GuestStatus.HEALTHY,
                HeartbeatPayload(agent_pid=n),
                t0 + timedelta(milliseconds=n),
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with db.session() as s:
        guest = s.get(GuestState, iid)
        assert guest is not None
        # Whatever order the workers ran in, the newest heartbeat is the one recorded.
        assert json.loads(guest.payload) == {
            "agent_pid": 7,
            "isolation": None,
            "cluster": None,
            "replica": None,
            "vitals": None,
        }


def test_a_crashed_server_is_the_fault_until_it_serves_again(db: Database) -> None:
    iid = _instance(db, Task.NONE)
    conductor = Conductor(db)
    ctx = RequestContext()
    t0 = utcnow()

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    def fault() -> str | None:
        with db.session() as s:
            inst = s.get(Instance, iid)
            assert inst is not None
            assert (inst.fault_at is None) == (inst.fault_message is None)
            return inst.fault_message

    conductor.heartbeat(ctx, iid, GuestStatus.HEALTHY, BEAT, at(0))
    conductor.report(ctx, iid, "server", "crashed", "PostgreSQL was killed by SIGKILL", at(2))
    crashed = fault()
    assert crashed == f"{SERVER_FAULT}: PostgreSQL was killed by SIGKILL"
    # A serving heartbeat sent before the crash, delivered late, changes nothing.
    conductor.heartbeat(ctx, iid, GuestStatus.HEALTHY, BEAT, at(1))
    conductor.heartbeat(ctx, iid, GuestStatus.CRASHED, BEAT, at(3))
    assert fault() == crashed
    conductor.report(ctx, iid, "server", "recovered", "answers again after 1 restart(s)", at(4))
    assert fault() is None

    # Given up: the fault says so; a heartbeat of the server still down leaves it.
    conductor.report(ctx, iid, "server", "crashed", "Redis exited with status 1", at(5))
    conductor.report(ctx, iid, "server", "gave_up", "the last start failed: no space", at(6))
    conductor.report(ctx, iid, "server", "crashed", "late", at(5.5))  # older: discarded
    assert fault() == (
        f"{SERVER_FAULT} and could not be started again: the last start failed: no space"
    )
    conductor.heartbeat(ctx, iid, GuestStatus.CRASHED, BEAT, at(7))
    assert fault() is not None
    # A new agent started the server: its first serving heartbeat ends the fault.
    conductor.heartbeat(ctx, iid, GuestStatus.HEALTHY, BEAT, at(8))
    assert fault() is None

    # A fault the conductor did not set is never cleared by it.
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.fault_message, inst.fault_at = "Resizing failed: no room", utcnow()
    conductor.report(ctx, iid, "server", "recovered", "started again by a restart", at(9))
    conductor.heartbeat(ctx, iid, GuestStatus.HEALTHY, BEAT, at(10))
    assert fault() == "Resizing failed: no room"


def test_addresses_held_outside_cove_are_skipped(db: Database) -> None:
    with db.session() as s:
        address = allocate_address(s, "127.42.9.0/29", new_id(), lambda a: a != "127.42.9.1")
    assert address == "127.42.9.2"
