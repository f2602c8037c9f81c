"""Provisioning: address, place, guest agent, then ``prepare`` on the guest.

Each step is recorded on the instance row and is idempotent. The request's passwords live only
in the message, so a build interrupted before ``prepare`` reached the guest cannot be resumed:
the monitor ends it in ERROR after ``build_timeout``. The guest reports the end of ``prepare``
to the conductor, which ends the BUILDING task.
"""

from __future__ import annotations

import logging

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.configurations import values_of
from cove.db.instances import allocate_address, end_task, get_instance
from cove.db.models import Instance
from cove.db.networks import address_pool
from cove.domain.guest import GuestSettings
from cove.domain.parameters import denied
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext

LOG = logging.getLogger(__name__)


def create_instance(
    tc: TaskContext,
    ctx: RequestContext,
    instance_id: str,
    databases: list[DatabaseSpec],
    users: list[UserSpec],
) -> None:
    try:
        spec = _place(tc, instance_id)
        if spec is None:
            return
        guest = tc.guest(instance_id)
        guest.declare()
        with tc.db.session() as s:
            inst = get_instance(s, instance_id)
            if inst.task != Task.BUILDING.value:
                return
            inst.agent_started_at = utcnow()
        tc.driver.create(spec)
        with tc.db.session() as s:
            row = s.get(Instance, instance_id)
            building = row is not None and not row.deleted and row.task == Task.BUILDING.value
            if building and row is not None:
                inst = row
                inst.compute_state = ComputeState.ACTIVE.value
                inst.updated = utcnow()
        if not building:
            # The build was given up meanwhile (timed out, then perhaps deleted): what was
            # just placed must not outlive it.
            LOG.info(
                "instance %s stopped building meanwhile; removing what was placed", instance_id
            )
            tc.driver.destroy(instance_id)
            return
        guest.prepare(ctx, databases, users)
        LOG.info("instance %s placed at %s; prepare sent", instance_id, spec.address)
    except Exception as exc:
        message = exc.message if isinstance(exc, CoveError) else f"{type(exc).__name__}: {exc}"
        LOG.exception("creating instance %s failed", instance_id)
        fail_build(tc, instance_id, message)


def _place(tc: TaskContext, instance_id: str) -> GuestSettings | None:
    with tc.db.session() as s:
        inst = get_instance(s, instance_id)
        if inst.task != Task.BUILDING.value:
            LOG.info("instance %s is no longer building; nothing to do", instance_id)
            return None
        if inst.address is None:
            port = inst.port
            inst.address = allocate_address(
                s,
                address_pool(s, inst.network_id, tc.settings),
                instance_id,
                lambda address: tc.driver.address_usable(address, port),
            )
        return guest_spec(tc, inst)


def guest_spec(tc: TaskContext, inst: Instance) -> GuestSettings:
    """What the compute driver and the guest need to know of a placed instance, from its row:
    its flavor sizes, volume size and configuration overrides as they stand now."""
    if inst.address is None:
        raise ValueError(f"instance {inst.id} has no address yet")
    version = inst.datastore_version
    return GuestSettings(
        instance_id=inst.id,
        datastore=version.manager,
        datastore_version=version.name,
        bin_dir=version.bin_dir,
        address=inst.address,
        port=inst.port,
        ram_mb=inst.flavor.ram,
        vcpus=inst.flavor.vcpus,
        volume_gb=inst.volume_size,
        transport_url=tc.settings.transport_url,
        heartbeat_interval=tc.settings.heartbeat_interval,
        # A parameter denied since the group was made is never given to the guest.
        overrides={
            name: value
            for name, value in values_of(inst.configuration).items()
            if not denied(version.manager, name)
        },
    )


def fail_build(tc: TaskContext, instance_id: str, message: str) -> None:
    """End the build in BUILD_ERROR with ``message`` as the fault, unless it ended meanwhile.
    Raises InstanceNotFound."""
    with tc.db.session() as s:
        end_task(s, instance_id, Task.BUILDING, Task.BUILD_ERROR, message, utcnow())
