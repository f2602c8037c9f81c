"""Restarting an instance's database server through its guest agent, and a cluster's members
one after another (a rolling restart: the cluster keeps serving through the others)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.clusters import end_task as end_cluster_task
from cove.db.clusters import get_cluster, members
from cove.db.instances import end_task, get_instance, transition
from cove.db.models import Instance
from cove.domain.clusters import ClusterTask
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.endpoints import serve_endpoints

LOG = logging.getLogger(__name__)


def restart_instance(tc: TaskContext, ctx: RequestContext, instance_id: str) -> str | None:
    """Restart the instance's server and end its task. For a member of a cluster being
    restarted, the member is first taken out of its cluster's endpoint, and once it serves
    again the next member (by number) gets the task: its id is returned, for the caller to
    run it next under its own lease; None when there is none or the restart failed, and the
    cluster's restart is then over (its task NONE). Never raises for the guest's failure
    (recorded as the instance's fault); raises InstanceNotFound."""
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if inst.task != Task.REBOOTING.value:
            LOG.info("instance %s is no longer restarting; nothing to do", instance_id)
            return None
        rolling = _rolling(tc, inst.cluster_id)
    if rolling:
        try:
            serve_endpoints(tc)  # the member takes no new connection from here on
        except (OSError, CoveError) as exc:
            LOG.warning(
                "cannot take instance %s out of its cluster's endpoint: %s", instance_id, exc
            )
    fault: str | None = None
    try:
        tc.guest(instance_id).restart(ctx)
    except CoveError as exc:
        LOG.error("restarting instance %s failed: %s", instance_id, exc.message)
        fault = f"Restart failed: {exc.public_message}"
    with tc.db.session() as s:
        # Should the task have ended meanwhile (see the monitor), the guest reports the outcome.
        ended = end_task(s, instance_id, Task.REBOOTING, Task.NONE, fault, utcnow())
        if not rolling:
            return None
        inst = get_instance(s, instance_id)
        following = _next_member(s, inst) if ended and fault is None else None
        cluster_id = inst.cluster_id
        # The chain ends here (done, or stopped by a failure): a later restart of one member
        # is only that.
        chain_ended = (
            following is None
            and cluster_id is not None
            and end_cluster_task(s, cluster_id, ClusterTask.RESTARTING_CLUSTER, utcnow())
        )
    if chain_ended and cluster_id is not None and tc.events is not None:
        tc.events.cluster_ended(ctx, cluster_id, ClusterTask.RESTARTING_CLUSTER)
    return following


def _rolling(tc: TaskContext, cluster_id: str | None) -> bool:
    """Whether the member's restart is a step of its cluster's rolling restart."""
    if cluster_id is None:
        return False
    with tc.db.session() as s:
        try:
            return get_cluster(s, cluster_id).task == ClusterTask.RESTARTING_CLUSTER.name
        except CoveError:
            return False


def _next_member(s: Session, done: Instance) -> str | None:
    """Give the REBOOTING task to the member after ``done`` (by number) that is free, in the
    transaction that ended ``done``'s, so the cluster shows its restart throughout; its id,
    or None when ``done`` was the last."""
    assert done.cluster_id is not None
    after = [
        m
        for m in members(s, done.cluster_id)
        if (m.cluster_index or 0) > (done.cluster_index or 0) and m.task == Task.NONE.value
    ]
    for member in after:
        if transition(s, member.id, {Task.NONE}, Task.REBOOTING, utcnow()):
            LOG.info("cluster %s: restarting member %s next", done.cluster_id, member.id)
            return member.id
    LOG.info("cluster %s: every member restarted", done.cluster_id)
    return None
