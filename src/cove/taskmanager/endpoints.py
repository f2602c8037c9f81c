"""The task manager's part of the groups' stable endpoints: allocating their addresses and
handing the compute driver what each should forward to (``cove.compute.endpoints``).

The coordinator calls :func:`serve_endpoints` every 0.2 s with the control database as the
truth: the read-write endpoint follows ``primary_id`` (named before a promotion, so no client
reaches a primary that is being replaced), the read-only one every replica with an address.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from cove.compute.endpoints import Backend, GroupEndpoint
from cove.db.instances import allocate_address
from cove.db.models import Instance, ReplicationGroup
from cove.db.networks import address_pool
from cove.db.replication import endpoint_owner, members
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def serve_endpoints(tc: TaskContext) -> None:
    """Give the driver the endpoints of every group whose primary it places, allocating the
    addresses of a group that has none yet."""
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
    tc.driver.serve_endpoints(wanted)


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
