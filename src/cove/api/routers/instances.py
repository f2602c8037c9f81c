"""Instances: create, list, show, rename, delete, and the restart action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from sqlalchemy import false, select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from cove.api.context import ApiContext, authorize, cove
from cove.api.guest import check_ready, require
from cove.api.resize import resize
from cove.api.routers.catalog import find_flavor
from cove.api.schemas import DatastoreIn, InstanceCreate, InstanceCreateBody, InstanceUpdateBody
from cove.api.validate import checked, database_specs, host_allowed, user_specs
from cove.api.views import instance_view, masked, next_links, page_limit
from cove.common.errors import (
    BadRequest,
    CoveError,
    DatastoreVersionNotFound,
    InstanceNotReady,
    NotImplementedFault,
    VolumeSizeTooLarge,
)
from cove.common.ids import new_id, utcnow
from cove.db.catalog import get_datastore, get_version
from cove.db.configurations import check_same_version, find_configuration
from cove.db.instances import get_instance, page_instances, snapshot, transition
from cove.db.models import DatastoreVersion, Instance
from cove.db.networks import resolve_network
from cove.db.quotas import check_instance_quota, lock_project
from cove.domain import names
from cove.domain.capabilities import STANDARD_PORTS, Capability
from cove.domain.parameters import denied
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import RESTARTABLE, ComputeState, Task, can_delete, compute_status
from cove.rpc import RequestContext

router = APIRouter(prefix="/v1.0/{project_id}/instances")


def _view(request: Request, c: ApiContext, inst: Instance, detail: bool) -> dict[str, Any]:
    status = compute_status(snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval)
    return instance_view(request, c.settings, inst, inst.guest, status, detail)


def _list(
    project_id: str,
    request: Request,
    c: ApiContext,
    limit: int | None,
    marker: str | None,
    detail: bool,
) -> dict[str, Any]:
    """One page of the project's instances, newest first, paged in SQL (a project may hold
    thousands)."""
    authorize(request, project_id, "instance:index")
    query = select(Instance).where(Instance.project_id == project_id, Instance.deleted == false())
    return instances_page(request, c, query, limit, marker, lambda i: _view(request, c, i, detail))


def instances_page(
    request: Request,
    c: ApiContext,
    query: Any,
    limit: int | None,
    marker: str | None,
    render: Callable[[Instance], dict[str, Any]],
) -> dict[str, Any]:
    """``{"instances": [...]}`` for one page of what ``query`` selects, with Trove's ``next``
    link when more follow."""
    size = page_limit(limit, c.settings.page_size)
    with c.db.session() as s:
        page, more = page_instances(s, query, marker, size)
        body: dict[str, Any] = {"instances": [render(i) for i in page]}
    if more:
        body["links"] = next_links(request, page[-1].id, size)
    return body


@router.get("")
def list_instances(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    return _list(project_id, request, c, limit, marker, detail=False)


@router.get("/detail")
def list_instances_detail(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    return _list(project_id, request, c, limit, marker, detail=True)


@router.get("/{instance_id}")
def show_instance(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "instance:show")
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id, for_view=True)
        return {"instance": _view(request, c, inst, True)}


@router.get("/{instance_id}/configuration")
def show_instance_configuration(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """The settings the instance's server runs with (flavor-derived defaults overlaid with its
    group), as its guest agent reports them; secret-looking values are masked."""
    ctx = authorize(request, project_id, "instance:configuration")
    ds_name = check_ready(c, project_id, instance_id, Capability.CONFIGURATION, allowed=RESTARTABLE)
    settings = c.guest(instance_id).get_configuration(ctx)
    # What the platform sets for itself (paths, addresses, security) is no business of tenants.
    shown = {k: v for k, v in settings.items() if not denied(ds_name, k)}
    return {"instance": {"configuration": masked(shown)}}


def _unsupported(spec: InstanceCreate) -> None:
    for field, what in (
        ("restorePoint", "Restoring from a backup"),
        ("replica_of", "Replication"),
        ("modules", "Modules"),
        ("availability_zone", "Availability zones"),
        ("locality", "Locality"),
    ):
        if getattr(spec, field):
            raise NotImplementedFault(f"{what} ('{field}') is not supported by Cove yet.")


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


def _text(value: str, what: str) -> str:
    """``value``, if it is valid Unicode text: a lone surrogate in JSON can be neither looked
    up nor shown. Raises ValidationFailed, whose message never echoes it."""
    return checked(lambda v: names.unicode_text(v, what), value)


def _check_refs(spec: InstanceCreate) -> None:
    """The flavor is given, and it and the datastore are named in text that can be looked up."""
    if spec.flavorRef is None or spec.flavorRef == "":
        raise BadRequest("A flavor is required ('flavorRef').")
    _text(str(spec.flavorRef), "flavorRef")
    if spec.datastore:
        _text(spec.datastore.type or "", "datastore type")
        _text(spec.datastore.version or "", "datastore version")


def _validate_payload(
    spec: InstanceCreate, c: ApiContext
) -> tuple[list[DatabaseSpec], list[UserSpec]]:
    _check_refs(spec)
    checked(names.instance_name, spec.name)
    if spec.volume is None:
        raise BadRequest("Volume size was not specified.")
    size = spec.volume.gigabytes
    if size < 1:
        raise BadRequest("Volume size must be a positive integer.")
    if size > c.settings.max_volume_size:
        raise VolumeSizeTooLarge(
            f"Volume 'size' cannot exceed maximum of {c.settings.max_volume_size} GB, "
            f"{size} cannot be accepted."
        )
    dbs = database_specs(spec.databases)
    return dbs, user_specs(spec.users, {d.name for d in dbs})


def _create_configuration(
    s: Session, project_id: str, ref: str | None, version: DatastoreVersion
) -> str | None:
    """The id of the group a new instance is created with, if any. Raises NotFound (no such
    group in the project) and BadRequest (a group of another datastore version)."""
    if ref is None:
        return None
    cfg = find_configuration(s, _text(ref, "configuration"), project_id)
    check_same_version(cfg, version)
    return cfg.id


def _record(
    c: ApiContext,
    project_id: str,
    spec: InstanceCreate,
    users: list[UserSpec],
    with_databases: bool,
) -> str:
    """Record a new BUILDING instance of the project within its quotas; returns its id.

    Raises FlavorNotFound, DatastoreNotFound, DatastoreVersionNotFound, NotFound (no such
    configuration group), BadRequest (an inactive version, an unusable network, a group of
    another version, a user host where users have none), OperationNotSupported (databases
    asked of a datastore without them) and QuotaExceeded.
    """
    instance_id = new_id()
    with c.db.session() as s:
        # The quota check locks the project first, so concurrent creates count each other.
        lock_project(s, project_id)
        flavor = find_flavor(s, str(spec.flavorRef))
        version = resolve_version(s, c, spec.datastore)
        configuration_id = _create_configuration(s, project_id, spec.configuration, version)
        if with_databases:
            require(version.datastore.name, Capability.DATABASES)
        for user in users:
            host_allowed(version.datastore.name, user.name, user.host)
        network = resolve_network(s, spec.nics)
        size = spec.volume.gigabytes if spec.volume else 0
        check_instance_quota(s, c.settings, project_id, ram=flavor.ram, volume=size)
        now = utcnow()
        s.add(
            Instance(
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
                created=now,
                updated=now,
            )
        )
    return instance_id


def _cast_create(
    c: ApiContext,
    ctx: RequestContext,
    instance_id: str,
    dbs: list[DatabaseSpec],
    users: list[UserSpec],
) -> None:
    """Hand the build to the task manager. If the bus fails, the instance is marked
    BUILD_ERROR with the reason (so it can be seen and deleted) and the error is raised."""
    try:
        c.taskmanager.create_instance(ctx, instance_id, dbs, users)
    except CoveError as exc:
        with c.db.session() as s:
            inst = get_instance(s, instance_id)
            inst.task = Task.BUILD_ERROR.value
            inst.fault_message = f"The task manager could not be reached: {exc.message}"
            inst.fault_at = utcnow()
        raise


@router.post("")
def create_instance(
    project_id: str, body: InstanceCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "instance:create")
    spec = body.instance
    _unsupported(spec)
    dbs, users = _validate_payload(spec, c)
    instance_id = _record(c, project_id, spec, users, bool(dbs) or any(u.databases for u in users))
    _cast_create(c, ctx, instance_id, dbs, users)
    with c.db.session() as s:
        return {"instance": _view(request, c, get_instance(s, instance_id), True)}


def _update(
    project_id: str, instance_id: str, body: InstanceUpdateBody, request: Request, c: ApiContext
) -> Response:
    """Rename, attach a configuration group (``configuration: <id>``) or detach it
    (``configuration: null``, or an empty ``{"instance": {}}`` as in Trove)."""
    ctx = authorize(request, project_id, "instance:update")
    fields = body.instance.model_dump(exclude_unset=True)
    others = [k for k in fields if k != "name"]
    if len(others) > 1:
        raise BadRequest("Only one attribute (except 'name') is allowed to update.")
    for key in others:
        if key != "configuration":
            raise NotImplementedFault(f"Updating '{key}' is not supported by Cove yet.")
    name = checked(names.instance_name, fields["name"]) if "name" in fields else None
    if not fields or "configuration" in fields:
        ref = fields.get("configuration")
        if ref is None:
            _detach(c, ctx, project_id, instance_id, name)
        else:
            _attach(c, ctx, project_id, instance_id, _text(ref, "configuration"), name)
        return Response(status_code=202, media_type="application/json")
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        if name is not None:
            inst.name = name
            inst.updated = utcnow()
    return Response(status_code=202, media_type="application/json")


def _attach(
    c: ApiContext,
    ctx: RequestContext,
    project_id: str,
    instance_id: str,
    configuration_id: str,
    name: str | None,
) -> None:
    """Attach a group of the project to a ready instance of its version, then have the task
    manager apply it. Raises InstanceNotFound, NotFound, BadRequest (one is attached already,
    another version), InstanceNotReady."""
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
            sa_update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.configuration_id.is_(None),
                Instance.task == Task.NONE.value,
            )
            .values(configuration_id=configuration_id, updated=utcnow(), **_renamed(name))
        ).rowcount  # type: ignore[attr-defined]
        if not attached and get_instance(s, instance_id).task != Task.NONE.value:
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    if not attached:
        raise BadRequest(
            f"Instance {instance_id} already has a configuration group attached; detach it first."
        )
    _cast_configure(c, ctx, instance_id, undo=None)


def _detach(
    c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str, name: str | None
) -> None:
    """Detach the instance's group (nothing to do when none is attached), then have the task
    manager apply the datastore's defaults. Raises InstanceNotFound, InstanceNotReady."""
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        previous = inst.configuration_id
        if previous is None:
            if name is not None:
                inst.name = name
                inst.updated = utcnow()
            return
    check_ready(c, project_id, instance_id, Capability.CONFIGURATION, allowed=RESTARTABLE)
    with c.db.session() as s:
        lock_project(s, project_id)
        detached = s.execute(
            sa_update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.configuration_id == previous,
                Instance.task == Task.NONE.value,
            )
            .values(configuration_id=None, updated=utcnow(), **_renamed(name))
        ).rowcount  # type: ignore[attr-defined]
        if not detached:
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    _cast_configure(c, ctx, instance_id, undo=previous)


def _renamed(name: str | None) -> dict[str, str]:
    return {"name": name} if name is not None else {}


def _cast_configure(c: ApiContext, ctx: RequestContext, instance_id: str, undo: str | None) -> None:
    """Have the task manager apply the instance's settings. When the bus fails, the attachment
    is put back as it was (``undo``: the group detached, or None) and the error raised."""
    try:
        c.taskmanager.update_configuration(ctx, instance_id)
    except CoveError:
        with c.db.session() as s:
            s.execute(
                sa_update(Instance).where(Instance.id == instance_id).values(configuration_id=undo)
            )
        raise


@router.put("/{instance_id}", status_code=202)
def update_instance(
    project_id: str,
    instance_id: str,
    body: InstanceUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    return _update(project_id, instance_id, body, request, c)


@router.patch("/{instance_id}", status_code=202)
def patch_instance(
    project_id: str,
    instance_id: str,
    body: InstanceUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    return _update(project_id, instance_id, body, request, c)


@router.delete("/{instance_id}", status_code=202)
def delete_instance(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx = authorize(request, project_id, "instance:delete")
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id)
        snap = snapshot(inst, inst.guest)
        if snap.task is Task.DELETING:
            pass  # asked again: send the (idempotent) work once more
        elif not can_delete(snap):
            status = compute_status(snap, utcnow(), c.settings.heartbeat_interval)
            raise InstanceNotReady(
                f"Instance {instance_id} is not ready. (Status is {status.status})."
            )
        allowed: set[Task] = {t for t in Task if t is not Task.BUILDING}
        if not transition(s, instance_id, allowed, Task.DELETING, utcnow()):
            raise InstanceNotReady(f"Instance {instance_id} is busy; try again.")
    c.taskmanager.delete_instance(ctx, instance_id)
    return Response(status_code=202, media_type="application/json")


@router.post("/{instance_id}/action", status_code=202)
def instance_action(
    project_id: str,
    instance_id: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    c: ApiContext = Depends(cove),
) -> Response:
    if len(body) != 1:
        authorize(request, project_id, "instance:restart")
        raise BadRequest("Exactly one action is required in the request body.")
    action, args = next(iter(body.items()))
    if action == "resize":
        return resize(
            c, authorize(request, project_id, "instance:resize"), project_id, instance_id, args
        )
    ctx = authorize(request, project_id, "instance:restart")
    _text(action, "action name")
    if action == "restart":
        return _restart(c, ctx, project_id, instance_id)
    if action in ("promote_to_replica_source", "eject_replica_source", "reset_status"):
        raise NotImplementedFault(f"The action '{action}' is not supported by Cove yet.")
    raise BadRequest(f"Invalid instance action: '{action}'.")


def _restart(c: ApiContext, ctx: RequestContext, project_id: str, instance_id: str) -> Response:
    check_ready(c, project_id, instance_id, allowed=RESTARTABLE)
    with c.db.session() as s:
        if not transition(s, instance_id, {Task.NONE}, Task.REBOOTING, utcnow()):
            raise InstanceNotReady(f"Instance {instance_id} is not ready. (Status is busy).")
    try:
        c.taskmanager.restart_instance(ctx, instance_id)
    except CoveError:
        with c.db.session() as s:
            transition(s, instance_id, {Task.REBOOTING}, Task.NONE, utcnow())
        raise
    return Response(status_code=202, media_type="application/json")
