"""The task manager's notification events (``cove.domain.events``): built when a task ends
(``cove.taskmanager.ends.TaskEnds`` calls :meth:`EventSender.instance_task_ended`,
:meth:`EventSender.member_task_ended` and :meth:`EventSender.backup_ended`; the workflows that
end a cluster's task themselves call :meth:`EventSender.cluster_ended`) and sent three ways,
each on its own: kept among the instance's recent events (the API's
``GET .../instances/{id}/events``; a cluster's events name no instance and are not kept),
published on the bus (``event_topic``, for an operator's consumer on RabbitMQ) and POSTed to
``event_webhook``. Sending never fails the task: what cannot go one way is logged and goes the
others.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db import clusters
from cove.db import events as recorded
from cove.db.instances import snapshot
from cove.db.models import Backup, Cluster, DatastoreVersion, Flavor, Instance
from cove.db.sealed import ResizeArgs
from cove.domain import events
from cove.domain.backups import BackupStatus
from cove.domain.clusters import ClusterTask
from cove.domain.events import Event, InstanceFacts
from cove.domain.specs import Resize
from cove.domain.status import Task, compute_status
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.webhook import Webhook

LOG = logging.getLogger(__name__)

#: The action event of each cluster task (its ``dbaas.<action>`` stem).
CLUSTER_ACTIONS = {
    ClusterTask.BUILDING: "cluster_create",
    ClusterTask.GROWING_CLUSTER: "cluster_grow",
    ClusterTask.SHRINKING_CLUSTER: "cluster_shrink",
    ClusterTask.RESTARTING_CLUSTER: "cluster_restart",
    ClusterTask.DELETING: "cluster_delete",
}


@dataclass(frozen=True)
class Before:
    """An instance as its task found it: what its end's events compare with."""

    facts: InstanceFacts | None
    task: Task = Task.NONE
    resize: Resize | None = None
    #: The RAM of the flavor a flavor resize leaves (the row holds the new one already).
    old_ram_mb: int | None = None


class EventSender:
    """Builds the events of the task manager's task ends and sends them (see the module)."""

    def __init__(self, tc: TaskContext) -> None:
        self.tc = tc
        self.publisher = f"taskmanager.{socket.gethostname()}"
        settings = tc.settings
        secret = settings.event_webhook_secret.get_secret_value()
        self.webhook = Webhook(settings.event_webhook, secret) if settings.event_webhook else None

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()

    # -- what a task found and left --------------------------------------------------------

    def before(self, task: Task, instance_id: str) -> Before:
        """The instance before ``task`` (a resize's change is read from its sealed request,
        which the task consumes); never raises (its events are lost, not its task)."""
        try:
            return self._before(task, instance_id)
        except Exception:
            LOG.warning("cannot read instance %s for its events", instance_id, exc_info=True)
            return Before(None)

    def _before(self, task: Task, instance_id: str) -> Before:
        with self.tc.db.session() as s:
            inst = _instance(s, instance_id)
            if inst is None:
                return Before(None)
            resize, old_ram = None, None
            if task is Task.RESIZING and inst.task_args:
                try:
                    opened = self.tc.sealer.open(instance_id, inst.task_args, ResizeArgs)
                    resize = opened.resize
                except (CoveError, ValueError, TypeError):
                    LOG.debug("cannot read the resize of %s for its events", instance_id)
            if resize is not None and resize.old_flavor_id is not None:
                old = s.get(Flavor, resize.old_flavor_id)
                old_ram = old.ram if old is not None else None
            return Before(self._facts(inst), task, resize, old_ram)

    def instance_task_ended(
        self, task: str, before: Before, ctx: RequestContext, failed: bool
    ) -> None:
        """The events of an instance's task that ended: its action's ``.end`` or ``.error``,
        and on success the usage event of what changed. Nothing for a task that did not end
        here (its lease was lost, or it ended elsewhere): whoever ends it tells it, once."""
        if before.facts is None:
            return
        iid = before.facts.instance_id
        with self.tc.db.session() as s:
            inst = _instance(s, iid)
            if inst is None or (not inst.deleted and inst.task == before.task.value):
                return
            after = self._facts(inst)
            fault = inst.fault_message
        now = utcnow()
        subject: dict[str, Any] = {"instance_id": iid}
        if task == "resize":
            if before.resize is None:
                LOG.warning("the resize of %s is not told: its request was unreadable", iid)
                return
            task, subject = self._resize_subject(before.resize, subject)
        out = [self._action(task, ctx, after.tenant_id, failed, fault, subject)]
        if not failed:
            out += self._usage(task, before, after, ctx, now)
        for event in out:
            self.send(event, after.tenant_id)

    def backup_ended(self, backup_id: str, ctx: RequestContext, failed: bool) -> None:
        """``dbaas.backup_create.end`` or ``.error`` for the backup."""
        with self.tc.db.session() as s:
            backup = s.get(Backup, backup_id)
            if backup is None or BackupStatus(backup.status).running:
                return  # not ended here: whoever ends it tells it
            subject = {"backup_id": backup_id, "instance_id": backup.instance_id}
            project, fault = backup.project_id, backup.fault_message
        self.send(self._action("backup", ctx, project, failed, fault, subject), project)

    def member_task_ended(self, instance_id: str, ctx: RequestContext) -> None:
        """After a task of a cluster member: when it was the last part of its cluster's task
        (no member has the instance task it waits on any more), end the cluster's task and
        tell it (:meth:`cluster_ended`), once whichever task manager gets there first."""
        with self.tc.db.session() as s:
            inst = s.get(Instance, instance_id)
            cluster_id = inst.cluster_id if inst is not None else None
            if cluster_id is None:
                return
            ended = clusters.settle_task(s, cluster_id, utcnow())
        if ended is not None:
            self.cluster_ended(ctx, cluster_id, ended)

    def cluster_ended(self, ctx: RequestContext, cluster_id: str, task: ClusterTask) -> None:
        """``dbaas.cluster_<action>.end``, or ``.error`` when a member ended in an error task
        or with a fault since the cluster's task began. Never raises."""
        try:
            with self.tc.db.session() as s:
                cluster = s.get(Cluster, cluster_id)
                if cluster is None:
                    return
                since = cluster.task_started_at
                everyone = list(
                    s.scalars(select(Instance).where(Instance.cluster_id == cluster_id))
                )
                live = [m for m in everyone if not m.deleted]
                # A cluster is gone only once every member is: its deletion did not fail.
                faults = [
                    m.fault_message or f"member {m.id} failed"
                    for m in ([] if task is ClusterTask.DELETING else live)
                    if Task(m.task).is_error
                    or (m.fault_at is not None and since is not None and m.fault_at >= since)
                ]
                version = cluster.datastore_version
                subject = {
                    "cluster_id": cluster_id,
                    "cluster_name": cluster.name,
                    "instance_ids": [m.id for m in live],
                    "datastore": version.datastore.name,
                    "datastore_version": version.name,
                }
                project = cluster.project_id
            failed = bool(faults)
            action = CLUSTER_ACTIONS[task]
            event = self._action(
                action, ctx, project, failed, faults[0] if faults else None, subject
            )
            self.send(event, project)
        except Exception:
            LOG.warning("cannot tell the end of cluster %s's task", cluster_id, exc_info=True)

    # -- sending ---------------------------------------------------------------------------

    def send(self, event: Event, project_id: str) -> None:
        """Keep, publish and post ``event``, each way on its own; never raises."""
        message = event.message()
        try:
            with self.tc.db.session() as s:
                recorded.record(s, event, project_id)
        except Exception:
            LOG.warning("cannot keep the event %s", event.event_type, exc_info=True)
        topic = self.tc.settings.event_topic
        if topic:
            try:
                self.tc.bus.notify(f"{topic}.{event.priority.lower()}", message)
            except Exception:  # a broker's refusal too: the other ways still go
                LOG.warning("cannot publish the event %s", event.event_type, exc_info=True)
        if self.webhook is not None:
            self.webhook.post(message)
        LOG.info("event %s %s", event.event_type, event.instance_id or "")

    # -- building --------------------------------------------------------------------------

    def _facts(self, inst: Instance) -> InstanceFacts:
        interval = self.tc.settings.heartbeat_interval
        status = compute_status(snapshot(inst, inst.guest), utcnow(), interval).status
        if inst.deleted:
            status = "DELETED"
        return InstanceFacts(
            instance_id=inst.id,
            name=inst.name,
            tenant_id=inst.project_id,
            status=status,
            flavor_id=inst.flavor_id,
            flavor_name=inst.flavor.name,
            ram_mb=inst.flavor.ram,
            volume_gb=inst.volume_size,
            datastore=inst.datastore_version.datastore.name,
            datastore_version=inst.datastore_version.name,
            created=inst.created,
            region=self.tc.settings.region,
        )

    def _action(
        self,
        task: str,
        ctx: RequestContext,
        project: str,
        failed: bool,
        fault: str | None,
        subject: dict[str, Any],
    ) -> Event:
        error = (fault or "the task failed; see the task manager's log") if failed else None
        payload = events.action(project, ctx.request_id, "taskmanager", error, **subject)
        return Event(events.action_type(task, failed), payload, self.publisher)

    @staticmethod
    def _resize_subject(change: Resize, subject: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Which resize it was, by the request the API sealed for it."""
        if change.new_volume_size is not None:
            return "resize_volume", {**subject, "new_size": change.new_volume_size}
        return "resize_flavor", {**subject, "new_flavor_id": change.new_flavor_id}

    def _usage(
        self, task: str, before: Before, after: InstanceFacts, ctx: RequestContext, now: datetime
    ) -> list[Event]:
        assert before.facts is not None
        user = ctx.user_id or None
        extra: dict[str, Any]
        if task == "create":
            kind, extra = "trove.instance.create", {}
        elif task == "delete":
            kind, extra = "trove.instance.delete", {"deleted_at": events.iso_time(now)}
        elif task == "resize_flavor":
            kind = "trove.instance.modify_flavor"
            extra = {"old_instance_size": before.old_ram_mb}
        elif task == "resize_volume":
            assert before.resize is not None
            kind = "trove.instance.modify_volume"
            extra = {"old_volume_size": before.resize.old_volume_size}
        else:
            return []
        if task == "create":
            after = replace(after, status="ACTIVE")  # it serves: its guest said so
        payload = events.usage(kind, after, user, now, **extra)
        return [Event(kind, payload, self.publisher)]


def _instance(s: Session, instance_id: str) -> Instance | None:
    inst: Instance | None = s.get(
        Instance,
        instance_id,
        options=[
            joinedload(Instance.guest),
            joinedload(Instance.flavor),
            joinedload(Instance.datastore_version).joinedload(DatastoreVersion.datastore),
        ],
    )
    return inst
