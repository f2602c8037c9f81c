"""Replicas as the task manager handles them: where a new replica copies its data from, and
detaching a replica into a standalone instance.

A replica is built by the create workflow like any instance; only its ``prepare`` differs: it is
given the source's ``ReplicaSource`` (asked of the source's guest agent, which keeps one account
for its replicas) instead of databases and users. Detaching (the DETACHING task) has the
replica's guest promote its server, then clears ``replica_of_id``: run again after a task
manager died half-way, the guest's promotion is idempotent.
"""

from __future__ import annotations

import contextlib
import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.instances import end_task, get_instance
from cove.db.replication import drop_if_alone
from cove.domain.replication import ReplicaSource, Role
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.rpc.guest import GuestReplicationClient
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def replica_source(tc: TaskContext, ctx: RequestContext, source_id: str) -> ReplicaSource:
    """What a new replica of ``source_id`` connects with, from the source's guest agent.
    Raises ServiceUnavailable (the source's agent is away: the build asks again) and
    GuestError."""
    return GuestReplicationClient(tc.bus, source_id, tc.settings.rpc_timeout).replication_source(
        ctx
    )


def detach_replica(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    """Make the replica a standalone instance; a failure is recorded as the instance's fault,
    and it stays a replica."""
    with tc.locks.hold(instance_id):
        with tc.db.session() as s:
            inst = get_instance(s, instance_id)
            if inst.task != Task.DETACHING.value:
                LOG.info("instance %s is no longer detaching; nothing to do", instance_id)
                return
            source = inst.replica_of_id
        fault: str | None = None
        guest = GuestReplicationClient(tc.bus, instance_id, tc.settings.rpc_timeout)
        try:
            guest.detach_replica(ctx)
        except CoveError as exc:
            LOG.error("detaching replica %s failed: %s", instance_id, exc.message)
            fault = f"Detaching the replica failed: {exc.public_message}"
            # An answer that came too late may have promoted it, with the rest of the detach
            # (its copied account and passfile) perhaps still to do: asked once more, the
            # guest's idempotent detach finishes it.
            with contextlib.suppress(CoveError):
                if guest.replication_state(ctx).role is Role.PRIMARY:
                    guest.detach_replica(ctx)
                    LOG.info("instance %s was promoted all the same", instance_id)
                    fault = None
        with tc.db.session() as s:
            if fault is None:
                get_instance(s, instance_id).replica_of_id = None
                if source is not None:
                    s.flush()
                    drop_if_alone(s, source)
            if end_task(s, instance_id, Task.DETACHING, Task.NONE, fault, utcnow()) and not fault:
                LOG.info("instance %s is no longer a replica of %s", instance_id, source)
