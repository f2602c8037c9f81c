"""The task manager's monitor and workflows against a real SQLite control database. The
compute driver and the bus are the fakes of tests/fakes.py: what is tested is the bookkeeping
around them."""

from __future__ import annotations

import pytest

from cove.common.errors import RpcTimeout
from cove.common.ids import utcnow
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.instances import allocate_address
from cove.db.models import AddressAllocation, Instance
from cove.domain.guest import ConfigurationApplied, GuestSettings
from cove.domain.specs import DatabaseSpec
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.rpc.codec import to_wire
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from cove.taskmanager.delete import delete_instance
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.restart import restart_instance
from fakes import FakeBus, FakeDriver
from rows import add_instance


@pytest.fixture
def tc(tmp_path, migrated_db) -> TaskContext:
    settings = load_settings(data_dir=tmp_path, build_timeout=60)
    migrated_db(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/x"))
    # The guest calls the workflows make, answered as a guest agent answers them.
    bus = FakeBus()
    bus.answer("restart", None)
    bus.answer("apply_configuration", to_wire(ConfigurationApplied(restart_required=False)))
    return TaskContext(settings, db, bus, FakeDriver())  # type: ignore[arg-type]


def add(tc: TaskContext, task: Task, compute: ComputeState, age: float = 0.0) -> str:
    return add_instance(tc.db, task, compute, age)


def row(tc: TaskContext, iid: str) -> Instance:
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        return inst


def test_create_places_declares_then_prepares(tc: TaskContext) -> None:
    iid = add(tc, Task.BUILDING, ComputeState.BUILD)
    create_instance(tc, RequestContext(), iid, [DatabaseSpec("d")], [])
    inst = row(tc, iid)
    assert inst.address is not None and inst.compute_state == "ACTIVE"
    assert inst.agent_started_at is not None
    assert tc.bus.declared == [f"guestagent.{iid}"]  # type: ignore[attr-defined]
    assert tc.bus.sent[-1][:2] == (f"guestagent.{iid}", "prepare")  # type: ignore[attr-defined]
    assert tc.driver.created[0].ram_mb == 512  # type: ignore[attr-defined]


def test_a_build_given_up_meanwhile_removes_what_was_placed(tc: TaskContext) -> None:
    iid = add(tc, Task.BUILDING, ComputeState.BUILD)
    driver: FakeDriver = tc.driver  # type: ignore[assignment]
    original = driver.create

    def create_then_time_out(spec: GuestSettings) -> None:
        original(spec)
        with tc.db.session() as s:
            inst = s.get(Instance, iid)
            assert inst is not None
            inst.task = Task.BUILD_ERROR.value

    driver.create = create_then_time_out  # type: ignore[method-assign]
    create_instance(tc, RequestContext(), iid, [], [])
    assert driver.destroyed == [iid]
    assert not any(m == "prepare" for _, m, _ in tc.bus.sent)  # type: ignore[attr-defined]


def test_monitor_ends_overdue_builds_and_stale_restarts(tc: TaskContext) -> None:
    overdue = add(tc, Task.BUILDING, ComputeState.ACTIVE, age=120)
    young = add(tc, Task.BUILDING, ComputeState.ACTIVE, age=1)
    stale = add(tc, Task.REBOOTING, ComputeState.ACTIVE, age=3600)
    busy = add(tc, Task.REBOOTING, ComputeState.ACTIVE, age=5)
    stale_resize = add(tc, Task.RESIZING, ComputeState.ACTIVE, age=7200)
    resizing = add(tc, Task.RESIZING, ComputeState.ACTIVE, age=5)
    for iid in (overdue, young, stale, busy, stale_resize, resizing):
        tc.driver.place(iid)  # type: ignore[attr-defined]
    with tc.db.session() as s:
        s.get(Instance, stale_resize).address = "127.42.0.77"  # type: ignore[union-attr]
    check_instances(tc)
    assert row(tc, stale_resize).task == "NONE"
    assert "did not finish" in (row(tc, stale_resize).fault_message or "")
    # The row's size was given to the place and the guest again.
    assert [s.instance_id for s in tc.driver.updated] == [stale_resize]  # type: ignore[attr-defined]
    assert (f"guestagent.{stale_resize}", "apply_configuration") in [
        (t, m)
        for t, m, _a in tc.bus.sent  # type: ignore[attr-defined]
    ]
    assert row(tc, resizing).task == "RESIZING"
    assert row(tc, overdue).task == "BUILD_ERROR"
    assert "in time" in (row(tc, overdue).fault_message or "")
    assert row(tc, young).task == "BUILDING"
    assert row(tc, stale).task == "NONE"
    assert row(tc, busy).task == "REBOOTING"


def test_monitor_brings_back_a_dead_agent_and_records_it(tc: TaskContext) -> None:
    iid = add(tc, Task.NONE, ComputeState.ACTIVE)
    tc.driver.place(iid, state=ComputeState.SHUTDOWN)  # type: ignore[attr-defined]
    before = utcnow()
    check_instances(tc)
    assert tc.driver.revived == [iid]  # type: ignore[attr-defined]
    inst = row(tc, iid)
    assert inst.compute_state == "ACTIVE"
    assert inst.agent_started_at is not None and inst.agent_started_at >= before
    check_instances(tc)  # running now: nothing more to do
    assert tc.driver.revived == [iid]  # type: ignore[attr-defined]


def test_monitor_records_a_vanished_place(tc: TaskContext) -> None:
    iid = add(tc, Task.NONE, ComputeState.ACTIVE)
    check_instances(tc)  # the driver knows nothing of it
    assert row(tc, iid).compute_state == "ERROR"


def test_restart_ends_the_task_and_records_a_failure(tc: TaskContext) -> None:
    iid = add(tc, Task.REBOOTING, ComputeState.ACTIVE)
    tc.bus.answer("restart", RpcTimeout("no answer"))  # type: ignore[attr-defined]
    restart_instance(tc, RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.task == "NONE" and "Restart failed" in (inst.fault_message or "")
    # A later restart that works clears the old fault.
    with tc.db.session() as s:
        s.get(Instance, iid).task = Task.REBOOTING.value  # type: ignore[union-attr]
    tc.bus.answer("restart", None)  # type: ignore[attr-defined]
    restart_instance(tc, RequestContext(), iid)
    assert row(tc, iid).fault_message is None


def test_a_restart_no_longer_wanted_does_nothing(tc: TaskContext) -> None:
    iid = add(tc, Task.NONE, ComputeState.ACTIVE)
    restart_instance(tc, RequestContext(), iid)
    assert tc.bus.sent == []  # type: ignore[attr-defined]


def test_delete_releases_everything(tc: TaskContext) -> None:
    iid = add(tc, Task.DELETING, ComputeState.ACTIVE)
    with tc.db.session() as s:
        allocate_address(s, tc.settings.address_pool, iid)
    delete_instance(tc, RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.deleted and inst.address is None and inst.task == "NONE"
    assert tc.driver.destroyed == [iid]  # type: ignore[attr-defined]
    assert tc.bus.deleted == [f"guestagent.{iid}"]  # type: ignore[attr-defined]
    with tc.db.session() as s:
        assert s.query(AddressAllocation).filter_by(instance_id=iid).count() == 0


def test_a_failed_delete_is_recorded_and_can_be_retried(tc: TaskContext) -> None:
    iid = add(tc, Task.DELETING, ComputeState.ACTIVE)

    tc.driver.fail("destroy", OSError("disk on fire"))  # type: ignore[attr-defined]
    delete_instance(tc, RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.task == "DELETE_ERROR" and "disk on fire" in (inst.fault_message or "")
    assert not inst.deleted
