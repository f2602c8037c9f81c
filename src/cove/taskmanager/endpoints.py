"""The task manager's part of the host's endpoints and its filter on who may connect:
allocating the addresses of groups' and clusters' stable endpoints and the ports of public
instances, and handing the compute driver what each should forward to
(``cove.compute.endpoints``) and whom each instance lets in (``cove.compute.firewall``).

The coordinator calls :func:`serve_endpoints` and :func:`guard_instances` every 0.2 s with
the control database as the truth: the read-write endpoint follows ``primary_id`` (named
before a promotion, so no client reaches a primary that is being replaced), the read-only one
every replica with an address; a change of an instance's ``access`` is in force within that
time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from cove.common.errors import CoveError
from cove.compute.endpoints import Backend, ClusterEndpoint, GroupEndpoint, PublishedEndpoint
from cove.compute.firewall import Guarded
from cove.db.clusters import members as cluster_members
from cove.db.instances import access_of, allocate_address, allocate_public_port
from cove.db.models import Cluster, Instance, ReplicationGroup
from cove.db.networks import address_pool
from cove.db.replication import endpoint_owner, members
from cove.domain.clusters import CHECK_PORT, RULES, Topology
from cove.domain.status import Task
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def serve_endpoints(tc: TaskContext) -> None:
    """Give the driver the endpoints of every group whose primary it places, of every
    active-active cluster whose members it places and of every public instance it places,
    allocating the addresses (and public ports) of those that have none yet. Raises what the
    driver raises (OSError, subprocess.SubprocessError) and AddressPoolExhausted for a
    group."""
    wanted = []
    with tc.db.session() as s:
        rows = s.execute(
            select(ReplicationGroup, Instance)
            .join(Instance, Instance.id == ReplicationGroup.primary_id)
            .where(Instance.deleted.is_(False), Instance.compute_driver == tc.driver.name)
        ).all()
        for group, primary in rows:
            if group.rw_address is None or group.ro_address is None:
                _allocate(tc, s, group, primary)
            assert group.rw_address is not None and group.ro_address is not None
            replicas = tuple(
                Backend(m.id, m.address, m.port) for m in members(s, primary.id) if m.address
            )
            wanted.append(
                GroupEndpoint(
                    group_id=group.id,
                    port=primary.port,
                    rw_address=group.rw_address,
                    ro_address=group.ro_address,
                    primary=Backend(primary.id, primary.address, primary.port)
                    if primary.address
                    else None,
                    replicas=replicas,
                )
            )
        published = _published(tc, s)
    tc.driver.serve_endpoints(wanted, cluster_endpoints(tc), published)


def _placed(tc: TaskContext, s: Session, condition: ColumnElement[bool]) -> Sequence[Instance]:
    """The live instances this driver has placed that meet ``condition``."""
    return s.scalars(
        select(Instance).where(
            Instance.deleted.is_(False),
            Instance.address.is_not(None),
            Instance.compute_driver == tc.driver.name,
            condition,
        )
    ).all()


#: Instances that could not be given a public port, and why (logged when it changes).
_unpublished: dict[str, str] = {}


def _published(tc: TaskContext, s: Session) -> list[PublishedEndpoint]:
    """The public instances this driver places, each given a port on the public address when
    it has none yet (one that cannot have one is logged and left unpublished)."""
    address = tc.settings.public_address
    wanted = []
    for inst in _placed(tc, s, Instance.is_public.is_(True)):
        assert inst.address is not None
        if inst.public_port is None:
            try:
                port = allocate_public_port(
                    s,
                    inst,
                    tc.settings.public_port_min,
                    tc.settings.public_port_max,
                    lambda port: tc.driver.address_usable(address, port),
                )
            except CoveError as exc:
                if _unpublished.get(inst.id) != exc.message:  # once, not every pass
                    LOG.error("instance %s is not published: %s", inst.id, exc.message)
                _unpublished[inst.id] = exc.message
                continue
            _unpublished.pop(inst.id, None)
            LOG.info("instance %s is published on %s:%d", inst.id, address, port)
        assert inst.public_port is not None
        wanted.append(
            PublishedEndpoint(address, inst.public_port, Backend(inst.id, inst.address, inst.port))
        )
    return wanted


#: Sources every guarded instance lets in: the host's own services (the endpoints' proxy,
#: guest agents, replication between its instances) connect from there.
HOST = "127.0.0.1/32"


def guard_instances(tc: TaskContext) -> bool:
    """Give the driver every instance it places that lets in only some networks, with where
    it is reached (its address, its published port, its group's endpoints when it is the
    primary) and the sources it lets in besides (the host, its group's or cluster's other
    members). Returns False when the driver cannot filter. Raises what the driver raises
    (OSError)."""
    guarded = []
    with tc.db.session() as s:
        for inst in _placed(tc, s, Instance.allowed_cidrs.is_not(None)):
            access = access_of(inst)
            if access.everyone:
                continue
            assert inst.address is not None
            targets = [(inst.address, inst.port)]
            if inst.is_public and inst.public_port is not None:
                targets.append((tc.settings.public_address, inst.public_port))
            group = s.scalars(
                select(ReplicationGroup).where(ReplicationGroup.primary_id == inst.id)
            ).first()
            if group is not None:
                targets += [
                    (address, inst.port)
                    for address in (group.rw_address, group.ro_address)
                    if address is not None
                ]
            guarded.append(
                Guarded(inst.id, tuple(targets), access.allowed_cidrs, _trusted(s, inst))
            )
    return tc.driver.guard(guarded)


def _trusted(s: Session, inst: Instance) -> tuple[str, ...]:
    """The host and the addresses of the instance's replication group or cluster."""
    peers: list[Instance] = []
    primary_id = inst.replica_of_id or inst.id
    primary = s.get(Instance, primary_id)
    if primary is not None:
        peers += [primary, *members(s, primary_id)]
    if inst.cluster_id is not None:
        peers += cluster_members(s, inst.cluster_id)
    addresses = {f"{p.address}/32" for p in peers if p.address and p.id != inst.id}
    return (HOST, *sorted(addresses - {HOST}))


#: The member tasks that keep a member in its cluster's rotation.
_SERVING = (Task.NONE.value,)


def cluster_endpoints(tc: TaskContext) -> list[ClusterEndpoint]:
    """The endpoints of every live cluster whose members this driver places (allocating the
    address of one that has none yet): every placed member, those busy with a task (being
    restarted, deleted or built) out of the rotation."""
    wanted = []
    with tc.db.session() as s:
        rows = s.scalars(select(Cluster).where(Cluster.deleted.is_(False))).all()
        for cluster in rows:
            wanted_rules = RULES.get(cluster.datastore_version.manager)
            if wanted_rules is None or wanted_rules.topology is not Topology.ACTIVE_ACTIVE:
                continue  # an active-passive cluster is served as its replication group
            placed = [
                m
                for m in cluster_members(s, cluster.id)
                if m.address is not None and m.compute_driver == tc.driver.name
            ]
            if not placed:
                continue
            if cluster.address is None:
                try:
                    _allocate_cluster(tc, s, cluster, placed[0])
                except CoveError as exc:
                    # The others (and the groups' endpoints) are served all the same.
                    LOG.error("cluster %s has no endpoint: %s", cluster.id, exc.message)
                    continue
            assert cluster.address is not None
            wanted.append(
                ClusterEndpoint(
                    cluster_id=cluster.id,
                    port=placed[0].port,
                    address=cluster.address,
                    members=tuple(Backend(m.id, m.address, m.port) for m in placed if m.address),
                    out=frozenset(m.id for m in placed if m.task not in _SERVING),
                    check_port=CHECK_PORT,
                )
            )
    return wanted


def _allocate(tc: TaskContext, s: Session, group: ReplicationGroup, primary: Instance) -> None:
    """Addresses for the group's two endpoints, from its primary's network."""
    pool = address_pool(s, primary.network_id, tc.settings)

    def usable(address: str) -> bool:
        return tc.driver.address_usable(address, primary.port)

    group.rw_address = allocate_address(s, pool, endpoint_owner(group.id, "rw"), usable)
    group.ro_address = allocate_address(s, pool, endpoint_owner(group.id, "ro"), usable)
    LOG.info(
        "group %s: read-write endpoint %s, read-only %s",
        group.id,
        group.rw_address,
        group.ro_address,
    )


def _allocate_cluster(tc: TaskContext, s: Session, cluster: Cluster, member: Instance) -> None:
    """An address for the cluster's endpoint, from its members' network. Raises
    AddressPoolExhausted."""

    def usable(address: str) -> bool:
        return tc.driver.address_usable(address, member.port)

    pool = address_pool(s, member.network_id, tc.settings)
    cluster.address = allocate_address(s, pool, endpoint_owner(cluster.id, "lb"), usable)
    LOG.info("cluster %s: endpoint %s", cluster.id, cluster.address)
