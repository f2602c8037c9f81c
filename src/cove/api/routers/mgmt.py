"""Management endpoints for administrators: every project's instances, quotas.

Trove answers a non-administrator here with 401; Cove answers 403, because keystoneauth takes a
401 for an invalid token and authenticates again before retrying.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from sqlalchemy import select

from cove.api.context import ApiContext, authorize, cove, credentials
from cove.api.openapi import answers
from cove.api.responses import AdminInstanceList, AdminInstanceOne, QuotaLimits, QuotaUsageList
from cove.api.routers.instances import instances_page
from cove.api.views import instance_view, isolation_view, trove_time
from cove.common.errors import BadRequest, InstanceNotFound
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db.instances import snapshot
from cove.db.models import Instance
from cove.db.quotas import check_project, quota_usage, set_quotas
from cove.domain.status import GuestStatus, Task, compute_status

router = APIRouter(prefix="/v1.0/{project_id}/mgmt")

TASK_DESCRIPTIONS: dict[str, str] = {
    Task.NONE: "No task is running.",
    Task.BUILDING: "Building the instance.",
    Task.REBOOTING: "Restarting the database server.",
    Task.RESIZING: "Resizing the instance.",
    Task.DETACHING: "Detaching the replica from its source.",
    Task.PROMOTING: "Promoting the replica to replica source.",
    Task.EJECTING: "Ejecting the replica source.",
    Task.REJOINING: "Rejoining as a replica of the new replica source.",
    Task.DELETING: "Deleting the instance.",
    Task.BUILD_ERROR: "The build failed.",
    Task.DELETE_ERROR: "The deletion failed.",
}


# -- quotas ------------------------------------------------------------------------------------


@router.get("/quotas/{project}", responses=answers(QuotaUsageList, 404))
def show_quotas(
    project_id: str, project: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """The project's usage and limits: its own for any role, any project's for an administrator.
    Raises Forbidden, BadRequest for a malformed project id and NotFound for a project the
    embedded identity service does not hold."""
    authorize(request, project_id, "quota:show")
    if project != project_id:
        c.policy.enforce("mgmt:quotas", credentials(request).roles)
    with c.db.session() as s:
        check_project(s, c.settings, project)
        quotas = quota_usage(s, c.settings, project)
    return {
        "quotas": [
            {"resource": r, "in_use": q.in_use, "reserved": q.reserved, "limit": q.limit}
            for r, q in quotas.items()
        ]
    }


def _requested_limits(body: dict[str, Any]) -> dict[str, Any]:
    quotas = body.get("quotas")
    if set(body) != {"quotas"} or not isinstance(quotas, dict):
        raise BadRequest('The body must be {"quotas": {"<resource>": <limit>, ...}}.')
    return quotas


@router.put("/quotas/{project}", responses=answers(QuotaLimits, 404))
def update_quotas(
    project_id: str,
    project: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    c: ApiContext = Depends(cove),
) -> Any:
    """Override some of the project's limits, all or none. Raises Forbidden, BadRequest and
    NotFound (see cove.db.quotas.set_quotas)."""
    authorize(request, project_id, "mgmt:quotas")
    limits = _requested_limits(body)
    with c.db.session() as s:
        return {"quotas": set_quotas(s, c.settings, project, limits)}


# -- instances ---------------------------------------------------------------------------------


def _service_status(inst: Instance) -> str | None:
    if inst.guest is None:
        return None
    try:
        return GuestStatus(inst.guest.status).api_name
    except ValueError:
        return inst.guest.status


def _server(inst: Instance, view: dict[str, Any], single: bool) -> dict[str, Any]:
    """Trove's ``server``: the place the compute driver runs the instance in, which it knows by
    the instance's id; ``single`` (one instance shown) adds its addresses, by network, in
    Nova's form."""
    server: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "status": "DELETED" if inst.deleted else inst.compute_state,
        "tenant_id": inst.project_id,
        "host": inst.compute_driver,
        "deleted": inst.deleted,
        "deleted_at": trove_time(inst.deleted_at),
        "address": inst.address,
        "port": inst.port,
    }
    if single:
        by_network: dict[str, list[dict[str, Any]]] = {}
        for entry in view.get("addresses", []):
            address = entry["address"]
            version = ipaddress.ip_address(address).version
            by_network.setdefault(entry.get("network", entry["type"]), []).append(
                {"addr": address, "version": version}
            )
        server["addresses"] = by_network
    return server


def _admin_view(request: Request, c: ApiContext, inst: Instance, single: bool) -> dict[str, Any]:
    """Trove's management view: the detail view as an administrator sees it (with its project,
    server and volume ids), plus where it runs and its bookkeeping; ``single`` (one instance
    shown) adds the server's addresses and the guest's state."""
    status = compute_status(snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval)
    view = instance_view(request, c.settings, inst, inst.guest, status, detail=True, admin=True)
    view.update(
        {
            "server": _server(inst, view, single),
            "deleted": inst.deleted,
            "deleted_at": trove_time(inst.deleted_at),
            "task_description": TASK_DESCRIPTIONS.get(inst.task, inst.task),
            "service_status": _service_status(inst),
            "isolation": isolation_view(inst.guest),
        }
    )
    if single:
        reported = inst.guest.status.replace("_", " ") if inst.guest else None
        view["guest_status"] = {"state_description": reported}
    return view


def _flag(name: str, value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise BadRequest(f"'{name}' must be true or false.")
    return lowered == "true"


@router.get("/instances", responses=answers(AdminInstanceList))
def list_all_instances(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    """Instances of every project (or of the ``project_id`` query parameter), newest first and
    paged in SQL; live ones, or with ``deleted=true`` the deleted ones; cluster members only
    with ``include_clustered=true``, as in Trove."""
    authorize(request, project_id, "mgmt:instances")
    deleted = _flag("deleted", request.query_params.get("deleted"), default=False)
    clustered = _flag(
        "include_clustered", request.query_params.get("include_clustered"), default=False
    )
    query = select(Instance).where(Instance.deleted == deleted)
    if not clustered:
        query = query.where(Instance.cluster_id.is_(None))
    tenant = request.query_params.get("project_id")
    if tenant:
        query = query.where(Instance.project_id == tenant)
    return instances_page(
        request, c, query, limit, marker, lambda i: _admin_view(request, c, i, single=False)
    )


@router.get("/instances/{instance_id}", responses=answers(AdminInstanceOne, 404))
def show_any_instance(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """Any instance, deleted ones included. Raises InstanceNotFound."""
    authorize(request, project_id, "mgmt:instances")
    with c.db.session() as s:
        inst = s.get(Instance, instance_id)
        if inst is None:
            raise InstanceNotFound(f"Instance {shown(instance_id)} could not be found.")
        return {"instance": _admin_view(request, c, inst, single=True)}
