"""Databases, users, user access and root of an instance (Trove's "Mysql" extension).

These read and change live data on the database server, so every call checks the instance is
ready and then asks its guest agent. A cloud administrator reaches any project's instance here
through its own project's path (cove.api.context.authorize_instance).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Depends, Request, Response

from cove.api.context import ApiContext, authorize_instance, cove
from cove.api.guest import check_ready, require
from cove.api.openapi import answers
from cove.api.responses import DatabaseList, RootEnabled, RootStatus, UserList, UserOne
from cove.api.schemas import (
    AccessBody,
    DatabasesBody,
    PasswordsBody,
    RootBody,
    UsersBody,
    UserUpdateBody,
)
from cove.api.validate import (
    checked,
    database_name,
    database_specs,
    host_allowed,
    user_name,
    user_specs,
)
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

#: What a route that asks the guest agent may answer besides the common faults: no such
#: instance (or user, database), not ready, not on this datastore, no answer from the guest.
GUEST_FAULTS = (404, 422, 501, 503)


def _accepted() -> Response:
    return Response(status_code=ACCEPTED)


def split_user(segment: str) -> tuple[str, str]:
    """``name`` or ``name@host`` (URL-encoded) from the path; the host defaults to '%'. Checks
    the form only: :func:`_reach` checks both against the datastore."""
    text = unquote(segment)
    name, sep, host = text.rpartition("@")
    if not sep:
        name, host = text, "%"
    user_name(name, None)
    return name, checked(names.user_host, host)


def _reach(
    c: ApiContext,
    project_id: str,
    instance_id: str,
    capability: Capability,
    name: str,
    host: str,
    writes: bool = False,
) -> str:
    """Check that the instance is ready for ``capability`` (and, when the request ``writes``,
    takes writes) and that the account ``name``@``host`` is one a request may reach on its
    datastore (not one of the server's or Cove's own); returns the datastore's name. Raises
    what check_ready raises, and BadRequest."""
    datastore = check_ready(c, project_id, instance_id, capability, writes=writes)
    user_name(name, datastore, existing=True)
    host_allowed(datastore, name, host)
    return datastore


# -- databases -------------------------------------------------------------------------------


@router.get("/databases", responses=answers(DatabaseList, *GUEST_FAULTS))
def list_databases(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "database:index")
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


@router.post(
    "/databases",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def create_databases(
    project_id: str,
    instance_id: str,
    body: DatabasesBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "database:create")
    specs = database_specs(body.databases)
    datastore = check_ready(c, project_id, instance_id, Capability.DATABASES, writes=True)
    for spec in specs:
        database_name(spec.name, datastore)
    c.guest(instance_id).create_databases(ctx, specs)
    return _accepted()


@router.get(
    "/databases/{name}", status_code=501, response_class=Response, responses=answers(None, 404, 501)
)
def show_database(
    project_id: str, instance_id: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    _, project_id = authorize_instance(request, project_id, instance_id, "database:index")
    with c.db.session() as s:
        get_instance(s, instance_id, project_id)
    raise NotImplementedFault("Showing a single database is not supported; list them instead.")


@router.delete(
    "/databases/{name}",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def delete_database(
    project_id: str, instance_id: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "database:delete")
    database_name(name, None)
    database_name(name, check_ready(c, project_id, instance_id, Capability.DATABASES, writes=True))
    c.guest(instance_id).delete_database(ctx, name)
    return _accepted()


# -- users -----------------------------------------------------------------------------------


@router.get("/users", responses=answers(UserList, *GUEST_FAULTS))
def list_users(
    project_id: str,
    instance_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:index")
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


@router.post(
    "/users", status_code=ACCEPTED, response_class=Response, responses=answers(None, *GUEST_FAULTS)
)
def create_users(
    project_id: str,
    instance_id: str,
    body: UsersBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:create")
    specs = user_specs(body.users)
    datastore = check_ready(c, project_id, instance_id, Capability.USERS, writes=True)
    for spec in specs:
        user_name(spec.name, datastore)
        host_allowed(datastore, spec.name, spec.host)
        for db in spec.databases:
            database_name(db, datastore)
    if any(u.databases for u in specs):
        require(datastore, Capability.DATABASES)
    c.guest(instance_id).create_users(ctx, specs)
    return _accepted()


@router.put(
    "/users", status_code=ACCEPTED, response_class=Response, responses=answers(None, *GUEST_FAULTS)
)
def change_passwords(
    project_id: str,
    instance_id: str,
    body: PasswordsBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:update")
    users = []
    for user in body.users:
        name, host = split_user(user.name if not user.host else f"{user.name}@{user.host}")
        checked(names.password, user.password)
        users.append(PasswordChange(name, user.password, host))
    datastore = check_ready(c, project_id, instance_id, Capability.USERS, writes=True)
    for u in users:
        user_name(u.name, datastore, existing=True)
        host_allowed(datastore, u.name, u.host)
    c.guest(instance_id).change_passwords(ctx, users)
    return _accepted()


@router.get("/users/{user}", responses=answers(UserOne, *GUEST_FAULTS))
def show_user(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:show")
    name, host = split_user(user)
    _reach(c, project_id, instance_id, Capability.USERS, name, host)
    return {"user": _user_view(c.guest(instance_id).get_user(ctx, name, host))}


@router.put(
    "/users/{user}",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def update_user(
    project_id: str,
    instance_id: str,
    user: str,
    body: UserUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:update")
    name, host = split_user(user)
    attrs = body.user
    if attrs.name is None and attrs.password is None and attrs.host is None:
        raise BadRequest("Give at least one of 'name', 'password' or 'host' to change.")
    new_host = checked(names.user_host, attrs.host) if attrs.host is not None else None
    if attrs.name is not None:
        user_name(attrs.name, None)
    if attrs.password is not None:
        checked(names.password, attrs.password)
    datastore = _reach(c, project_id, instance_id, Capability.USERS, name, host, writes=True)
    if attrs.name is not None and attrs.name != name:
        user_name(attrs.name, datastore)  # a rename takes a new name
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


@router.delete(
    "/users/{user}",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def delete_user(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:delete")
    name, host = split_user(user)
    _reach(c, project_id, instance_id, Capability.USERS, name, host, writes=True)
    c.guest(instance_id).delete_user(ctx, name, host)
    return _accepted()


@router.get("/users/{user}/databases", responses=answers(DatabaseList, *GUEST_FAULTS))
def list_access(
    project_id: str, instance_id: str, user: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:access")
    name, host = split_user(user)
    _reach(c, project_id, instance_id, Capability.DATABASES, name, host)
    dbs = c.guest(instance_id).list_access(ctx, name, host)
    return {"databases": [{"name": d} for d in dbs]}


@router.put(
    "/users/{user}/databases",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def grant_access(
    project_id: str,
    instance_id: str,
    user: str,
    body: AccessBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:grant")
    name, host = split_user(user)
    for ref in body.databases:
        database_name(ref.name, None)
    datastore = _reach(c, project_id, instance_id, Capability.DATABASES, name, host, writes=True)
    for ref in body.databases:
        database_name(ref.name, datastore)
    c.guest(instance_id).grant_access(ctx, name, host, [r.name for r in body.databases])
    return _accepted()


@router.delete(
    "/users/{user}/databases/{database}",
    status_code=ACCEPTED,
    response_class=Response,
    responses=answers(None, *GUEST_FAULTS),
)
def revoke_access(
    project_id: str,
    instance_id: str,
    user: str,
    database: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "user:revoke")
    name, host = split_user(user)
    database_name(database, None)
    database_name(
        database, _reach(c, project_id, instance_id, Capability.DATABASES, name, host, writes=True)
    )
    c.guest(instance_id).revoke_access(ctx, name, host, database)
    return _accepted()


# -- root ------------------------------------------------------------------------------------


@router.get("/root", responses=answers(RootStatus, *GUEST_FAULTS))
def root_status(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "root:show")
    check_ready(c, project_id, instance_id, Capability.ROOT)
    return {"rootEnabled": c.guest(instance_id).is_root_enabled(ctx)}


@router.post("/root", responses=answers(RootEnabled, *GUEST_FAULTS))
def enable_root(
    project_id: str,
    instance_id: str,
    request: Request,
    body: RootBody | None = Body(default=None),
    c: ApiContext = Depends(cove),
) -> Any:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "root:enable")
    password = body.password if body and body.password else None
    if password is not None:
        checked(names.password, password)
    else:
        password = generate_password()
    check_ready(c, project_id, instance_id, Capability.ROOT, writes=True)
    root = c.guest(instance_id).enable_root(ctx, password)
    return {"user": {"name": root.name, "password": password}}


@router.delete(
    "/root", status_code=204, response_class=Response, responses=answers(None, *GUEST_FAULTS)
)
def disable_root(
    project_id: str, instance_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    ctx, project_id = authorize_instance(request, project_id, instance_id, "root:disable")
    check_ready(c, project_id, instance_id, Capability.ROOT, writes=True)
    c.guest(instance_id).disable_root(ctx)
    return Response(status_code=204)
