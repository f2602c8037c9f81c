"""Versions, flavors, datastores and limits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from cove.api.context import ApiContext, authorize, cove
from cove.api.openapi import answers
from cove.api.responses import (
    ApiVersionList,
    ApiVersionOne,
    ConfigurationParameter,
    ConfigurationParameterList,
    DatastoreList,
    DatastoreOne,
    DatastoreVersionList,
    DatastoreVersionOne,
    FlavorList,
    FlavorOne,
    LimitList,
)
from cove.api.views import datastore_view, flavor_view, paged, parameter_view, version_view
from cove.common.errors import DatastoreVersionNotFound, NotFound
from cove.common.text import shown
from cove.db.catalog import find_flavor, get_datastore, get_version
from cove.db.configurations import catalogue, version_label
from cove.db.models import Datastore, DatastoreVersion, Flavor
from cove.db.quotas import effective_limits

router = APIRouter()

VERSION_UPDATED = "2012-08-01T00:00:00Z"


def _version_doc(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "id": "v1.0",
        "status": "CURRENT",
        "updated": VERSION_UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v1.0/"}],
    }


@router.get("/", responses=answers(ApiVersionList))
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [_version_doc(request)]}


@router.get("/v1.0", responses=answers(ApiVersionOne))
@router.get("/v1.0/", responses=answers(ApiVersionOne))
def version(request: Request) -> dict[str, Any]:
    return {"version": _version_doc(request)}


def _by_id(view: dict[str, Any]) -> str:
    return str(view["id"])


def _paged(
    request: Request,
    c: ApiContext,
    name: str,
    views: list[dict[str, Any]],
    limit: int | None,
    marker: str | None,
    item_id: Callable[[dict[str, Any]], str] = _by_id,
) -> dict[str, Any]:
    """``{name: page}`` of ``views`` after the one whose ``item_id`` is ``marker``, with the
    ``next`` link when more follow."""
    return paged(request, name, views, item_id, limit, marker, c.settings.page_size)


@router.get("/v1.0/{project_id}/flavors", responses=answers(FlavorList))
def list_flavors(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "flavor:index")
    with c.db.session() as s:
        flavors = s.scalars(select(Flavor).where(Flavor.active.is_(True))).all()
        ordered = sorted(flavors, key=lambda f: (f.ram, f.vcpus, f.name))
        views = [flavor_view(request, project_id, f) for f in ordered]
    # Trove's flavor marker is the string id: the numeric "id" is null for named flavors.
    return _paged(request, c, "flavors", views, limit, marker, lambda v: str(v["str_id"]))


@router.get("/v1.0/{project_id}/flavors/{flavor_id}", responses=answers(FlavorOne, 404))
def show_flavor(
    project_id: str, flavor_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "flavor:index")
    with c.db.session() as s:
        return {"flavor": flavor_view(request, project_id, find_flavor(s, flavor_id))}


@router.get("/v1.0/{project_id}/datastores", responses=answers(DatastoreList))
def list_datastores(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        stores = s.scalars(select(Datastore).order_by(Datastore.name)).all()
        views = [
            datastore_view(request, project_id, d)
            for d in stores
            if any(v.active for v in d.versions)
        ]
    return _paged(request, c, "datastores", views, limit, marker)


@router.get(
    "/v1.0/{project_id}/datastores/versions/{version_id}",
    responses=answers(DatastoreVersionOne, 404),
)
def show_version_by_id(
    project_id: str, version_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        version = s.get(DatastoreVersion, version_id)
        if version is None or not version.active:
            raise DatastoreVersionNotFound(
                f"Datastore version '{shown(version_id)}' cannot be found."
            )
        return {"version": version_view(request, project_id, version)}


@router.get("/v1.0/{project_id}/datastores/{datastore}", responses=answers(DatastoreOne, 404))
def show_datastore(
    project_id: str, datastore: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        return {"datastore": datastore_view(request, project_id, get_datastore(s, datastore))}


@router.get(
    "/v1.0/{project_id}/datastores/{datastore}/versions",
    responses=answers(DatastoreVersionList, 404),
)
def list_versions(
    project_id: str,
    datastore: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        ds = get_datastore(s, datastore)
        views = [version_view(request, project_id, v) for v in ds.versions if v.active]
    return _paged(request, c, "versions", views, limit, marker)


@router.get(
    "/v1.0/{project_id}/datastores/{datastore}/versions/{version_ref}",
    responses=answers(DatastoreVersionOne, 404),
)
def show_version(
    project_id: str,
    datastore: str,
    version_ref: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        version = get_version(s, get_datastore(s, datastore), version_ref)
        if not version.active:
            raise DatastoreVersionNotFound(
                f"Datastore version '{shown(version_ref)}' is not active."
            )
        return {"version": version_view(request, project_id, version)}


@router.get(
    "/v1.0/{project_id}/datastores/{datastore}/versions/{version_ref}/flavors",
    responses=answers(FlavorList, 404),
)
def version_flavors(
    project_id: str,
    datastore: str,
    version_ref: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "datastore:index")
    with c.db.session() as s:
        get_version(s, get_datastore(s, datastore), version_ref)
    return list_flavors(project_id, request, limit, marker, c)


def _active_version_by_id(s: Any, version_id: str) -> DatastoreVersion:
    version = s.get(DatastoreVersion, version_id)
    if version is None or not version.active:
        raise DatastoreVersionNotFound(f"Datastore version '{shown(version_id)}' cannot be found.")
    return version  # type: ignore[no-any-return]


def _active_version(s: Any, datastore: str, version_ref: str) -> DatastoreVersion:
    version = get_version(s, get_datastore(s, datastore), version_ref)
    if not version.active:
        raise DatastoreVersionNotFound(f"Datastore version '{shown(version_ref)}' is not active.")
    return version


def _parameters(version: DatastoreVersion, s: Any) -> dict[str, Any]:
    """Trove's ``{"configuration-parameters": [...]}`` of a version, sorted by name (empty
    when configuration groups are not supported for it)."""
    params = catalogue(s, version.id).values()
    return {"configuration-parameters": [parameter_view(p, version.id) for p in params]}


def _parameter(version: DatastoreVersion, name: str, s: Any) -> dict[str, Any]:
    """One parameter, unwrapped as Trove answers. Raises NotFound."""
    param = catalogue(s, version.id).get(name)
    if param is None:
        raise NotFound(
            f"Configuration parameter '{shown(name)}' cannot be found for datastore version "
            f"{version_label(version)}."
        )
    return parameter_view(param, version.id)


@router.get(
    "/v1.0/{project_id}/datastores/versions/{version_id}/parameters",
    responses=answers(ConfigurationParameterList, 404),
)
def list_parameters_by_version_id(
    project_id: str, version_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "configuration-parameter:index")
    with c.db.session() as s:
        return _parameters(_active_version_by_id(s, version_id), s)


@router.get(
    "/v1.0/{project_id}/datastores/versions/{version_id}/parameters/{name}",
    responses=answers(ConfigurationParameter, 404),
)
def show_parameter_by_version_id(
    project_id: str, version_id: str, name: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "configuration-parameter:index")
    with c.db.session() as s:
        return _parameter(_active_version_by_id(s, version_id), name, s)


@router.get(
    "/v1.0/{project_id}/datastores/{datastore}/versions/{version_ref}/parameters",
    responses=answers(ConfigurationParameterList, 404),
)
def list_parameters(
    project_id: str,
    datastore: str,
    version_ref: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "configuration-parameter:index")
    with c.db.session() as s:
        return _parameters(_active_version(s, datastore, version_ref), s)


@router.get(
    "/v1.0/{project_id}/datastores/{datastore}/versions/{version_ref}/parameters/{name}",
    responses=answers(ConfigurationParameter, 404),
)
def show_parameter(
    project_id: str,
    datastore: str,
    version_ref: str,
    name: str,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "configuration-parameter:index")
    with c.db.session() as s:
        return _parameter(_active_version(s, datastore, version_ref), name, s)


@router.get("/v1.0/{project_id}/limits", responses=answers(LimitList))
def limits(project_id: str, request: Request, c: ApiContext = Depends(cove)) -> Any:
    """The project's absolute limits (defaults overlaid with its overrides), then one rate limit
    per verb with what is left of the current minute."""
    authorize(request, project_id, "limits:index")
    with c.db.session() as s:
        quota = effective_limits(s, c.settings, project_id)
    absolute: dict[str, Any] = {"verb": "ABSOLUTE"}
    absolute.update({f"max_{r}": quota[r] for r in ("instances", "ram", "backups", "volumes")})
    rates = [
        {
            "verb": r.verb,
            "uri": "*",
            "regex": ".*",
            "value": r.value,
            "remaining": r.remaining,
            "unit": "MINUTE",
            "nextAvailable": datetime.fromtimestamp(r.next_available, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
        for r in (c.limiter.state(project_id) if c.limiter.per_minute > 0 else [])
    ]
    return {"limits": [absolute, *rates]}
