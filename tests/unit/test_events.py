"""Notification events (``cove.domain.events``, ``cove.taskmanager.events``): what the task
manager tells when its tasks end, with Trove's names and payload fields, kept as the
instance's recent events, published on the bus and listed by the API. The webhook's delivery
is in tests/integration/test_event_webhook.py; events on a real RabbitMQ and webhook over a
running Cove in tests/e2e/test_events_flow.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cove.common.settings import load_settings
from cove.db import events as recorded
from cove.db.engine import Database
from cove.db.models import Flavor, Instance
from cove.db.sealed import ResizeArgs
from cove.domain import events
from cove.domain.events import Event, InstanceFacts
from cove.domain.specs import Resize
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.service import TaskManager
from fakes import FakeBus, FakeDriver
from rows import add_building, add_instance

CTX = RequestContext(project_id="p", user_id="u-1", request_id="req-1")


@pytest.fixture
def tc(tmp_path: Path, migrated_db: Any) -> TaskContext:
    """A task manager's context on a fake bus whose guests answer, sending events to the
    bus's ``notifications`` topic."""
    settings = load_settings(data_dir=tmp_path, event_topic="notifications")
    migrated_db(settings.database_url)
    bus = FakeBus()
    for method in ("prepare", "resize", "apply_configuration", "stop", "restart"):
        bus.answer(method, None)
    return TaskContext(settings, Database(settings.database_url), bus, FakeDriver())  # type: ignore[arg-type]


def kept(tc: TaskContext, iid: str) -> list[dict[str, Any]]:
    with tc.db.session() as s:
        return recorded.recent(s, iid, 100)


def test_a_create_tells_its_end_and_the_instance_it_made(tc: TaskContext) -> None:
    iid = add_building(tc.db, tc.sealer)
    TaskManager(tc).create_instance(CTX, iid)
    messages = kept(tc, iid)
    assert {m["event_type"] for m in messages} == {
        "trove.instance.create",
        "dbaas.instance_create.end",
    }
    usage = next(m for m in messages if m["event_type"] == "trove.instance.create")
    payload = usage["payload"]
    assert payload["instance_id"] == iid and payload["tenant_id"] == "p"
    assert payload["user_id"] == "u-1" and payload["state"] == "active"
    assert payload["instance_type_id"] == "1" and payload["instance_size"] == 512
    assert payload["instance_type"] and payload["region"] == tc.settings.region
    assert payload["datastore"] == "postgresql" and payload["volume_size"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", usage["timestamp"])
    assert usage["priority"] == "INFO" and usage["publisher_id"].startswith("taskmanager.")
    action = next(m for m in messages if m["event_type"] == "dbaas.instance_create.end")
    assert action["payload"]["request_id"] == "req-1"
    assert action["payload"]["server_type"] == "taskmanager"
    # The same messages went to the bus's notifications.info queue.
    bus: FakeBus = tc.bus  # type: ignore[assignment]
    assert sorted(m["event_type"] for t, m in bus.notified if t == "notifications.info") == sorted(
        m["event_type"] for m in messages
    )


def test_a_failed_create_tells_its_error_and_no_usage(tc: TaskContext) -> None:
    iid = add_building(tc.db, tc.sealer)
    tc.bus.answer("prepare", RuntimeError("initdb failed"))  # type: ignore[attr-defined]
    TaskManager(tc).create_instance(CTX, iid)
    types = [m["event_type"] for m in kept(tc, iid)]
    assert types == ["dbaas.instance_create.error"]
    error = kept(tc, iid)[0]["payload"]
    assert error["instance_id"] == iid and error["message"]


def test_a_resize_tells_what_changed_and_from_what(tc: TaskContext) -> None:
    iid = add_instance(tc.db, Task.RESIZING)
    change = Resize(iid, old_flavor_id="1", new_flavor_id="2")
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.flavor_id = "2"  # the API records the new flavor, and the resize to do
        inst.task_args = tc.sealer.seal(iid, ResizeArgs(change))
    TaskManager(tc).resize_instance(CTX, iid)
    by_type = {m["event_type"]: m["payload"] for m in kept(tc, iid)}
    assert by_type["dbaas.instance_resize_instance.end"]["new_flavor_id"] == "2"
    modified = by_type["trove.instance.modify_flavor"]
    assert modified["instance_type_id"] == "2" and modified["modify_at"]
    # The flavor it left: the row names the new one already.
    old, new = (by_flavor(tc, f) for f in ("1", "2"))
    assert (modified["old_instance_size"], modified["instance_size"]) == (old, new) != (old, old)


def test_a_volume_resize_tells_the_size_it_left(tc: TaskContext) -> None:
    iid = add_instance(tc.db, Task.RESIZING)
    change = Resize(iid, old_volume_size=1, new_volume_size=3)
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.volume_size = 3
        inst.task_args = tc.sealer.seal(iid, ResizeArgs(change))
    TaskManager(tc).resize_instance(CTX, iid)
    by_type = {m["event_type"]: m["payload"] for m in kept(tc, iid)}
    assert by_type["dbaas.instance_resize_volume.end"]["new_size"] == 3
    modified = by_type["trove.instance.modify_volume"]
    assert (modified["old_volume_size"], modified["volume_size"]) == (1, 3)
    assert "trove.instance.modify_flavor" not in by_type


def test_a_task_that_did_not_end_here_tells_nothing(tc: TaskContext) -> None:
    iid = add_instance(tc.db, Task.BUILDING, ComputeState.BUILD)
    manager = TaskManager(tc)
    # Its lease is lost at once: the build ends elsewhere, and is told there.
    with manager.ends.instance_task(Task.BUILDING, iid, CTX):
        pass
    assert kept(tc, iid) == []
    assert not tc.bus.notified  # type: ignore[attr-defined]


def by_flavor(tc: TaskContext, flavor_id: str) -> int:
    with tc.db.session() as s:
        flavor = s.get(Flavor, flavor_id)
        assert flavor is not None
        return flavor.ram


def test_a_delete_tells_when(tc: TaskContext) -> None:
    iid = add_instance(tc.db, Task.DELETING)
    TaskManager(tc).delete_instance(CTX, iid)
    by_type = {m["event_type"]: m["payload"] for m in kept(tc, iid)}
    assert by_type["trove.instance.delete"]["deleted_at"]
    assert by_type["trove.instance.delete"]["state"] == "deleted"
    assert "dbaas.instance_delete.end" in by_type


def test_a_bus_that_is_away_loses_only_the_bus_copy(tc: TaskContext) -> None:
    # Not only the bus being away: a broker that refuses the queue (declared otherwise).
    refused = RuntimeError("PRECONDITION_FAILED - inequivalent arg 'durable'")
    tc.bus.fail("notify", refused)  # type: ignore[attr-defined]
    iid = add_building(tc.db, tc.sealer)
    TaskManager(tc).create_instance(CTX, iid)
    assert {m["event_type"] for m in kept(tc, iid)} == {
        "trove.instance.create",
        "dbaas.instance_create.end",
    }


def test_an_instance_keeps_only_its_newest_events(tc: TaskContext) -> None:
    iid = add_instance(tc.db)
    with tc.db.session() as s:
        for n in range(recorded.KEPT + 5):
            moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
            payload = {"instance_id": iid, "n": n}
            recorded.record(s, Event(f"test.{n}", payload, "taskmanager.h", moment), "p")
    messages = kept(tc, iid)
    assert len(messages) == recorded.KEPT
    assert messages[0]["payload"]["n"] == recorded.KEPT + 4  # newest first


def test_usage_payload_has_trove_fields() -> None:
    facts = InstanceFacts(
        instance_id="i",
        name="db",
        tenant_id="t",
        status="ACTIVE",
        flavor_id="3",
        flavor_name="medium",
        ram_mb=2048,
        volume_gb=10,
        datastore="mariadb",
        datastore_version="10.11",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        region="r",
    )
    now = datetime(2026, 2, 1, tzinfo=UTC)
    payload = events.usage("trove.instance.modify_volume", facts, "u", now, old_volume_size=5)
    for field in (
        "tenant_id", "user_id", "instance_id", "instance_name", "instance_type",
        "instance_type_id", "instance_size", "launched_at", "created_at", "state",
        "state_description", "region", "availability_zone", "nova_instance_id", "service_id",
        "volume_size", "old_volume_size", "modify_at",
    ):  # fmt: skip
        assert field in payload, field
    assert payload["created_at"] == "2026-01-02T03:04:05Z"  # Trove's isotime
    assert payload["launched_at"] == payload["modify_at"] == "2026-02-01T00:00:00Z"
    assert events.action_type("backup", failed=False) == "dbaas.backup_create.end"
    assert events.action_type("eject", failed=True) == "dbaas.instance_eject.error"


def test_the_api_lists_an_instances_newest_events(member_api: Any) -> None:
    client, context, project = member_api
    iid = add_instance(context.db, Task.NONE)
    other = add_instance(context.db, Task.NONE)  # of project p: not the member's
    with context.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.project_id = project
        for n in range(3):
            moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
            event = Event(f"test.{n}", {"instance_id": iid}, "taskmanager.h", moment)
            recorded.record(s, event, project)
    resp = client.get(f"/v1.0/{project}/instances/{iid}/events", params={"limit": 2})
    assert resp.status_code == 200, resp.text
    shown = resp.json()["events"]
    assert [e["event_type"] for e in shown] == ["test.2", "test.1"]
    assert shown[0]["timestamp"] == "2026-01-01 00:00:02.000000"
    too_many = client.get(f"/v1.0/{project}/instances/{iid}/events", params={"limit": 1000})
    assert too_many.status_code == 400 and "badRequest" in too_many.json()
    hidden = client.get(f"/v1.0/{project}/instances/{other}/events")
    assert hidden.status_code == 404 and "itemNotFound" in hidden.json()
