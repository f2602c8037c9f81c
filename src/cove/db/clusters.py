"""Cluster records: finding a cluster, its members, and one page of a project's clusters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, false, or_, select, update
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, ClusterNotFound
from cove.common.text import shown
from cove.db.instances import release_address
from cove.db.models import Cluster, Instance
from cove.db.replication import endpoint_owner
from cove.domain.clusters import RULES, ClusterTask, Topology, cluster_task
from cove.domain.status import Task


def get_cluster(session: Session, cluster_id: str, project_id: str | None = None) -> Cluster:
    """The live cluster ``cluster_id`` (of ``project_id`` if given). Raises ClusterNotFound."""
    cluster = session.get(Cluster, cluster_id)
    if (
        cluster is None
        or cluster.deleted
        or (project_id is not None and cluster.project_id != project_id)
    ):
        raise ClusterNotFound(f"Cluster {shown(cluster_id)} could not be found.")
    return cluster


def members(session: Session, cluster_id: str) -> list[Instance]:
    """The cluster's live members, in the order they were asked for."""
    return list(
        session.scalars(
            select(Instance)
            .where(Instance.cluster_id == cluster_id, Instance.deleted == false())
            .order_by(Instance.cluster_index, Instance.id)
        )
    )


def task_of(session: Session, cluster: Cluster) -> ClusterTask:
    """What the cluster is doing, from the task asked of it and its members' tasks; a new
    sharded cluster is BUILDING until its last member has split the slots (which ends the
    task asked), whatever its members show."""
    asked = ClusterTask[cluster.task]
    rules = RULES.get(cluster.datastore_version.manager)
    sharded = rules is not None and rules.topology is Topology.SHARDED
    if sharded and asked is ClusterTask.BUILDING:
        return asked
    return cluster_task(asked, [Task(m.task) for m in members(session, cluster.id)])


def page_clusters(
    session: Session, project_id: str, marker: str | None, size: int
) -> tuple[list[Cluster], bool]:
    """One page of at most ``size`` of the project's live clusters, newest first (ties by id),
    and whether more follow. A ``marker`` that is not one of them gives an empty page."""
    query = select(Cluster).where(Cluster.project_id == project_id, Cluster.deleted == false())
    if marker is not None:
        after = session.scalar(query.where(Cluster.id == marker))
        if after is None:
            return [], False
        query = query.where(
            or_(
                Cluster.created < after.created,
                and_(Cluster.created == after.created, Cluster.id < after.id),
            )
        )
    rows = list(
        session.scalars(query.order_by(Cluster.created.desc(), Cluster.id.desc()).limit(size + 1))
    )
    return rows[:size], len(rows) > size


def settle_deleted(session: Session, cluster_id: str, now: datetime) -> bool:
    """Mark the cluster deleted once it has no live member left (its last member's deletion
    calls this in the transaction that marks that member deleted); whether it did. The
    cluster's row is locked first, so of two members deleted at once the later one counts
    the other's deletion."""
    cluster = session.get(Cluster, cluster_id, with_for_update=True)
    if cluster is None or cluster.deleted or members(session, cluster_id):
        return False
    cluster.deleted = True
    cluster.deleted_at = now
    cluster.updated = now
    release_address(session, endpoint_owner(cluster_id, "lb"))
    cluster.address = None
    return True


def refuse_member(inst: Instance, what: str) -> None:
    """Raises BadRequest when ``inst`` is a cluster member: ``what`` (an action) goes
    through its cluster."""
    if inst.cluster_id is not None:
        raise BadRequest(
            f"Instance {inst.id} is a member of cluster {inst.cluster_id}: {what} goes "
            "through the cluster."
        )


def end_task(
    session: Session,
    cluster_id: str,
    asked: ClusterTask,
    now: datetime,
    started: datetime | None = None,
) -> bool:
    """End the task ``asked`` of the cluster (it shows NONE from then on), the one begun at
    ``started`` when given; whether this call ended it (False: it had ended, or another was
    asked since, a grow after a grow included). One conditional statement, so of two task
    managers ending it at once only one does, and only that one tells it."""
    query = update(Cluster).where(
        Cluster.id == cluster_id, Cluster.task == asked.name, Cluster.deleted.is_(False)
    )
    if started is not None:
        query = query.where(Cluster.task_started_at == started)
    done = session.execute(query.values(task=ClusterTask.NONE.name, updated=now))
    return bool(getattr(done, "rowcount", 0) == 1)


def settle_task(session: Session, cluster_id: str, now: datetime) -> ClusterTask | None:
    """End the task asked of the cluster once no member has the instance task it waits on
    (``domain.clusters.cluster_task``: a build, a grow, a shrink, a rolling restart whose
    chain stopped); the task this call ended, None when there was none to end here (still
    under way, ended already, a deletion, which ends with the cluster's row)."""
    cluster = session.get(Cluster, cluster_id)
    if cluster is None or cluster.deleted:
        return None
    asked = ClusterTask[cluster.task]
    if asked in (ClusterTask.NONE, ClusterTask.DELETING):
        return None
    tasks = [Task(m.task) for m in members(session, cluster_id)]
    if cluster_task(asked, tasks) is not ClusterTask.NONE:
        return None
    rules = RULES.get(cluster.datastore_version.manager)
    sharded = rules is not None and rules.topology is Topology.SHARDED
    if asked is ClusterTask.BUILDING and sharded and not any(t.is_error for t in tasks):
        return None  # its last member's build forms it, then ends the task (taskmanager/clusters)
    started = cluster.task_started_at
    return asked if end_task(session, cluster_id, asked, now, started) else None
