"""Notification events of a running Cove on RabbitMQ (``cove_rabbit``): an instance's create,
backup and delete, and an automatic failover, arrive, with Trove's names and payloads, on the
bus's ``notifications.info`` queue (read here with kombu, as an operator's consumer would), at
the operator's webhook (signed), and in the instance's recent events."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from typing import Any

import pytest
from datastores import DATASTORES
from harness import ControlPlane, wait_for
from kombu import Connection
from redis.exceptions import RedisError
from test_crash_recovery import server_pid

from receivers import EVENT_SECRET, Receiver

pytestmark = pytest.mark.e2e

WANTED = {
    "dbaas.instance_create.end",
    "trove.instance.create",
    "dbaas.backup_create.end",
    "dbaas.instance_delete.end",
    "trove.instance.delete",
}


def about(messages: list[dict[str, Any]], iid: str) -> dict[str, dict[str, Any]]:
    return {m["event_type"]: m for m in messages if m["payload"].get("instance_id") == iid}


def test_events_reach_the_bus_the_webhook_and_the_api(
    cove_rabbit: ControlPlane, rabbitmq_server: Any, event_receiver: Receiver
) -> None:
    plane = cove_rabbit
    users = [{"name": "app", "password": "events-Pass-1"}]
    iid = plane.create(name="events", datastore={"type": "redis"}, users=users)["id"]
    plane.wait_status(iid, "ACTIVE")
    backup = plane.http.post("/backups", json={"backup": {"name": "b", "instance": iid}})
    assert backup.status_code == 202, backup.text
    bid = backup.json()["backup"]["id"]
    wait_for(
        lambda: plane.http.get(f"/backups/{bid}").json()["backup"]["status"] == "COMPLETED",
        120,
        0.2,
        "the backup",
    )
    wait_for(lambda: "dbaas.backup_create.end" in kept(plane, iid), 60, 0.2, "the backup's event")
    listed = kept(plane, iid)
    assert {"dbaas.instance_create.end", "trove.instance.create"} <= set(listed)
    assert plane.http.delete(f"/backups/{bid}").status_code == 202
    assert plane.http.delete(f"/instances/{iid}").status_code == 202
    wait_for(lambda: plane.http.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "gone")

    # The webhook: every event, signed.
    wait_for(lambda: set(about(event_receiver.messages(), iid)) >= WANTED, 60, 0.2, "webhook")
    for headers, body in list(event_receiver.got):
        expected = hmac.new(EVENT_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Cove-Signature"] == f"sha256={expected}"
    hooked = about(event_receiver.messages(), iid)
    created = hooked["trove.instance.create"]["payload"]
    assert created["state"] == "active" and created["datastore"] == "redis"
    assert created["tenant_id"] and created["instance_type_id"] == "1"
    assert hooked["dbaas.backup_create.end"]["payload"]["backup_id"] == bid
    assert hooked["trove.instance.delete"]["payload"]["deleted_at"]

    # The bus: oslo.messaging's 2.0 envelope on notifications.info.
    seen = bus_messages(rabbitmq_server, lambda seen: set(about(seen, iid)) >= WANTED)
    on_bus = about(seen, iid)
    assert set(on_bus) >= WANTED, sorted(on_bus)
    assert (
        on_bus["trove.instance.create"]["message_id"]
        == (hooked["trove.instance.create"]["message_id"])
    )


def bus_messages(rabbitmq_server: Any, done: Any) -> list[dict[str, Any]]:
    """The notifications read off ``notifications.info`` until ``done(read so far)``."""
    seen: list[dict[str, Any]] = []
    with Connection(rabbitmq_server.vhost("e2e")) as conn:
        queue = conn.SimpleQueue("notifications.info")
        deadline = time.monotonic() + 60
        while not done(seen) and time.monotonic() < deadline:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                continue
            envelope = json.loads(message.body)
            assert envelope["oslo.version"] == "2.0"
            seen.append(json.loads(envelope["oslo.message"]))
            message.ack()
        queue.close()
    return seen


def test_an_automatic_failover_reaches_the_bus_and_the_webhook(
    cove_rabbit: ControlPlane, rabbitmq_server: Any, event_receiver: Receiver
) -> None:
    """The primary's server killed, a replica takes its place by itself: told as Trove's eject
    event about the old primary, to the operator's consumers on the bus and at the webhook."""
    plane = cove_rabbit
    users = [{"name": "app", "password": "events-Pass-2"}]
    old = plane.create(name="ev-primary", datastore={"type": "redis"}, users=users)["id"]
    plane.wait_status(old, "ACTIVE")
    resp = plane.http.post(
        "/instances", json={"instance": {"name": "ev-replica", "replica_of": old}}
    )
    assert resp.status_code == 200, resp.text
    replica = resp.json()["instance"]["id"]
    plane.wait_status(replica, "ACTIVE", timeout=240)
    # A replica that has what the primary wrote reports its place: it can take over.
    redis = DATASTORES["redis"]
    with redis.login(plane.instance(old), "app", "events-Pass-2", "") as conn:
        redis.add(conn, "a")

    def copied() -> bool:
        try:
            with redis.login(plane.instance(replica), "app", "events-Pass-2", "") as conn:
                return "a" in redis.values(conn)
        except (OSError, RedisError):
            return False

    wait_for(copied, 60, 0.1, "the replica's copy")
    pid = wait_for(lambda: server_pid(plane, old, "redis"), 30, what="the primary's server")
    os.kill(pid, signal.SIGKILL)
    told = "dbaas.instance_eject.end"
    wait_for(lambda: told in about(event_receiver.messages(), old), 120, 0.2, "the webhook")
    hooked = about(event_receiver.messages(), old)[told]
    assert hooked["payload"]["instance_id"] == old
    assert hooked["payload"]["server_type"] == "taskmanager"
    on_bus = about(bus_messages(rabbitmq_server, lambda seen: told in about(seen, old)), old)
    assert on_bus[told]["message_id"] == hooked["message_id"]

    def gone() -> bool:
        left = plane.http.get("/instances").json().get("instances") or []
        for inst in left:  # a replica goes first: its source is refused while it has one
            plane.http.delete(f"/instances/{inst['id']}")
        return not left

    wait_for(gone, 240, 1.0, "the group deleted")


def kept(plane: ControlPlane, iid: str) -> list[str]:
    resp = plane.http.get(f"/instances/{iid}/events")
    assert resp.status_code == 200, resp.text
    return [e["event_type"] for e in resp.json()["events"]]
