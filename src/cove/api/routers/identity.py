"""The embedded identity service's Keystone v3 endpoints under ``/identity``: version
discovery, tokens (issue, validate, check, revoke) and the project look-ups clients make.

Errors here use Keystone's ``{"error": {...}}`` shape (see cove.api.errors). With
``auth_strategy = "keystone"`` these endpoints answer 404: the external Keystone is the
identity service then.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from cove.api.context import ApiContext, cove
from cove.api.openapi import answers, keystone_faults
from cove.api.policy import effective_roles
from cove.api.responses import (
    KeystoneVersionList,
    KeystoneVersionOne,
    ProjectList,
    ProjectOne,
    Token,
)
from cove.common.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from cove.common.text import shown
from cove.db.models import Project, RoleAssignment
from cove.identity import store
from cove.identity.service import HASH_WAIT_SECONDS, IdentityService, hash_slots
from cove.identity.tokens import TokenClaims

router = APIRouter(prefix="/identity")

V3_UPDATED = "2020-04-07T00:00:00Z"


def _identity(c: ApiContext) -> IdentityService:
    if c.identity is None:
        raise NotFound("This Cove uses an external identity service.")
    return c.identity


def _v3(request: Request, c: ApiContext) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": V3_UPDATED,
        "links": [{"rel": "self", "href": f"{c.base_url(request)}/identity/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@router.get("", status_code=300, responses={300: {"model": KeystoneVersionList}})
@router.get("/", status_code=300, responses={300: {"model": KeystoneVersionList}})
def identity_versions(request: Request, c: ApiContext = Depends(cove)) -> JSONResponse:
    _identity(c)
    return JSONResponse({"versions": {"values": [_v3(request, c)]}}, status_code=300)


@router.get("/v3", responses=answers(KeystoneVersionOne))
@router.get("/v3/", responses=answers(KeystoneVersionOne))
def identity_v3(request: Request, c: ApiContext = Depends(cove)) -> Any:
    _identity(c)
    return {"version": _v3(request, c)}


def _caller(request: Request, identity: IdentityService) -> TokenClaims:
    token = request.headers.get("x-auth-token", "").strip()
    if not token:
        raise Unauthorized("The request you have made requires authentication.")
    return identity.check(token)


def _allowed(c: ApiContext, rule: str, caller: TokenClaims) -> bool:
    return c.policy.allows(rule, effective_roles(caller.roles, caller.admin_project))


def _subject(
    request: Request,
    c: ApiContext,
    identity: IdentityService,
    caller: TokenClaims,
    rule: str = "identity:validate_token",
) -> TokenClaims:
    """The token named by ``X-Subject-Token``, which the caller may act on if it is its own
    or the policy ``rule`` lets it (by default: cloud administrators and services).

    Raises BadRequest without the header, NotFound for an invalid subject, Forbidden.
    """
    subject = request.headers.get("x-subject-token", "").strip()
    if not subject:
        raise BadRequest("The X-Subject-Token header is required.")
    if not _allowed(c, rule, caller):
        try:
            claims = identity.check(subject)
        except Unauthorized as exc:
            raise NotFound("Could not find token.") from exc
        if claims.user_id != caller.user_id:
            raise Forbidden("You are not authorized to perform the requested action.")
        return claims
    try:
        return identity.check(subject)
    except Unauthorized as exc:
        raise NotFound("Could not find token.") from exc


def _login_slots(c: ApiContext) -> anyio.CapacityLimiter:
    """The API's limiter of concurrent logins, made on first use (in the event loop, where
    anyio can make one)."""
    if c.login_slots is None:
        c.login_slots = anyio.CapacityLimiter(hash_slots())
    slots: anyio.CapacityLimiter = c.login_slots
    return slots


@router.post(
    "/v3/auth/tokens",
    status_code=201,
    responses={**answers(Token, status=201), **keystone_faults(400, 401, 404, 503)},
)
async def issue_token(request: Request, c: ApiContext = Depends(cove)) -> JSONResponse:
    identity = _identity(c)
    try:
        body = await request.json()
    except (ValueError, RecursionError) as exc:
        raise BadRequest("The request body is not valid JSON.") from exc
    client = request.client.host if request.client else ""
    # Password hashing is slow on purpose: it runs off the event loop, and logins wait for a
    # slot here, in the event loop, not in a worker thread the rest of the API needs.
    slots = _login_slots(c)
    try:
        with anyio.fail_after(HASH_WAIT_SECONDS):
            await slots.acquire()
    except TimeoutError as exc:
        raise ServiceUnavailable("The identity service is busy; try again.") from exc
    try:
        token, claims = await anyio.to_thread.run_sync(identity.authenticate, body, client)
    finally:
        slots.release()
    nocatalog = "nocatalog" in request.query_params
    doc = identity.token_document(claims, c.base_url(request), catalog=not nocatalog)
    return JSONResponse(doc, status_code=201, headers={"X-Subject-Token": token})


@router.get("/v3/auth/tokens", responses={**answers(Token), **keystone_faults(400, 401, 403, 404)})
def validate_token(request: Request, c: ApiContext = Depends(cove)) -> JSONResponse:
    identity = _identity(c)
    claims = _subject(request, c, identity, _caller(request, identity))
    nocatalog = "nocatalog" in request.query_params
    doc = identity.token_document(claims, c.base_url(request), catalog=not nocatalog)
    subject = request.headers["x-subject-token"].strip()
    return JSONResponse(doc, headers={"X-Subject-Token": subject})


@router.head(
    "/v3/auth/tokens", response_class=Response, responses=keystone_faults(400, 401, 403, 404)
)
def check_token(request: Request, c: ApiContext = Depends(cove)) -> Response:
    identity = _identity(c)
    _subject(request, c, identity, _caller(request, identity))
    return Response(status_code=200)


@router.delete(
    "/v3/auth/tokens",
    status_code=204,
    response_class=Response,
    responses=keystone_faults(400, 401, 403, 404),
)
def revoke_token(request: Request, c: ApiContext = Depends(cove)) -> Response:
    identity = _identity(c)
    claims = _subject(request, c, identity, _caller(request, identity), "identity:revoke_token")
    identity.revoke(claims)
    return Response(status_code=204)


def _project_view(request: Request, c: ApiContext, p: Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "enabled": p.enabled,
        "domain_id": store.DOMAIN["id"],
        "parent_id": store.DOMAIN["id"],
        "is_domain": False,
        "tags": [],
        "links": {"self": f"{c.base_url(request)}/identity/v3/projects/{p.id}"},
    }


def _visible_projects(c: ApiContext, caller: TokenClaims, name: str | None) -> list[Project]:
    with c.db.session() as s:
        query = select(Project).order_by(Project.name)
        if not _allowed(c, "identity:list_projects", caller):
            mine = select(RoleAssignment.project_id).where(RoleAssignment.user_id == caller.user_id)
            query = query.where(Project.id.in_(mine))
        if name is not None:
            query = query.where(Project.name == name)
        return list(s.scalars(query))


@router.get("/v3/projects", responses={**answers(ProjectList), **keystone_faults(401, 404)})
def list_projects(request: Request, name: str | None = None, c: ApiContext = Depends(cove)) -> Any:
    caller = _caller(request, _identity(c))
    projects = _visible_projects(c, caller, name)
    return {
        "projects": [_project_view(request, c, p) for p in projects],
        "links": {"self": str(request.url), "previous": None, "next": None},
    }


@router.get("/v3/auth/projects", responses={**answers(ProjectList), **keystone_faults(401, 404)})
def list_auth_projects(request: Request, c: ApiContext = Depends(cove)) -> Any:
    caller = _caller(request, _identity(c))
    with c.db.session() as s:
        mine = select(RoleAssignment.project_id).where(RoleAssignment.user_id == caller.user_id)
        projects = list(s.scalars(select(Project).where(Project.id.in_(mine), Project.enabled)))
    return {
        "projects": [_project_view(request, c, p) for p in projects],
        "links": {"self": str(request.url), "previous": None, "next": None},
    }


@router.get(
    "/v3/projects/{project_id}", responses={**answers(ProjectOne), **keystone_faults(401, 404)}
)
def show_project(project_id: str, request: Request, c: ApiContext = Depends(cove)) -> Any:
    caller = _caller(request, _identity(c))
    for p in _visible_projects(c, caller, None):
        if p.id == project_id:
            return {"project": _project_view(request, c, p)}
    raise NotFound(f"Could not find project: {shown(project_id)}.")
