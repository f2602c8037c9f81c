"""The task manager's monitor and workflows against a real SQLite control database. The
compute driver and the bus are the fakes of tests/fakes.py: what is tested is the bookkeeping
around them."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from cove.common.errors import GuestError, RpcTimeout, ServiceUnavailable
from cove.common.ids import utcnow
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.instances import allocate_address
from cove.db.models import AddressAllocation, Instance
from cove.db.sealed import CreateArgs, ResizeArgs
from cove.domain.guest import ConfigurationApplied, GuestSettings
from cove.domain.specs import DatabaseSpec, Resize, UserSpec
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.rpc.codec import to_wire
from cove.storage import configured_store, open_store
from cove.taskmanager import leases
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import create_instance
from cove.taskmanager.delete import delete_instance
from cove.taskmanager.monitor import check_instances
from cove.taskmanager.restart import restart_instance
from cove.taskmanager.service import TaskManager
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
    bus.answer("prepare", None)
    bus.answer("apply_configuration", to_wire(ConfigurationApplied(restart_required=False)))
    return TaskContext(settings, db, bus, FakeDriver())  # type: ignore[arg-type]


def add(tc: TaskContext, task: Task, compute: ComputeState, age: float = 0.0) -> str:
    return add_instance(tc.db, task, compute, age)


def row(tc: TaskContext, iid: str) -> Instance:
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        return inst


def building(tc: TaskContext, databases=(), users=(), age: float = 0.0) -> str:
    """A BUILDING instance with its request sealed on the row, as the API records it."""
    iid = add(tc, Task.BUILDING, ComputeState.BUILD, age)
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.task_args = tc.sealer.seal(iid, CreateArgs(list(databases), list(users)))
    return iid


def test_create_places_declares_prepares_and_ends_the_build(tc: TaskContext) -> None:
    iid = building(tc, [DatabaseSpec("d")], [UserSpec("u", "pw-1", databases=("d",))])
    TaskManager(tc).create_instance(RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.address is not None and inst.compute_state == "ACTIVE"
    assert inst.agent_started_at is not None
    # prepare answered: the build ended here, and what was sealed for it is gone.
    assert inst.task == "NONE" and inst.task_args is None and inst.task_owner is None
    assert tc.bus.declared == [f"guestagent.{iid}"]  # type: ignore[attr-defined]
    topic, method, args = tc.bus.sent[-1]  # type: ignore[attr-defined]
    assert (topic, method) == (f"guestagent.{iid}", "prepare")
    assert [d["name"] for d in args["databases"]] == ["d"]
    assert args["users"][0]["password"] == "pw-1"
    assert tc.driver.created[0].ram_mb == 512  # type: ignore[attr-defined]


def test_a_failed_prepare_ends_the_build_in_error(tc: TaskContext) -> None:
    iid = building(tc)
    tc.bus.answer("prepare", GuestError("initdb failed"))  # type: ignore[attr-defined]
    TaskManager(tc).create_instance(RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.task == "BUILD_ERROR" and "initdb failed" in (inst.fault_message or "")
    assert inst.task_args is None


def test_prepare_is_asked_again_when_the_bus_went_away(tc: TaskContext) -> None:
    iid = building(tc)
    tc.bus.answer("prepare", ServiceUnavailable("the message bus is unreachable"))  # type: ignore[attr-defined]
    bus: FakeBus = tc.bus  # type: ignore[assignment]
    original = bus.call
    attempts: list[str] = []

    def flaky(topic, method, args, context=None, timeout=30.0):  # type: ignore[no-untyped-def]
        if method == "prepare":
            attempts.append(method)
            if len(attempts) == 3:
                bus.answer("prepare", None)
        return original(topic, method, args, context, timeout)

    bus.call = flaky  # type: ignore[method-assign]
    TaskManager(tc).create_instance(RequestContext(), iid)
    assert len(attempts) == 3 and row(tc, iid).task == "NONE"


def test_a_build_without_its_sealed_request_ends_in_error(tc: TaskContext) -> None:
    iid = add(tc, Task.BUILDING, ComputeState.BUILD)
    TaskManager(tc).create_instance(RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.task == "BUILD_ERROR" and "not recorded" in (inst.fault_message or "")


def test_a_build_given_up_meanwhile_removes_what_was_placed(tc: TaskContext) -> None:
    iid = building(tc)
    driver: FakeDriver = tc.driver  # type: ignore[assignment]
    original = driver.create

    def create_then_time_out(spec: GuestSettings) -> None:
        original(spec)
        with tc.db.session() as s:
            inst = s.get(Instance, iid)
            assert inst is not None
            inst.task = Task.BUILD_ERROR.value

    driver.create = create_then_time_out  # type: ignore[method-assign]
    create_instance(tc, RequestContext(), iid, threading.Event())
    assert driver.destroyed == [iid]
    assert not any(m == "prepare" for _, m, _ in tc.bus.sent)  # type: ignore[attr-defined]


def test_a_task_held_by_another_task_manager_is_left_to_it(tc: TaskContext) -> None:
    iid = building(tc)
    assert leases.claim(tc.db, iid, Task.BUILDING, "other:1:x")
    TaskManager(tc).create_instance(RequestContext(), iid)
    assert row(tc, iid).task == "BUILDING" and row(tc, iid).task_owner == "other:1:x"
    assert not tc.driver.created  # type: ignore[attr-defined]


def test_orphans_are_expired_leases_and_old_tasks_without_one(tc: TaskContext) -> None:
    fresh = building(tc)  # its cast may still be on its way
    old = building(tc, age=60)  # its cast was lost
    dead = building(tc)  # its task manager died
    alive = building(tc)
    assert leases.claim(tc.db, dead, Task.BUILDING, "dead:1:x")
    assert leases.claim(tc.db, alive, Task.BUILDING, "alive:1:x")
    with tc.db.session() as s:
        s.get(Instance, dead).task_lease_until = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    found = {o.instance_id for o in leases.orphans(tc.db, "local")}
    assert found == {old, dead}
    assert fresh not in found and alive not in found


def test_the_monitor_takes_over_a_dead_task_managers_build(tc: TaskContext) -> None:
    iid = building(tc, [DatabaseSpec("d")])
    assert leases.claim(tc.db, iid, Task.BUILDING, "dead:1:x")
    with tc.db.session() as s:
        s.get(Instance, iid).task_lease_until = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    manager = TaskManager(tc)
    try:
        manager.resume()
        manager._pool.shutdown(wait=True)
    finally:
        manager.stop()
    assert row(tc, iid).task == "NONE" and row(tc, iid).task_owner is None
    assert [m for _, m, _ in tc.bus.sent].count("prepare") == 1  # type: ignore[attr-defined]


def test_a_lease_is_renewed_while_held_and_lost_when_taken(tc: TaskContext, monkeypatch) -> None:
    monkeypatch.setattr(leases, "RENEW_SECONDS", 0.05)
    iid = building(tc)
    assert leases.claim(tc.db, iid, Task.BUILDING, "me")
    with leases.held(tc.db, iid, "me") as lost:
        first = row(tc, iid).task_lease_until
        wait_until(lambda: row(tc, iid).task_lease_until != first)
        with tc.db.session() as s:
            s.get(Instance, iid).task_owner = "someone else"  # type: ignore[union-attr]
        assert lost.wait(10)
    assert row(tc, iid).task_owner == "someone else"


def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


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


def test_delete_removes_the_published_guest_logs(tc: TaskContext) -> None:
    iid = add(tc, Task.DELETING, ComputeState.ACTIVE)
    other = add(tc, Task.NONE, ComputeState.ACTIVE)
    store = open_store(configured_store(tc.settings, tc.settings.guest_log_container))
    for instance_id in (iid, other):
        store.put(f"{instance_id}/general/log-000000", [b"sealed"])
        store.put(f"{instance_id}/general.metafile", [b"{}"])
    delete_instance(tc, RequestContext(), iid)
    assert store.keys(f"{iid}/") == [] and store.size(f"{iid}/general.metafile") is None
    assert store.keys(f"{other}/") == [f"{other}/general.metafile", f"{other}/general/log-000000"]


def test_a_failed_delete_is_recorded_and_can_be_retried(
    tc: TaskContext, caplog: pytest.LogCaptureFixture
) -> None:
    iid = add(tc, Task.DELETING, ComputeState.ACTIVE)

    tc.driver.fail("destroy", OSError("disk on fire"))  # type: ignore[attr-defined]
    delete_instance(tc, RequestContext(), iid)
    inst = row(tc, iid)
    assert inst.task == "DELETE_ERROR" and inst.fault_message
    assert not inst.deleted
    # Not a Cove error: the tenant reads a generic fault, the log has the details under the
    # fault's reference.
    assert "disk on fire" not in inst.fault_message and "OSError" not in inst.fault_message
    reference = inst.fault_message.split("reference ")[1].split(")")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and "disk on fire" in str(logged[0].exc_info)


def test_a_task_manager_gone_from_this_host_is_not_waited_for(tc: TaskContext) -> None:
    from pathlib import Path

    # A pid above the kernel's limit never runs: no race with a reused pid.
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    owner = f"{leases._here()}:{gone}:x"
    iid = building(tc)
    assert leases.claim(tc.db, iid, Task.BUILDING, owner)  # an unexpired lease of a dead pid
    elsewhere = building(tc)
    assert leases.claim(tc.db, elsewhere, Task.BUILDING, f"another-host:{gone}:x")
    (orphan,) = leases.orphans(tc.db, "local")
    assert (orphan.instance_id, orphan.dead_owner) == (iid, owner)
    assert not leases.claim(tc.db, iid, Task.BUILDING, "me")
    assert leases.claim(tc.db, iid, Task.BUILDING, "me", dead_owner=owner)


def test_restarts_and_resizes_nobody_holds_are_taken_over(tc: TaskContext) -> None:
    restarting = add(tc, Task.REBOOTING, ComputeState.ACTIVE, age=60)
    resizing = add(tc, Task.RESIZING, ComputeState.ACTIVE, age=60)
    with tc.db.session() as s:
        for iid in (restarting, resizing):
            s.get(Instance, iid).address = f"127.42.0.{len(iid) % 200 + 2 + (iid == resizing)}"  # type: ignore[union-attr]
            tc.driver.place(iid)  # type: ignore[attr-defined]
        row_ = s.get(Instance, resizing)
        assert row_ is not None
        row_.flavor_id = "2"
        row_.task_args = tc.sealer.seal(
            resizing, ResizeArgs(Resize(resizing, old_flavor_id="1", new_flavor_id="2"))
        )
    manager = TaskManager(tc)
    try:
        manager.resume()
        manager._pool.shutdown(wait=True)
    finally:
        manager.stop()
    assert row(tc, restarting).task == "NONE" and row(tc, resizing).task == "NONE"
    assert row(tc, resizing).flavor_id == "2" and row(tc, resizing).fault_message is None
    calls = [(t, m) for t, m, _ in tc.bus.calls]  # type: ignore[attr-defined]
    assert (f"guestagent.{restarting}", "restart") in calls
    assert (f"guestagent.{resizing}", "apply_configuration") in calls
    assert (f"guestagent.{resizing}", "restart") in calls
    assert tc.driver.updated[-1].ram_mb == 2048  # type: ignore[attr-defined]
