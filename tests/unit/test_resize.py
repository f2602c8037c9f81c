"""The resize action: checks made before anything changes, the size recorded with the task, and
the task manager bringing the guest to it or putting the old size back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from accounts import add_account, password_auth
from cove.api.context import build_context
from cove.common.errors import RpcTimeout
from cove.common.ids import utcnow
from cove.common.settings import load_settings
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import GuestState, Instance, Quota
from cove.db.networks import sync_default_network
from cove.db.sealed import ResizeArgs
from cove.domain.guest import ConfigurationApplied
from cove.domain.specs import Resize
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.rpc.codec import to_wire
from cove.taskmanager.context import TaskContext
from cove.taskmanager.service import TaskManager
from fakes import ANY, FakeBus, FakeDriver


@pytest.fixture
def env(tmp_path, monkeypatch, migrated_db, api_app):
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    settings = load_settings(data_dir=tmp_path, max_volume_size=20, max_ram_per_project=8000)
    migrated_db(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/usr/lib/postgresql/15/bin"))
        sync_default_network(s, settings)
    # The guest calls a resize makes, answered as a guest agent answers them.
    bus = FakeBus()
    bus.answer("min_ram_mb", 128)
    bus.answer("apply_configuration", to_wire(ConfigurationApplied(restart_required=False)))
    bus.answer("restart", None)
    context = build_context(settings, db, bus)  # type: ignore[arg-type]
    client = TestClient(api_app(context))
    project_id, password = add_account(db, "p1", "u1", "member", project_id="p1")
    token, _claims = context.identity.authenticate(password_auth("u1", password, project_id))
    client.headers["X-Auth-Token"] = token
    tc = TaskContext(settings, db, bus, FakeDriver())  # type: ignore[arg-type]
    yield client, bus, tc
    db.dispose()


def active_instance(client: TestClient, tc: TaskContext, flavor: str = "1", size: int = 2) -> str:
    body = {
        "instance": {
            "name": "db",
            "flavorRef": flavor,
            "volume": {"size": size},
            "datastore": {"type": "postgresql", "version": "15"},
        }
    }
    resp = client.post("/v1.0/p1/instances", json=body)
    assert resp.status_code == 200, resp.text
    iid = resp.json()["instance"]["id"]
    now = utcnow()
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.task = Task.NONE.value
        inst.compute_state = ComputeState.ACTIVE.value
        inst.address = "127.42.0.9"
        inst.agent_started_at = now
        s.add(GuestState(instance_id=iid, status="healthy", payload="{}", heartbeat_at=now))
    tc.driver.place(iid)  # type: ignore[attr-defined]
    return iid


def action(client: TestClient, iid: str, resize: Any):
    return client.post(f"/v1.0/p1/instances/{iid}/action", json={"resize": resize})


def fault(resp, status: int, name: str) -> str:
    assert resp.status_code == status, resp.text
    return resp.json()[name]["message"]


def row(tc: TaskContext, iid: str) -> Instance:
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        return inst


def test_flavor_resize_records_the_new_flavor_and_asks_the_task_manager(env):
    client, bus, tc = env
    iid = active_instance(client, tc)
    resp = action(client, iid, {"flavorRef": "2"})
    assert resp.status_code == 202, resp.text
    assert bus.casts[-1] == ("taskmanager", "resize_instance", {"instance_id": iid})
    inst = row(tc, iid)
    assert inst.task == "RESIZING" and inst.flavor_id == "2"
    # The old size waits sealed on the row, for whichever task manager runs the resize.
    assert tc.sealer.open(iid, inst.task_args, ResizeArgs).resize == Resize(
        iid, old_flavor_id="1", new_flavor_id="2"
    )
    shown = client.get(f"/v1.0/p1/instances/{iid}").json()["instance"]
    assert shown["status"] == "RESIZE" and shown["flavor"]["id"] == "2"
    # One resize at a time.
    fault(action(client, iid, {"flavorRef": "3"}), 422, "unprocessableEntity")


def test_flavor_resize_refusals(env):
    client, bus, tc = env
    iid = active_instance(client, tc, flavor="2")
    assert "differ" in fault(action(client, iid, {"flavorRef": "2"}), 400, "badRequest")
    assert "differ" in fault(action(client, iid, {"flavorRef": "small"}), 400, "badRequest")
    fault(action(client, iid, {"flavorRef": "99"}), 404, "itemNotFound")
    fault(action(client, iid, {"flavorRef": None}), 400, "badRequest")
    fault(action(client, iid, {"flavorRef": "1", "volume": {"size": 3}}), 400, "badRequest")
    fault(action(client, iid, {"disk": 3}), 400, "badRequest")
    fault(action(client, iid, "big"), 400, "badRequest")
    # The guest says its data needs more memory than the tiny flavor has.
    bus.answer("min_ram_mb", 1000)
    message = fault(action(client, iid, {"flavorRef": "1"}), 400, "badRequest")
    assert "too small" in message and "1000 MB" in message
    # Growing past the RAM quota (8000 MB, 2048 in use): large has 8192.
    message = fault(action(client, iid, {"flavorRef": "4"}), 413, "overLimit")
    assert "ram" in message
    assert bus.casts[-1][1] == "create_instance"  # nothing was asked of the task manager
    inst = row(tc, iid)
    assert inst.task == "NONE" and inst.flavor_id == "2"


def test_volume_resize_only_grows_within_quota(env):
    client, bus, tc = env
    iid = active_instance(client, tc, size=4)
    assert "larger" in fault(action(client, iid, {"volume": {"size": 4}}), 400, "badRequest")
    assert "larger" in fault(action(client, iid, {"volume": {"size": 3}}), 400, "badRequest")
    fault(action(client, iid, {"volume": {"size": "x"}}), 400, "badRequest")
    fault(action(client, iid, {"volume": {"size": True}}), 400, "badRequest")
    fault(action(client, iid, {"volume": 5}), 400, "badRequest")
    fault(action(client, iid, {"volume": {"size": 21}}), 413, "overLimit")
    resp = action(client, iid, {"volume": {"size": 6}})
    assert resp.status_code == 202, resp.text
    assert bus.casts[-1][2] == {"instance_id": iid}
    assert row(tc, iid).volume_size == 6
    assert tc.sealer.open(iid, row(tc, iid).task_args, ResizeArgs).resize == Resize(
        iid, old_volume_size=4, new_volume_size=6
    )


def test_volume_quota_counts_the_growth(env):
    client, _bus, tc = env
    iid = active_instance(client, tc, size=4)
    active_instance(client, tc, size=4)
    with tc.db.session() as s:
        s.add(Quota(project_id="p1", resource="volumes", hard_limit=10))  # 8 GB in use
    message = fault(action(client, iid, {"volume": {"size": 7}}), 413, "overLimit")
    assert "volumes" in message


def test_a_resize_cast_lost_with_the_bus_is_kept_for_the_task_managers(env):
    client, bus, tc = env
    iid = active_instance(client, tc)
    bus.fail(ANY, RpcTimeout("the bus is down"), calls=False)
    resp = action(client, iid, {"flavorRef": "2"})
    assert resp.status_code == 202, resp.text
    inst = row(tc, iid)
    # Recorded with what it needs: the monitor of any task manager runs it.
    assert inst.task == "RESIZING" and inst.flavor_id == "2" and inst.task_args is not None
    bus.fail(ANY, None)
    with tc.db.session() as s:
        s.get(Instance, iid).task_started_at = utcnow() - timedelta(seconds=60)  # type: ignore[union-attr]
    manager = TaskManager(tc)
    try:
        manager.resume()
        manager._pool.shutdown(wait=True)
    finally:
        manager.stop()
    assert row(tc, iid).task == "NONE" and row(tc, iid).flavor_id == "2"


def test_task_manager_applies_the_new_flavor_and_restarts(env):
    client, bus, tc = env
    iid = active_instance(client, tc)
    assert action(client, iid, {"flavorRef": "2"}).status_code == 202
    _t, _m, args = bus.casts[-1]
    TaskManager(tc).endpoints()["resize_instance"](RequestContext(), **args)
    methods = [m for _t, m, _a in bus.calls if m != "min_ram_mb"]
    assert methods == ["apply_configuration", "restart"]
    apply_args = next(a for _t, m, a in bus.calls if m == "apply_configuration")
    assert apply_args["ram_mb"] == 2048
    assert tc.driver.updated[-1].ram_mb == 2048  # type: ignore[attr-defined]
    inst = row(tc, iid)
    assert inst.task == "NONE" and inst.flavor_id == "2" and inst.fault_message is None


def test_a_failed_resize_puts_the_old_flavor_back(env):
    client, bus, tc = env
    iid = active_instance(client, tc)
    assert action(client, iid, {"flavorRef": "2"}).status_code == 202
    _t, _m, args = bus.casts[-1]
    bus.answer("restart", RpcTimeout("restart: no answer"))
    TaskManager(tc).endpoints()["resize_instance"](RequestContext(), **args)
    inst = row(tc, iid)
    assert inst.task == "NONE" and inst.flavor_id == "1"
    assert "Resize failed" in (inst.fault_message or "")
    # The guest was given the old memory settings again.
    applied = [a["ram_mb"] for _t, m, a in bus.calls if m == "apply_configuration"]
    assert applied == [2048, 512]


def test_volume_resize_needs_no_restart(env):
    client, bus, tc = env
    iid = active_instance(client, tc, size=2)
    assert action(client, iid, {"volume": {"size": 5}}).status_code == 202
    _t, _m, args = bus.casts[-1]
    TaskManager(tc).endpoints()["resize_instance"](RequestContext(), **args)
    assert [m for _t, m, _a in bus.calls] == ["apply_configuration"]
    assert tc.driver.updated[-1].volume_gb == 5  # type: ignore[attr-defined]
    with tc.db.session() as s:
        assert s.scalar(select(Instance.task).where(Instance.id == iid)) == "NONE"
