"""Databases, users, user access and root of an instance (Trove's "Mysql" extension).

These read and change live data on the database server, so every call checks the instance is
ready and then asks its guest agent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Depends, Request, Response

from cove.api.context import ApiContext, authorize, cove
from cove.api.guest import check_ready, require
from cove.api.schemas import (
    AccessBody,
    DatabasesBody,
    PasswordsBody,
    RootBody,
    UsersBody,
    UserUpdateBody,
)
from cove.api.validate import checked, database_specs, host_allowed, user_specs
from cove.api.views import paged
from cove.common.errors import BadRequest, NotImplementedFault
from cove.common.ids import generate_password
from cove.db.instances import get_instance
from cove.domain import names
from cove.domain.capabilities import Capability
from cove.domain.guest import PasswordChange
from cove.domain.specs import UserInfo

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}")

ACCEPTED = 202


def _accepted() -> Response:
    return Response(status_code=ACCEPTED, media_type="application/json")


def split_user(segment: str) -> tuple[str, str]:
    """``name`` or ``name@host`` (URL-encoded) from the path; the host defaults to '%'. Checks
    the form only: :func:`host_allowed` checks the host against the datastore."""
    text = unquote(segment)
    name, sep, host = text.rpartition("@")
    if not sep:
        name, host = text, "%"
    checked(names.user_name, name)
    return name, checked(names.user_host, host)


# -- databases -------------------------------------------------------------------------------


@router.get("/databases")
def list_databases(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    ctx = authorize(request, project_id, "database:index")
    check_ready(c, project_id, instance_id, Capability.DATABASES)
    rows = c.guest(instance_id).list_databases(ctx)
    return paged(
        request,
        "databases",
        rows,
        lambda d: d.name,
        limit,
        marker,
        c.settings.page_size,
        lambda d: {"name": d.name},
    )


@router.post("/databases", status_code=ACCEPTED)
def create_databases(
    project_id: str,
    instance_id: str,
    body: DatabasesBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "database:create")
    specs = database_specs(body.databases)
    check_ready(c, project_id, instance_id, Capability.DATABASES)
    c.guest(instance_id).create_databases(ctx, specs)
    return _accepted()


@router.get("/databases/{name}")
def show_database(
    project_id: str, instance_id: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "database:index")
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
    raise NotImplementedFault("Showing a single database is not supported; list them instead.")


@router.delete("/databases/{name}", status_code=ACCEPTED)
def delete_database(
    project_id: str, instance_id: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx = authorize(request, project_id, "database:delete")
    checked(names.database_name, name)
    check_ready(c, project_id, instance_id, Capability.DATABASES)
    c.guest(instance_id).delete_database(ctx, name)
    return _accepted()


# -- users -----------------------------------------------------------------------------------


@router.get("/users")
def list_users(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    ctx = authorize(request, project_id, "user:index")
    check_ready(c, project_id, instance_id, Capability.USERS)
    rows = c.guest(instance_id).list_users(ctx)
    return paged(
        request,
        "users",
        rows,
        lambda u: f"{u.name}@{u.host}",
        limit,
        marker,
        c.settings.page_size,
        _user_view,
    )


def _user_view(user: UserInfo) -> dict[str, Any]:
    return {
        "name": user.name,
        "host": user.host,
        "databases": [{"name": d} for d in user.databases],
    }


@router.post("/users", status_code=ACCEPTED)
def create_users(
    project_id: str,
    instance_id: str,
    body: UsersBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "user:create")
    specs = user_specs(body.users)
    datastore = check_ready(c, project_id, instance_id, Capability.USERS)
    for spec in specs:
        host_allowed(datastore, spec.name, spec.host)
    if any(u.databases for u in specs):
        require(datastore, Capability.DATABASES)
    c.guest(instance_id).create_users(ctx, specs)
    return _accepted()


@router.put("/users", status_code=ACCEPTED)
def change_passwords(
    project_id: str,
    instance_id: str,
    body: PasswordsBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "user:update")
    users = []
    for user in body.users:
        name, host = split_user(user.name if not user.host else f"{user.name}@{user.host}")
        checked(names.password, user.password)
        users.append(PasswordChange(name, user.password, host))
    datastore = check_ready(c, project_id, instance_id, Capability.USERS)
    for u in users:
        host_allowed(datastore, u.name, u.host)
    c.guest(instance_id).change_passwords(ctx, users)
    return _accepted()


@router.get("/users/{user}")
def show_user(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "user:show")
    name, host = split_user(user)
    host_allowed(check_ready(c, project_id, instance_id, Capability.USERS), name, host)
    return {"user": _user_view(c.guest(instance_id).get_user(ctx, name, host))}


@router.put("/users/{user}", status_code=ACCEPTED)
def update_user(
    project_id: str,
    instance_id: str,
    user: str,
    body: UserUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "user:update")
    name, host = split_user(user)
    attrs = body.user
    if attrs.name is None and attrs.password is None and attrs.host is None:
        raise BadRequest("Give at least one of 'name', 'password' or 'host' to change.")
    new_host = checked(names.user_host, attrs.host) if attrs.host is not None else None
    if attrs.name is not None:
        checked(names.user_name, attrs.name)
    if attrs.password is not None:
        checked(names.password, attrs.password)
    datastore = check_ready(c, project_id, instance_id, Capability.USERS)
    host_allowed(datastore, name, host)
    if new_host is not None:
        host_allowed(datastore, name, new_host)
    c.guest(instance_id).update_user(
        ctx,
        name,
        host,
        new_name=attrs.name,
        new_password=attrs.password,
        new_host=new_host if new_host != host else None,
    )
    return _accepted()


@router.delete("/users/{user}", status_code=ACCEPTED)
def delete_user(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx = authorize(request, project_id, "user:delete")
    name, host = split_user(user)
    host_allowed(check_ready(c, project_id, instance_id, Capability.USERS), name, host)
    c.guest(instance_id).delete_user(ctx, name, host)
    return _accepted()


@router.get("/users/{user}/databases")
def list_access(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "user:access")
    name, host = split_user(user)
    host_allowed(check_ready(c, project_id, instance_id, Capability.DATABASES), name, host)
    dbs = c.guest(instance_id).list_access(ctx, name, host)
    return {"databases": [{"name": d} for d in dbs]}


@router.put("/users/{user}/databases", status_code=ACCEPTED)
def grant_access(
    project_id: str,
    instance_id: str,
    user: str,
    body: AccessBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "user:grant")
    name, host = split_user(user)
    for ref in body.databases:
        checked(names.database_name, ref.name)
    host_allowed(check_ready(c, project_id, instance_id, Capability.DATABASES), name, host)
    c.guest(instance_id).grant_access(ctx, name, host, [r.name for r in body.databases])
    return _accepted()


@router.delete("/users/{user}/databases/{database}", status_code=ACCEPTED)
def revoke_access(
    project_id: str,
    instance_id: str,
    user: str,
    database: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx = authorize(request, project_id, "user:revoke")
    name, host = split_user(user)
    checked(names.database_name, database)
    host_allowed(check_ready(c, project_id, instance_id, Capability.DATABASES), name, host)
    c.guest(instance_id).revoke_access(ctx, name, host, database)
    return _accepted()


# -- root ------------------------------------------------------------------------------------


@router.get("/root")
def root_status(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx = authorize(request, project_id, "root:show")
    check_ready(c, project_id, instance_id, Capability.ROOT)
    return {"rootEnabled": c.guest(instance_id).is_root_enabled(ctx)}


@router.post("/root")
def enable_root(
    project_id: str,
    instance_id: str,
    request: Request,
    body: RootBody | None = Body(default=None),
    c: ApiContext = Depends(cove),
) -> Any:
    ctx = authorize(request, project_id, "root:enable")
    password = body.password if body and body.password else None
    if password is not None:
        checked(names.password, password)
    else:
        password = generate_password()
    check_ready(c, project_id, instance_id, Capability.ROOT)
    root = c.guest(instance_id).enable_root(ctx, password)
    return {"user": {"name": root.name, "password": password}}


@router.delete("/root", status_code=204)
def disable_root(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx = authorize(request, project_id, "root:disable")
    check_ready(c, project_id, instance_id, Capability.ROOT)
    c.guest(instance_id).disable_root(ctx)
    return Response(status_code=204)
