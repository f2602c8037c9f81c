"""Cluster members' builds: how each member takes part in its cluster ("Clusters" in
docs/architecture.md).

A member is built by the instance workflow (cove.taskmanager.create); here is only what ties
it to the others: in an active-active cluster the first member of a new cluster begins it,
every later one waits until the members before it serve and joins through them, and once a
member serves every member is told the whole peer list for its next start; an active-passive
cluster's replicas wait for their primary.
"""

from __future__ import annotations

import logging
import threading
import time

from cove.common.errors import CoveError, GuestError
from cove.common.ids import utcnow
from cove.db.clusters import end_task as end_cluster_task
from cove.db.clusters import get_cluster, members
from cove.db.instances import get_instance, record_fault
from cove.db.models import Instance
from cove.domain.clusters import RULES, ClusterSecret, ClusterTask, Topology, shards
from cove.domain.guest import ClusterMember
from cove.domain.status import Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)

#: How often a joiner looks whether the members before it serve.
WAIT_POLL = 0.25
#: What each member before it adds to a member's build deadline: one join's copy of a small
#: new cluster's data, with room for a busy machine.
JOIN_ALLOWANCE = 120.0


def member_spec(
    tc: TaskContext, instance_id: str, deadline: float, lost: threading.Event
) -> ClusterMember | bool:
    """How the member ``instance_id`` takes part in its cluster, once it may. In an
    active-active cluster the first member of a cluster being built begins it, and a later
    one waits until every member before it serves (a state transfer takes its donor out of
    service while it runs, so joins go one at a time). An active-passive cluster's replica
    waits for its primary and is then built as any replica: True. False when the build ended
    elsewhere or the lease was lost meanwhile.

    Raises GuestError when a member it waits for failed, or ``deadline`` (monotonic) passed.
    """
    while True:
        with tc.db.session() as s:
            inst = s.get(Instance, instance_id)
            if inst is None or inst.deleted or inst.task != Task.BUILDING.value:
                return False
            if inst.cluster_id is None or inst.cluster_index is None:
                raise GuestError("the instance is no cluster member")
            cluster = get_cluster(s, inst.cluster_id)
            everyone = members(s, cluster.id)
            wanted = RULES.get(cluster.datastore_version.manager)
            passive = wanted is not None and wanted.topology is Topology.ACTIVE_PASSIVE
            if passive:
                awaited = [m for m in everyone if m.id == inst.replica_of_id]
            else:
                awaited = [m for m in everyone if (m.cluster_index or 0) < inst.cluster_index]
            failed = [m for m in awaited if Task(m.task).is_error]
            if failed:
                raise GuestError(
                    f"Member {failed[0].id} of the cluster failed to build; this member cannot "
                    "join it."
                )
            if all(m.task == Task.NONE.value for m in awaited):
                if passive:
                    return True
                peers = [m.address for m in everyone if m.address is not None]
                begins = not awaited and cluster.task == ClusterTask.BUILDING.name
                secret = ""
                if cluster.secret is not None:
                    secret = tc.sealer.open(cluster.id, cluster.secret, ClusterSecret).password
                return ClusterMember(
                    cluster_id=cluster.id, peers=peers, bootstrap=begins, secret=secret
                )
        if time.monotonic() > deadline:
            raise GuestError("The members before this one did not become ready in time.")
        if lost.wait(WAIT_POLL):
            return False


def announce_peers(tc: TaskContext, ctx: RequestContext, cluster_id: str) -> None:
    """Tell every member that serves the addresses of all members, for its next start. A
    member that cannot be told is only logged: it still knows the members that were there
    when it joined, and any one of them lets it back in."""
    with tc.db.session() as s:
        cluster = get_cluster(s, cluster_id)
        wanted = RULES.get(cluster.datastore_version.manager)
        if wanted is None or wanted.topology is not Topology.ACTIVE_ACTIVE:
            return  # a replication group's members know their source from it
        everyone = members(s, cluster_id)
        peers = [m.address for m in everyone if m.address is not None]
        ready = [m.id for m in everyone if m.task == Task.NONE.value]
    for member_id in ready:
        try:
            tc.guest(member_id).set_cluster_peers(ctx, peers)
        except CoveError as exc:
            LOG.warning(
                "cannot give member %s of cluster %s its peers: %s",
                member_id,
                cluster_id,
                exc.message,
            )


#: How long the last member's build waits for a new sharded cluster to serve every slot.
FORM_TIMEOUT = 120.0


def form(tc: TaskContext, ctx: RequestContext, instance_id: str) -> None:
    """Once the last member of a new sharded cluster has joined (``instance_id``, the member
    built last, with every other serving), split the slots among the masters and have the
    other members replicate them (``domain.clusters.shards``), wait until every member sees
    the whole cluster serve, then end the cluster's BUILDING task; when that fails, the
    member is put in BUILD_ERROR with the reason and the task ends all the same. Nothing for
    another kind of cluster, or a member that is not the last of a new cluster."""
    with tc.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None or inst.cluster_id is None:
            return
        cluster = get_cluster(s, inst.cluster_id)
        wanted = RULES.get(cluster.datastore_version.manager)
        if wanted is None or wanted.topology is not Topology.SHARDED:
            return
        if cluster.task != ClusterTask.BUILDING.name:
            return
        everyone = members(s, cluster.id)
        if any(m.task != Task.NONE.value for m in everyone if m.id != instance_id):
            return  # not the last one: members join one at a time, the last forms it
        addresses = {m.id: m.address for m in everyone}
        order = [m.id for m in everyone]
        cluster_id = cluster.id
    try:
        _split(tc, ctx, order, addresses)
    except CoveError as exc:
        LOG.error("cluster %s could not be formed: %s", cluster_id, exc.message)
        with tc.db.session() as s:
            row = get_instance(s, instance_id)
            fault = f"Forming the cluster failed: {exc.public_message}"
            record_fault(row, fault, utcnow(), task=Task.BUILD_ERROR)
            ended = end_cluster_task(s, cluster_id, ClusterTask.BUILDING, utcnow())
    else:
        LOG.info("cluster %s serves every slot on %d members", cluster_id, len(order))
        with tc.db.session() as s:
            ended = end_cluster_task(s, cluster_id, ClusterTask.BUILDING, utcnow())
    if ended and tc.events is not None:
        tc.events.cluster_ended(ctx, cluster_id, ClusterTask.BUILDING)


def _split(
    tc: TaskContext, ctx: RequestContext, order: list[str], addresses: dict[str, str | None]
) -> None:
    """Split the slots among the masters, have the others replicate them, and wait until
    every member sees the cluster serve. Raises CoveError (GuestError when it does not come
    to serve in time)."""
    plan = shards(order)
    for shard in plan:
        tc.guest(shard.master).set_cluster_slots(ctx, shard.first_slot, shard.last_slot)
    for shard in plan:
        master = addresses[shard.master]
        assert master is not None
        for replica in shard.replicas:
            tc.guest(replica).follow_in_cluster(ctx, master)
    deadline = time.monotonic() + FORM_TIMEOUT
    while True:
        healths = [tc.guest(member).cluster_health(ctx) for member in order]
        if all(h is not None and h.ready and h.size == len(order) for h in healths):
            return
        if time.monotonic() > deadline:
            raise GuestError("The cluster did not come to serve every slot in time.")
        time.sleep(WAIT_POLL)
