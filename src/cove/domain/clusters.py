"""Decisions about clusters: the task a cluster shows, and what a datastore's clusters need.

Pure functions over values the caller read; the records are in ``cove.db.clusters`` and the
workflows in ``cove.api.clusters`` and ``cove.taskmanager.clusters``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from cove.domain.status import Task


@dataclass(frozen=True)
class TaskInfo:
    """How Trove names a cluster task: its number, its name and what it says."""

    id: int
    name: str
    description: str


class ClusterTask(Enum):
    """What a cluster is doing, as Trove numbers and names it."""

    NONE = TaskInfo(1, "NONE", "No tasks for the cluster.")
    BUILDING = TaskInfo(2, "BUILDING", "Building the initial cluster.")
    DELETING = TaskInfo(3, "DELETING", "Deleting the cluster.")
    GROWING_CLUSTER = TaskInfo(5, "GROWING_CLUSTER", "Increasing the size of the cluster.")
    SHRINKING_CLUSTER = TaskInfo(6, "SHRINKING_CLUSTER", "Decreasing the size of the cluster.")
    RESTARTING_CLUSTER = TaskInfo(8, "RESTARTING_CLUSTER", "Restarting the cluster.")


#: The instance task each cluster task waits on: the cluster shows the task while a member
#: still has it.
_MEMBER_TASK = {
    ClusterTask.BUILDING: Task.BUILDING,
    ClusterTask.GROWING_CLUSTER: Task.BUILDING,
    ClusterTask.SHRINKING_CLUSTER: Task.DELETING,
    ClusterTask.RESTARTING_CLUSTER: Task.REBOOTING,
    ClusterTask.DELETING: Task.DELETING,
}


def cluster_task(asked: ClusterTask, member_tasks: Iterable[Task]) -> ClusterTask:
    """The task a cluster shows: the one asked of it while a member still has the matching
    instance task, else NONE. A deletion holds until the cluster's row is gone from view,
    whatever its members show (one whose deletion failed keeps it DELETING)."""
    if asked is ClusterTask.DELETING:
        return asked
    wanted = _MEMBER_TASK.get(asked)
    if wanted is not None and any(t is wanted for t in member_tasks):
        return asked
    return ClusterTask.NONE


class Topology(Enum):
    #: Every member takes reads and writes (Galera).
    ACTIVE_ACTIVE = "active-active"
    #: One primary takes writes; the others are its replicas, the heaviest up-to-date one
    #: promoted when it is lost (the replication machinery).
    ACTIVE_PASSIVE = "active-passive"
    #: The keys are split among masters, each with replicas where members allow (Redis
    #: Cluster); clients follow the cluster's own redirections.
    SHARDED = "sharded"


@dataclass(frozen=True)
class ClusterRules:
    """What one datastore's clusters need."""

    topology: Topology
    #: The fewest members a cluster may have (and shrink to). Every member has the same
    #: flavor and volume size.
    min_members: int

    @property
    def weighted(self) -> bool:
        """Whether members take a promotion ``weight``."""
        return self.topology is Topology.ACTIVE_PASSIVE


#: The datastores (by manager) that build clusters, and their rules (a datastore not here
#: builds none).
RULES = {
    # Galera: fewer than 3 members cannot keep a majority when one is lost.
    "mariadb": ClusterRules(Topology.ACTIVE_ACTIVE, min_members=3),
    # A primary and at least one replica to fail over to.
    "postgresql": ClusterRules(Topology.ACTIVE_PASSIVE, min_members=2),
    # Redis Cluster refuses fewer than three masters.
    "redis": ClusterRules(Topology.SHARDED, min_members=3),
}

#: Redis Cluster's hash slots.
SLOTS = 16384
#: Where an active-active cluster's member answers its endpoint's health checks over HTTP
#: (on its own address): 200 while it takes queries.
CHECK_PORT = 9200


@dataclass(frozen=True)
class Shard:
    """One master's part of a sharded cluster: its member, its slots (first and last,
    inclusive) and the members that replicate it."""

    master: str
    first_slot: int
    last_slot: int
    replicas: tuple[str, ...] = ()


def shards(members: list[str]) -> list[Shard]:
    """How a sharded cluster of ``members`` (in their order) splits its slots: one replica
    per master once there are members for it (six or more), the slots split evenly among
    the masters, the first members the masters."""
    count = len(members) // 2 if len(members) >= 6 else len(members)
    masters, others = members[:count], members[count:]
    out = []
    for n, master in enumerate(masters):
        first = n * SLOTS // count
        last = (n + 1) * SLOTS // count - 1
        mine = tuple(m for k, m in enumerate(others) if k % count == n)
        out.append(Shard(master, first, last, mine))
    return out


@dataclass(frozen=True)
class ClusterSecret:
    """The password every member of a sharded cluster gives its replication account (a
    replica authenticates to whichever master it follows), sealed on the cluster's row."""

    password: str = field(repr=False)


def member_type(topology: Topology, replica: bool) -> str:
    """The ``type`` Trove shows for a member: an active-passive cluster's member shows its
    current role, any other a ``member``."""
    if topology is not Topology.ACTIVE_PASSIVE:
        return "member"
    return "replica" if replica else "primary"
