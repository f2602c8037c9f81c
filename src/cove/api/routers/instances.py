"""Instances: create, list, show, update, delete, and the restart, resize and reset_status
actions. Each endpoint checks the request and the caller's rights, runs one workflow of
:mod:`cove.api.instances` (or :mod:`cove.api.resize`, :mod:`cove.api.reset`) and renders the
view. A cloud administrator reaches any project's instance through its own project's path
(:func:`cove.api.context.authorize_instance`); lists stay per project."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from sqlalchemy import false, select

from cove.api import failover
from cove.api import instances as workflows
from cove.api.context import (
    ApiContext,
    authorize,
    authorize_instance,
    cove,
    reaches_any_project,
)
from cove.api.openapi import answers
from cove.api.reset import reset_status
from cove.api.resize import resize
from cove.api.responses import (
    InstanceDetailList,
    InstanceEventList,
    InstanceList,
    InstanceOne,
    InstanceVitalsOne,
    RunningConfigurationOne,
)
from cove.api.schemas import InstanceCreate, InstanceCreateBody, InstanceUpdateBody
from cove.api.validate import checked, checked_text, database_specs, user_specs
from cove.api.views import instance_view, masked, next_links, page_limit, vitals_view
from cove.common.errors import BadRequest, NotImplementedFault, VolumeSizeTooLarge
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db import events as recorded
from cove.db.instances import get_instance, page_instances, snapshot
from cove.db.models import Instance
from cove.domain import names
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import compute_status

router = APIRouter(prefix="/v1.0/{project_id}/instances")


def _accepted() -> Response:
    return Response(status_code=202)


def _view(request: Request, c: ApiContext, inst: Instance, detail: bool) -> dict[str, Any]:
    status = compute_status(snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval)
    admin = reaches_any_project(request)
    return instance_view(request, c.settings, inst, inst.guest, status, detail, admin=admin)


def _list(
    project_id: str,
    request: Request,
    c: ApiContext,
    limit: int | None,
    marker: str | None,
    detail: bool,
    include_clustered: bool,
) -> dict[str, Any]:
    """One page of the project's instances, newest first, paged in SQL (a project may hold
    thousands); cluster members only with ``include_clustered``, as in Trove."""
    authorize(request, project_id, "instance:index")
    query = select(Instance).where(Instance.project_id == project_id, Instance.deleted == false())
    if not include_clustered:
        query = query.where(Instance.cluster_id.is_(None))
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


@router.get("", responses=answers(InstanceList))
def list_instances(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    include_clustered: bool = False,
    c: ApiContext = Depends(cove),
) -> Any:
    return _list(project_id, request, c, limit, marker, False, include_clustered)


@router.get("/detail", responses=answers(InstanceDetailList))
def list_instances_detail(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    include_clustered: bool = False,
    c: ApiContext = Depends(cove),
) -> Any:
    return _list(project_id, request, c, limit, marker, True, include_clustered)


@router.get("/{instance_id}", responses=answers(InstanceOne, 404))
def show_instance(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    _, project_id = authorize_instance(request, project_id, instance_id, "instance:show")
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id, for_view=True)
        return {"instance": _view(request, c, inst, True)}


@router.get(
    "/{instance_id}/configuration",
    responses=answers(RunningConfigurationOne, 404, 422, 501, 503),
)
def show_instance_configuration(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """The settings the instance's server runs with (flavor-derived defaults overlaid with its
    group), as its guest agent reports them; secret-looking values are masked."""
    ctx, project_id = authorize_instance(request, project_id, instance_id, "instance:configuration")
    shown = workflows.running_configuration(c, ctx, project_id, instance_id)
    return {"instance": {"configuration": masked(shown)}}


@router.get("/{instance_id}/events", responses=answers(InstanceEventList, 404))
def list_instance_events(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=recorded.KEPT),
    c: ApiContext = Depends(cove),
) -> Any:
    """A Cove extension: the instance's newest notification events (create, resize, backup,
    failover...), newest first, as the operator's consumers receive them."""
    _, project_id = authorize_instance(request, project_id, instance_id, "instance:events")
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
        return {"events": recorded.recent(s, instance_id, limit)}


@router.get("/{instance_id}/vitals", responses=answers(InstanceVitalsOne, 404))
def instance_vitals(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """A Cove extension: the database server's vital signs and its use of memory and volume,
    as the guest agent's last heartbeat told them (the console's charts sample this)."""
    _, project_id = authorize_instance(request, project_id, instance_id, "instance:vitals")
    with c.db.session() as s:
        inst = get_instance(s, instance_id, project_id, for_view=True)
        return {"vitals": vitals_view(inst.guest)}


def _unsupported(spec: InstanceCreate) -> None:
    for field, what in (
        ("modules", "Modules"),
        ("availability_zone", "Availability zones"),
        ("locality", "Locality"),
    ):
        if getattr(spec, field):
            raise NotImplementedFault(f"{what} ('{field}') is not supported by Cove yet.")


def _check_refs(spec: InstanceCreate) -> None:
    """The flavor is given, and it and the datastore are named in text that can be looked up."""
    if spec.flavorRef is None or spec.flavorRef == "":
        raise BadRequest("A flavor is required ('flavorRef').")
    checked_text(str(spec.flavorRef), "flavorRef")
    if spec.datastore:
        checked_text(spec.datastore.type or "", "datastore type")
        checked_text(spec.datastore.version or "", "datastore version")


def _validate_payload(
    spec: InstanceCreate, c: ApiContext
) -> tuple[list[DatabaseSpec], list[UserSpec]]:
    _check_refs(spec)
    checked(names.instance_name, spec.name)
    if spec.volume is None:
        raise BadRequest("Volume size was not specified.")
    size = spec.volume.gigabytes  # a positive integer: the schema checked it
    if size > c.settings.max_volume_size:
        raise VolumeSizeTooLarge(
            f"Volume 'size' cannot exceed maximum of {c.settings.max_volume_size} GB, "
            f"{shown(size)} cannot be accepted."
        )
    dbs = database_specs(spec.databases)
    return dbs, user_specs(spec.users, {d.name for d in dbs})


@router.post("", responses=answers(InstanceOne, 404, 501, 503))
def create_instance(
    project_id: str, body: InstanceCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "instance:create")
    spec = body.instance
    _unsupported(spec)
    if spec.replica_of is not None:
        # A replica takes everything but its name from its source (cove.api.replicas).
        checked(names.instance_name, spec.name)
        dbs: list[DatabaseSpec] = []
        users: list[UserSpec] = []
    else:
        dbs, users = _validate_payload(spec, c)
    instance_id = workflows.create_instance(c, ctx, project_id, spec, dbs, users)
    with c.db.session() as s:
        return {"instance": _view(request, c, get_instance(s, instance_id), True)}


def _update(
    project_id: str, instance_id: str, body: InstanceUpdateBody, request: Request, c: ApiContext
) -> Response:
    """Rename, attach a configuration group (``configuration: <id>``) or detach it
    (``configuration: null``, or an empty ``{"instance": {}}`` as in Trove), detach a
    replica from its source (``replica_of: null`` or ``""``, or ``slave_of``), or change who
    may connect (``access``)."""
    ctx, project_id = authorize_instance(request, project_id, instance_id, "instance:update")
    fields = body.instance.model_dump(exclude_unset=True)
    others = [k for k in fields if k != "name"]
    if len(others) > 1:
        raise BadRequest("Only one attribute (except 'name') is allowed to update.")
    for key in others:
        if key not in ("configuration", "replica_of", "slave_of", "replication", "access"):
            raise NotImplementedFault(f"Updating '{key}' is not supported by Cove yet.")
    name = checked(names.instance_name, fields["name"]) if "name" in fields else None
    if others and others[0] in ("replica_of", "slave_of"):
        if others[0] == "replica_of" and fields["replica_of"] not in (None, ""):
            raise BadRequest(
                "'replica_of' can only be cleared (null or \"\") to detach a replica; a "
                "standalone instance cannot be made a replica."
            )
        workflows.detach_replica(c, ctx, project_id, instance_id)  # checked, then started
        workflows.rename_instance(c, project_id, instance_id, name)
        return _accepted()
    if others and others[0] == "access":
        workflows.update_access(c, project_id, instance_id, fields["access"], name)
        return _accepted()
    if others and others[0] == "replication" and body.instance.replication is not None:
        failover.update_replication(c, ctx, project_id, instance_id, body.instance.replication)
        workflows.rename_instance(c, project_id, instance_id, name)
        return _accepted()
    if not fields or "configuration" in fields:
        ref = fields.get("configuration")
        if ref is None:
            workflows.detach_configuration(c, ctx, project_id, instance_id, name)
        else:
            ref = checked_text(ref, "configuration")
            workflows.attach_configuration(c, ctx, project_id, instance_id, ref, name)
    else:
        workflows.rename_instance(c, project_id, instance_id, name)
    return _accepted()


@router.put(
    "/{instance_id}",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422, 501, 503),
)
def update_instance(
    project_id: str,
    instance_id: str,
    body: InstanceUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    return _update(project_id, instance_id, body, request, c)


@router.patch(
    "/{instance_id}",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422, 501, 503),
)
def patch_instance(
    project_id: str,
    instance_id: str,
    body: InstanceUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    if "access" in body.instance.model_fields_set:
        # As Trove's schema for PATCH has it.
        raise BadRequest("'access' is changed with PUT /instances/{id}, not PATCH.")
    return _update(project_id, instance_id, body, request, c)


@router.delete(
    "/{instance_id}",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422, 503),
)
def delete_instance(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "instance:delete")
    workflows.delete_instance(c, ctx, project_id, instance_id)
    return _accepted()


@router.post(
    "/{instance_id}/action",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422, 501, 503),
)
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
        ctx, project_id = authorize_instance(request, project_id, instance_id, "instance:resize")
        return resize(c, ctx, project_id, instance_id, args)
    if action == "reset_status":
        _, project_id = authorize_instance(
            request, project_id, instance_id, "instance:reset_status"
        )
        reset_status(c, project_id, instance_id, args)
        return _accepted()
    ctx, project_id = authorize_instance(request, project_id, instance_id, "instance:restart")
    checked_text(action, "action name")
    if action == "restart":
        workflows.restart_instance(c, ctx, project_id, instance_id)
        return _accepted()
    if action == "promote_to_replica_source":
        failover.promote_to_replica_source(c, ctx, project_id, instance_id, args)
        return _accepted()
    if action == "eject_replica_source":
        failover.eject_replica_source(c, ctx, project_id, instance_id, args)
        return _accepted()
    raise BadRequest(f"Invalid instance action: '{shown(action)}'.")


@router.get("/{instance_id}/failovers", responses=answers(failover.FailoverList, 404))
def list_failovers(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """Cove extension: the newest changes of primary of the instance's replication group."""
    _, project_id = authorize_instance(request, project_id, instance_id, "instance:show")
    return {"failovers": failover.failover_history(c, project_id, instance_id)}
