"""Clusters: create, list, show, a member's detail, delete, the actions and root. Each endpoint
checks the caller's rights, runs one workflow of :mod:`cove.api.clusters` and renders the
view (``cove.api.views.cluster_view``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from cove.api import clusters as workflows
from cove.api.context import ApiContext, authorize, cove, reaches_any_project
from cove.api.openapi import answers
from cove.api.responses import ClusterList, ClusterOne, InstanceOne, RootEnabled, RootStatus
from cove.api.schemas import ClusterCreateBody, RootBody
from cove.api.validate import checked
from cove.api.views import cluster_view, instance_view, next_links, page_limit
from cove.common.errors import InstanceNotFound
from cove.common.ids import generate_password, utcnow
from cove.db.clusters import get_cluster, members, page_clusters, task_of
from cove.db.instances import get_instance, snapshot
from cove.db.models import Cluster
from cove.db.replication import group_of
from cove.domain import names
from cove.domain.clusters import RULES, Topology
from cove.domain.status import compute_status
from cove.rpc import RequestContext

router = APIRouter(prefix="/v1.0/{project_id}/clusters")


def _authorize(
    request: Request, c: ApiContext, project_id: str, cluster_id: str, rule: str
) -> tuple[RequestContext, str]:
    """:func:`authorize`, then the project the request acts in on the cluster: the path's,
    or for a caller who reaches any project (a cloud administrator) the one holding it."""
    ctx = authorize(request, project_id, rule)
    if reaches_any_project(request):
        with c.db.session() as s:
            cluster = s.get(Cluster, cluster_id)
            if cluster is not None and not cluster.deleted:
                return ctx, cluster.project_id
    return ctx, project_id


def _view(request: Request, c: ApiContext, s: Session, cluster: Cluster) -> dict[str, Any]:
    now = utcnow()
    recent = timedelta(seconds=3 * c.settings.heartbeat_interval)
    shown = [
        (
            m,
            compute_status(snapshot(m, m.guest), now, c.settings.heartbeat_interval).status,
            m.guest is not None and now - m.guest.heartbeat_at <= recent,
        )
        for m in members(s, cluster.id)
    ]
    wanted = RULES.get(cluster.datastore_version.manager)
    topology = wanted.topology if wanted is not None else Topology.ACTIVE_ACTIVE
    endpoints = None
    position = None
    if topology is Topology.ACTIVE_PASSIVE:
        primary = next((m for m, _, _ in shown if m.replica_of_id is None), None)
        group = group_of(s, primary.id) if primary is not None else None
        if group is not None and group.rw_address and group.ro_address:
            endpoints = (group.rw_address, group.ro_address)
        position = group.primary_position if group is not None else None
    task = task_of(s, cluster)
    return cluster_view(request, cluster, task, shown, topology, endpoints, position)


@router.get("", responses=answers(ClusterList))
def list_clusters(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "cluster:index")
    size = page_limit(limit, c.settings.page_size)
    with c.db.session() as s:
        page, more = page_clusters(s, project_id, marker, size)
        body: dict[str, Any] = {"clusters": [_view(request, c, s, k) for k in page]}
    if more:
        body["links"] = next_links(request, page[-1].id, size)
    return body


@router.post("", responses=answers(ClusterOne, 404, 413, 501, 503))
def create_cluster(
    project_id: str, body: ClusterCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "cluster:create")
    cluster_id = workflows.create_cluster(c, ctx, project_id, body.cluster)
    with c.db.session() as s:
        return {"cluster": _view(request, c, s, get_cluster(s, cluster_id))}


@router.get("/{cluster_id}", responses=answers(ClusterOne, 404))
def show_cluster(
    project_id: str, cluster_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    _, project_id = _authorize(request, c, project_id, cluster_id, "cluster:show")
    with c.db.session() as s:
        return {"cluster": _view(request, c, s, get_cluster(s, cluster_id, project_id))}


@router.get("/{cluster_id}/instances/{instance_id}", responses=answers(InstanceOne, 404))
def show_member(
    project_id: str,
    cluster_id: str,
    instance_id: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    _, project_id = _authorize(request, c, project_id, cluster_id, "cluster:show")
    with c.db.session() as s:
        get_cluster(s, cluster_id, project_id)
        inst = get_instance(s, instance_id, project_id, for_view=True)
        if inst.cluster_id != cluster_id:
            raise InstanceNotFound(
                f"Instance {instance_id} is not a member of cluster {cluster_id}."
            )
        status = compute_status(snapshot(inst, inst.guest), utcnow(), c.settings.heartbeat_interval)
        return {"instance": instance_view(request, c.settings, inst, inst.guest, status, True)}


@router.post("/{cluster_id}", status_code=202, responses=answers(ClusterOne, 404, 501, status=202))
def cluster_action(
    project_id: str,
    cluster_id: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    c: ApiContext = Depends(cove),
) -> Response:
    if len(body) == 1 and "reset-status" in body:
        _, project_id = _authorize(request, c, project_id, cluster_id, "cluster:reset_status")
        workflows.reset_cluster(c, project_id, cluster_id)
    else:
        ctx, project_id = _authorize(request, c, project_id, cluster_id, "cluster:action")
        workflows.act(c, ctx, project_id, cluster_id, body)
    with c.db.session() as s:
        view = _view(request, c, s, get_cluster(s, cluster_id, project_id))
    return JSONResponse({"cluster": view}, status_code=202)


@router.delete(
    "/{cluster_id}", status_code=202, response_class=Response, responses=answers(None, 404)
)
def delete_cluster(
    project_id: str, cluster_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx, project_id = _authorize(request, c, project_id, cluster_id, "cluster:delete")
    workflows.delete_cluster(c, ctx, project_id, cluster_id)
    return Response(status_code=202)


@router.get("/{cluster_id}/root", responses=answers(RootStatus, 404, 422, 503))
def cluster_root_status(
    project_id: str, cluster_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx, project_id = _authorize(request, c, project_id, cluster_id, "root:show")
    return {"rootEnabled": workflows.root_enabled(c, ctx, project_id, cluster_id)}


@router.post("/{cluster_id}/root", responses=answers(RootEnabled, 404, 422, 501, 503))
def enable_cluster_root(
    project_id: str,
    cluster_id: str,
    request: Request,
    body: RootBody | None = Body(default=None),
    c: ApiContext = Depends(cove),
) -> Any:
    """Enable root on the cluster (troveclient ``root.create_cluster_root``): made on one
    member where the cluster replicates accounts, on every member of a sharded one."""
    ctx, project_id = _authorize(request, c, project_id, cluster_id, "root:enable")
    password = body.password if body and body.password else None
    if password is not None:
        checked(names.password, password)
    else:
        password = generate_password()
    name = workflows.enable_root(c, ctx, project_id, cluster_id, password)
    return {"user": {"name": name, "password": password}}
