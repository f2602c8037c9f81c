"""Notification events, as Trove sends them: what happened to an instance or a backup, for an
operator's billing, audit or alerting (``docs/operator-guide.md``, "Events").

Two families, both with Trove's names and payload fields:

* usage events, once the change is done: ``trove.instance.create`` (the instance serves),
  ``trove.instance.delete``, ``trove.instance.modify_flavor`` and
  ``trove.instance.modify_volume``; their payload describes the instance (:func:`usage`);
* action events, when the task manager's work ends: ``dbaas.<action>.end`` or
  ``dbaas.<action>.error`` (``instance_create``, ``instance_delete``, ``instance_restart``,
  ``instance_resize_instance``, ``instance_resize_volume``, ``instance_detach``,
  ``instance_promote``, ``instance_eject``, ``instance_rejoin`` (Cove's), ``backup_create``,
  and for clusters ``cluster_create``, ``cluster_grow``, ``cluster_shrink``,
  ``cluster_restart`` and ``cluster_delete``, once every member's part is done);
  their payload names what was acted on (:func:`action`), and an error's carries its
  ``message``.

Pure: the task manager builds the facts (:class:`InstanceFacts`), these functions the events,
and ``cove.taskmanager.events`` sends them (the bus, a webhook, the instance's recent events).
Where Trove names a Nova or Cinder object Cove has none, the field is null; Cove adds
``datastore`` and ``datastore_version``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Every notification's priority (Trove sends all at INFO).
PRIORITY = "INFO"

#: The action event of each task manager task (its ``dbaas.<action>`` stem).
ACTIONS = {
    "create": "instance_create",
    "delete": "instance_delete",
    "restart": "instance_restart",
    "resize_flavor": "instance_resize_instance",
    "resize_volume": "instance_resize_volume",
    "detach": "instance_detach",
    "promote": "instance_promote",
    "eject": "instance_eject",
    "rejoin": "instance_rejoin",
    "backup": "backup_create",
    "cluster_create": "cluster_create",
    "cluster_grow": "cluster_grow",
    "cluster_shrink": "cluster_shrink",
    "cluster_restart": "cluster_restart",
    "cluster_delete": "cluster_delete",
}


@dataclass(frozen=True)
class InstanceFacts:
    """An instance as its events describe it."""

    instance_id: str
    name: str
    tenant_id: str
    status: str
    flavor_id: str
    flavor_name: str
    ram_mb: int
    volume_gb: int
    datastore: str
    datastore_version: str
    created: datetime
    region: str


@dataclass(frozen=True)
class Event:
    """One notification: Trove's message fields (``oslo.messaging``'s)."""

    event_type: str
    payload: dict[str, Any]
    publisher_id: str
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    priority: str = PRIORITY

    @property
    def instance_id(self) -> str | None:
        found = self.payload.get("instance_id")
        return found if isinstance(found, str) else None

    def message(self) -> dict[str, Any]:
        """The message as consumers of Trove's notifications read it (the time as Trove
        writes it: ``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
        return {
            "message_id": self.message_id,
            "publisher_id": self.publisher_id,
            "event_type": self.event_type,
            "priority": self.priority,
            "payload": self.payload,
            "timestamp": trove_time(self.timestamp),
        }


def trove_time(moment: datetime) -> str:
    """``moment`` as Trove's notifications write times."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def iso_time(moment: datetime) -> str:
    """``moment`` as Trove's usage payloads write times (``YYYY-MM-DDTHH:MM:SSZ``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage(
    event_type: str, facts: InstanceFacts, user_id: str | None, now: datetime, **extra: Any
) -> dict[str, Any]:
    """The payload of a ``trove.instance.*`` event: Trove's fields for ``facts``, then
    ``extra`` (``old_instance_size``, ``old_volume_size``, ``deleted_at``...)."""
    created = iso_time(facts.created)
    payload: dict[str, Any] = {
        "instance_id": facts.instance_id,
        "instance_name": facts.name,
        "name": facts.name,
        "display_name": facts.name,
        "tenant_id": facts.tenant_id,
        "user_id": user_id,
        "instance_type": facts.flavor_name,
        "instance_type_id": facts.flavor_id,
        "instance_size": facts.ram_mb,
        "volume_size": facts.volume_gb,
        "state": facts.status.lower(),
        "state_description": facts.status.lower(),
        "created_at": created,
        "launched_at": created,
        "region": facts.region,
        "availability_zone": None,
        "nova_instance_id": None,
        "nova_volume_id": None,
        "service_id": facts.datastore,
        "datastore": facts.datastore,
        "datastore_version": facts.datastore_version,
    }
    if event_type in ("trove.instance.modify_flavor", "trove.instance.modify_volume"):
        payload["launched_at"] = payload["modify_at"] = iso_time(now)
    payload.update(extra)
    return payload


def action(
    tenant_id: str,
    request_id: str | None,
    server_type: str,
    error: str | None = None,
    **subject: Any,
) -> dict[str, Any]:
    """The payload of a ``dbaas.*`` event: who asked, where it ran, what it was about
    (``instance_id``, ``backup_id``, ``new_flavor_id``...), and an error's message."""
    payload: dict[str, Any] = {
        "tenant_id": tenant_id,
        "request_id": request_id,
        "server_type": server_type,
        "client_ip": None,
        "server_ip": None,
        **subject,
    }
    if error is not None:
        # Trove adds the traceback as ``exception``; Cove's failures are recorded faults.
        payload["message"], payload["exception"] = error, None
    return payload


def action_type(task: str, failed: bool) -> str:
    """``dbaas.<action>.end``, or ``.error`` for a task that failed."""
    return f"dbaas.{ACTIONS[task]}.{'error' if failed else 'end'}"
