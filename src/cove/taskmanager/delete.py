"""Deletion: stop everything, remove the place, release the address, forget the queue, delete
the instance's published guest logs and its backup schedules (never its backups)."""

from __future__ import annotations

import logging
import time

from cove.common.errors import ServiceUnavailable, StoreUnavailable
from cove.common.ids import utcnow
from cove.db.clusters import settle_deleted
from cove.db.instances import record_fault, release_address
from cove.db.models import GuestState, Instance
from cove.db.replication import drop_if_alone
from cove.db.schedules import delete_instance_schedules
from cove.domain.clusters import ClusterTask
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.storage import configured_store, open_store
from cove.taskmanager.clusters import announce_peers
from cove.taskmanager.context import TaskContext
from cove.taskmanager.create import public

LOG = logging.getLogger(__name__)


#: How long a deletion waits for an unreachable bus to delete the guest's queue: a queue left
#: behind costs the broker a little, a deletion that never ends costs the tenant their quota.
FORGET_PATIENCE = 30.0


def delete_instance(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    try:
        tc.driver.destroy(instance_id)
        _forget(tc, instance_id)
        _drop_published_logs(tc, instance_id)
    except Exception as exc:
        message = public(exc)
        LOG.exception("deleting instance %s failed", instance_id)
        with tc.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is not None and not inst.deleted:
                fault = f"Deleting the instance failed: {message}"
                record_fault(inst, fault, utcnow(), task=Task.DELETE_ERROR)
        return
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None:
            return
        release_address(s, instance_id)
        delete_instance_schedules(s, instance_id)  # its backups stay
        guest = s.get(GuestState, instance_id)
        if guest is not None:
            s.delete(guest)
        now = utcnow()
        inst.deleted = True
        inst.deleted_at = now
        inst.updated = now
        inst.task = Task.NONE.value
        inst.address = None
        inst.public_port = None
        s.flush()
        # The last replica gone, its primary is standalone again (and so is a primary that
        # goes: the API refuses to delete one with replicas).
        drop_if_alone(s, inst.replica_of_id or instance_id)
        cluster_id = inst.cluster_id
        gone = cluster_id is not None and settle_deleted(s, cluster_id, now)
        if gone:
            LOG.info("cluster %s deleted with its last member", cluster_id)
    LOG.info("instance %s deleted", instance_id)
    if gone and cluster_id is not None and tc.events is not None:
        tc.events.cluster_ended(ctx, cluster_id, ClusterTask.DELETING)
    elif cluster_id is not None:
        # The members left forget the one that went, for their next start.
        announce_peers(tc, ctx, cluster_id)


def _drop_published_logs(tc: TaskContext, instance_id: str) -> None:
    """Delete what the instance published of its guest logs (``cove.domain.guestlogs``):
    nobody can read it once the instance is gone. A store out of reach keeps them, with a
    warning: the deletion goes on."""
    try:
        store = open_store(configured_store(tc.settings, tc.settings.guest_log_container))
        for key in store.keys(f"{instance_id}/"):  # its logs' parts and indexes
            store.delete(key)
    except (StoreUnavailable, ValueError) as exc:
        LOG.warning("the published logs of deleted instance %s stay: %s", instance_id, exc)


def _forget(tc: TaskContext, instance_id: str) -> None:
    """Delete the guest's queue, waiting a while for a bus that is away."""
    deadline = time.monotonic() + FORGET_PATIENCE
    pause = 0.1
    while True:
        try:
            tc.guest(instance_id).forget()
            return
        except ServiceUnavailable as exc:
            if time.monotonic() + pause > deadline:
                LOG.warning(
                    "the queue of deleted instance %s stays on the bus: %s",
                    instance_id,
                    exc.message,
                )
                return
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
