"""The instance workflows behind ``/instances``: create, rename, attach and detach a
configuration group, delete, restart, and what the instance's server runs with.

The router has checked the request's form and the caller's rights; here the database and the
task manager are asked, in that order. A change that counts against quotas or competes with
other changes of the project (creates, attachments) is made in a transaction that locks the
project first. A task (build, deletion, restart, resize) is recorded on the row with what it
needs, then the task managers are told (:func:`tell_task_managers`); a bus that cannot be
reached loses nothing, so the request is still accepted: their monitor runs any task nobody
holds within seconds. Attaching and detaching a group are recorded, then pushed to the guest
within the request (``api/push.py``); a push that fails is retried by the task manager.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready, require
from cove.api.push import push, ready_pushes
from cove.api.replicas import (
    check_replica_request,
    check_replication_request,
    record_replicas,
    record_replication,
    refuse_deleting_a_source,
)
from cove.api.restore import restorable, restore_version
from cove.api.schemas import DatastoreIn, InstanceCreate
from cove.api.validate import checked, checked_text, host_allowed, names_fit
from cove.common.errors import (
    BadRequest,
    DatastoreVersionNotFound,
    InstanceNotReady,
    ServiceUnavailable,
)
from cove.common.ids import new_id, utcnow
from cove.db.catalog import find_flavor, get_datastore, get_version
from cove.db.clusters import refuse_member
from cove.db.configurations import check_same_version, find_configuration, settings_changed
from cove.db.instances import access_of, get_instance, snapshot, store_access, transition
from cove.db.models import DatastoreVersion, Instance
from cove.db.networks import resolve_network
from cove.db.quotas import check_instance_quota, lock_project
from cove.db.sealed import CreateArgs
from cove.domain.access import Access, parse_access
from cove.domain.capabilities import STANDARD_PORTS, Capability
from cove.domain.parameters import denied
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import RESTARTABLE, ComputeState, Task, can_delete, compute_status
from cove.rpc import RequestContext

LOG = logging.getLogger(__name__)


def resolve_version(s: Session, c: ApiContext, datastore: DatastoreIn | None) -> DatastoreVersion:
    """The active version ``datastore`` names (type and version, by name or id), with Trove's
    defaults: the configured default datastore, the datastore's default version.

    Raises BadRequest, DatastoreNotFound, DatastoreVersionNotFound.
    """
    ds_ref = datastore.type if datastore else None
    ds_ref = ds_ref or c.settings.default_datastore
    if not ds_ref:
        raise BadRequest("Please specify datastore. No default datastore is defined.")
    ds = get_datastore(s, ds_ref)
    ver_ref = datastore.version if datastore else None
    if ver_ref:
        version = get_version(s, ds, ver_ref)
    else:
        default = next((v for v in ds.versions if v.id == ds.default_version_id), None)
        if default is None:
            raise DatastoreVersionNotFound(f"Datastore '{ds.name}' has no default version.")
        version = default
    if not version.active:
        raise BadRequest(f"Datastore version '{ds.name} {version.name}' is not active.")
    return version


# -- create ------------------------------------------------------------------------------------


def create_instance(
    c: ApiContext,
    ctx: RequestContext,
    project_id: str,
    spec: InstanceCreate,
    dbs: list[DatabaseSpec],
    users: list[UserSpec],
) -> str:
    """Record a new BUILDING instance and hand its build to the task managers; returns its id.

    Raises what :func:`_record` raises.
    """
    check_replication_request(spec)
    if spec.replica_of is not None:
        source_id = checked_text(spec.replica_of, "replica_of")
        count = check_replica_request(spec)
        ids = record_replicas(c, project_id, spec, source_id, count)
    else:
        with_databases = bool(dbs) or any(u.databases for u in users)
        args = CreateArgs(dbs, users)
        access = checked(parse_access, spec.access) if spec.access is not None else Access()
        ids = [_record(c, project_id, spec, users, with_databases, args, access)]
        # (A restore's backup is recorded in the sealed arguments by _record.)
    record_replication(c, ids, spec)
    for instance_id in ids:
        tell_task_managers(
            instance_id, "build", functools.partial(c.taskmanager.create_instance, ctx, instance_id)
        )
    return ids[0]


def tell_task_managers(instance_id: str, what: str, cast: Callable[[], None]) -> None:
    """Cast a task just recorded on the instance's row. A bus that cannot be reached is only
    logged: undoing the task here would race a task manager that already took it over, and
    nothing is lost by keeping it (cove.taskmanager.leases)."""
    try:
        cast()
    except ServiceUnavailable as exc:
        LOG.warning(
            "instance %s: the %s is recorded; the task managers will take it up (%s)",
            instance_id,
            what,
            exc.message,
        )


def _record(
    c: ApiContext,
    project_id: str,
    spec: InstanceCreate,
    users: list[UserSpec],
    with_databases: bool,
    args: CreateArgs,
    access: Access,
) -> str:
    """Record a new BUILDING instance of the project within its quotas, with ``args`` sealed
    on it for the task manager and ``access`` saying who may connect; returns its id.

    Raises FlavorNotFound, DatastoreNotFound, DatastoreVersionNotFound, NotFound (no such
    configuration group), BadRequest (an inactive version, an unusable network, a group of
    another version, a user host where users have none, a database or user name the datastore
    reserves), OperationNotSupported (databases asked of a datastore without them) and
    QuotaExceeded.
    """
    instance_id = new_id()
    with c.db.session() as s:
        # The quota check locks the project first, so concurrent creates count each other.
        lock_project(s, project_id)
        flavor = find_flavor(s, str(spec.flavorRef))
        size = spec.volume.gigabytes if spec.volume else 0
        if spec.restorePoint is not None:
            plan = restorable(s, c.settings, project_id, spec.restorePoint, size)
            asked = resolve_version(s, c, spec.datastore) if spec.datastore else None
            restore_version(plan.backup, asked)
            version = plan.backup.datastore_version
            args = dataclasses.replace(
                args,
                restore_from=plan.backup.id,
                restore_time=plan.moment,
                replay_segments=plan.replay_segments,
            )
        else:
            version = resolve_version(s, c, spec.datastore)
        configuration_id = _fitting(s, project_id, spec, version, users, with_databases)
        network = resolve_network(s, spec.nics)
        check_instance_quota(s, c.settings, project_id, ram=flavor.ram, volume=size)
        now = utcnow()
        inst = Instance(
            id=instance_id,
            project_id=project_id,
            name=spec.name,
            flavor_id=flavor.id,
            datastore_version_id=version.id,
            volume_size=size,
            network_id=network.id,
            compute_driver=c.settings.compute_driver,
            task=Task.BUILDING.value,
            task_started_at=now,
            compute_state=ComputeState.BUILD.value,
            port=STANDARD_PORTS[version.manager],
            configuration_id=configuration_id,
            task_args=c.sealer.seal(instance_id, args),
            created=now,
            updated=now,
        )
        store_access(inst, access)
        s.add(inst)
    return instance_id


def _fitting(
    s: Session,
    project_id: str,
    spec: InstanceCreate,
    version: DatastoreVersion,
    users: list[UserSpec],
    with_databases: bool,
) -> str | None:
    """Check that what the request asks of the instance fits ``version``; returns the id of
    the configuration group it is created with, if any."""
    configuration_id = _create_configuration(s, project_id, spec.configuration, version)
    if with_databases:
        require(version.datastore.name, Capability.DATABASES)
    names_fit(version.datastore.name, [db.name for db in spec.databases], [u.name for u in users])
    for user in users:
        host_allowed(version.datastore.name, user.name, user.host)
    return configuration_id


def _create_configuration(
    s: Session, project_id: str, ref: str | None, version: DatastoreVersion
) -> str | None:
    """The id of the group a new instance is created with, if any. Raises NotFound (no such
    group in the project) and BadRequest (a group of another datastore version)."""
    if ref is None:
        return None
    cfg = find_configuration(s, checked_text(ref, "configuration"), project_id)
    check_same_version(cfg, version)
    return cfg.id


# -- update ------------------------------------------------------------------------------------


def rename_instance(c: ApiContext, project_id: str, instance_id: str, name: str | None) -> None:
    """Raises InstanceNotFound, InstanceNotReady (the instance is being built)."""
    with c.db.session() as s:
        _rename(c, get_instance(s, instance_id, project_id), name)


def update_access(
    c: ApiContext, project_id: str, instance_id: str, body: Any, name: str | None
) -> None:
    """Record who may connect to the instance (``body`` over what it has: a key left out is
    kept); the task manager brings the host's filter and publication in line within a
    fraction of a second (``cove.taskmanager.endpoints``). Refused while it is being built,
    as every change is, or deleted. Raises InstanceNotFound, InstanceNotReady and
    ValidationFailed."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        access = checked(lambda given: parse_access(given, access_of(inst)), body)
        if inst.task in (Task.BUILDING.value, Task.DELETING.value):
            status = compute_status(
                snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval
            )
            raise InstanceNotReady(f"Instance {inst.id} is not ready. (Status is {status.status}).")
        if access != access_of(inst):
            LOG.info("instance %s: access %s", instance_id, access)
            store_access(inst, access)
            inst.updated = utcnow()
        _rename(c, inst, name)


def _rename(c: ApiContext, inst: Instance, name: str | None) -> None:
    """Give ``inst`` the new ``name`` (None: keep it). Refused while the instance is being
    built, as Trove refuses every change of an instance in BUILD. Raises InstanceNotReady."""
    if name is None:
        return
    if inst.task == Task.BUILDING.value:
        status = compute_status(snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval)
        raise InstanceNotReady(f"Instance {inst.id} is not ready. (Status is {status.status}).")
    inst.name = name
    inst.updated = utcnow()


def attach_configuration(
    c: ApiContext,
    ctx: RequestContext,
    project_id: str,
    instance_id: str,
    configuration_id: str,
    name: str | None,
) -> None:
    """Attach a group of the project to a ready instance of its version (renaming it when
    ``name`` is given), then give the guest its values before answering (see ``api/push.py``).
    Raises InstanceNotFound, NotFound, BadRequest (one is attached already, another version),
    InstanceNotReady."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        cfg = find_configuration(s, configuration_id, project_id)
        configuration_id = cfg.id
        if inst.configuration_id is not None:
            raise BadRequest(
                f"Instance {instance_id} already has configuration group "
                f"{inst.configuration_id} attached; detach it first."
            )
        check_same_version(cfg, inst.datastore_version)
    check_ready(c, project_id, instance_id, Capability.CONFIGURATION, allowed=RESTARTABLE)
    with c.db.session() as s:
        # Changes of the project's groups and attachments take turns (a group deleted
        # meanwhile is not attached); only a detached instance with no task running takes it.
        lock_project(s, project_id)
        find_configuration(s, configuration_id, project_id)
        attached = s.execute(
            update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.configuration_id.is_(None),
                Instance.task == Task.NONE.value,
            )
            .values(
                configuration_id=configuration_id,
                **settings_changed(),
                **_renamed(name),
            )
        ).rowcount  # type: ignore[attr-defined]
        if not attached and get_instance(s, instance_id).task != Task.NONE.value:
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
        pushes = ready_pushes(s, c, [instance_id]) if attached else []
    if not attached:
        raise BadRequest(
            f"Instance {instance_id} already has a configuration group attached; detach it first."
        )
    push(c, ctx, pushes)


def detach_configuration(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, name: str | None
) -> None:
    """Detach the instance's group (only renaming it when none is attached), then give the
    guest the datastore's defaults before answering. Raises InstanceNotFound,
    InstanceNotReady."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        previous = inst.configuration_id
        if previous is None:
            _rename(c, inst, name)
            return
    check_ready(c, project_id, instance_id, Capability.CONFIGURATION, allowed=RESTARTABLE)
    with c.db.session() as s:
        lock_project(s, project_id)
        detached = s.execute(
            update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.configuration_id == previous,
                Instance.task == Task.NONE.value,
            )
            .values(configuration_id=None, **settings_changed(), **_renamed(name))
        ).rowcount  # type: ignore[attr-defined]
        if not detached:
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
        pushes = ready_pushes(s, c, [instance_id])
    push(c, ctx, pushes)


def _renamed(name: str | None) -> dict[str, str]:
    return {"name": name} if name is not None else {}


# -- delete, restart, configuration ------------------------------------------------------------


def delete_instance(c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str) -> None:
    """Start deleting the instance (again, if it is being deleted already: the work is
    idempotent). Raises InstanceNotFound, InstanceNotReady (building, or busy)."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        refuse_member(inst, "deleting a member")
        snap = snapshot(inst, inst.guest)
        if snap.task is Task.DELETING:
            # Asked again: tell the task managers once more, but leave the task (and the lease
            # of a deletion under way) as it is.
            pass
        elif not can_delete(snap):
            status = compute_status(snap, utcnow(), c.settings.heartbeat_interval)
            raise InstanceNotReady(
                f"Instance {instance_id} is not ready. (Status is {status.status})."
            )
        else:
            # Replicas are recorded under the project's lock: none is added while this looks.
            lock_project(s, project_id)
            refuse_deleting_a_source(s, instance_id)
            allowed: set[Task] = {t for t in Task if t is not Task.BUILDING}
            if not transition(s, instance_id, allowed, Task.DELETING, utcnow()):
                raise InstanceNotReady(f"Instance {instance_id} is busy; try again.")
    tell_task_managers(
        instance_id, "deletion", lambda: c.taskmanager.delete_instance(ctx, instance_id)
    )


def detach_replica(c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str) -> None:
    """Start making the replica a standalone instance (``replica_of: null``). Raises
    InstanceNotFound, BadRequest (not a replica), InstanceNotReady."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        refuse_member(inst, "detaching a member")
        if inst.replica_of_id is None:
            raise BadRequest(f"Instance {instance_id} is not a replica.")
    check_ready(c, project_id, instance_id)
    with c.db.session() as s:
        if not transition(s, instance_id, {Task.NONE}, Task.DETACHING, utcnow()):
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    tell_task_managers(
        instance_id, "detach", lambda: c.taskmanager.detach_replica(ctx, instance_id)
    )


def restart_instance(c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str) -> None:
    """Have the task managers restart the instance's server. Raises InstanceNotFound,
    InstanceNotReady."""
    check_ready(c, project_id, instance_id, allowed=RESTARTABLE)
    with c.db.session() as s:
        if not transition(s, instance_id, {Task.NONE}, Task.REBOOTING, utcnow()):
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    tell_task_managers(
        instance_id, "restart", lambda: c.taskmanager.restart_instance(ctx, instance_id)
    )


def running_configuration(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str
) -> dict[str, str]:
    """The settings the instance's server runs with (flavor-derived defaults overlaid with its
    group), as its guest agent reports them, less those the platform sets for itself (paths,
    addresses, security), which are no business of tenants. Raises InstanceNotFound,
    OperationNotSupported, InstanceNotReady."""
    ds_name = check_ready(c, project_id, instance_id, Capability.CONFIGURATION, allowed=RESTARTABLE)
    settings = c.guest(instance_id).get_configuration(ctx)
    return {k: v for k, v in settings.items() if not denied(ds_name, k)}
