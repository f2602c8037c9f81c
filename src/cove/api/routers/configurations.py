"""Configuration groups (Trove's ``/configurations``): a project's parameter values for the
instances of one datastore version, validated against the version's catalogue.

Changing a group's values pushes them to every instance it is attached to before the answer
(``api/push.py``); dynamic parameters apply live, static ones leave the instance
RESTART_REQUIRED.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import false, select
from sqlalchemy.orm import Session

from cove.api.context import ApiContext, authorize, cove
from cove.api.guest import require
from cove.api.instances import resolve_version
from cove.api.openapi import answers
from cove.api.push import push, ready_pushes
from cove.api.responses import ConfigurationList, ConfigurationOne, InstanceRefList
from cove.api.schemas import (
    ConfigurationCreateBody,
    ConfigurationPatchBody,
    ConfigurationUpdateBody,
)
from cove.api.validate import checked
from cove.api.views import configuration_view, paged
from cove.common.errors import BadRequest
from cove.common.ids import new_id, utcnow
from cove.db.configurations import (
    attached_ids,
    attached_query,
    catalogue,
    find_configuration,
    instance_counts,
    mark_attached_pending,
    values_of,
    version_label,
)
from cove.db.models import Configuration, DatastoreVersion
from cove.db.quotas import lock_project
from cove.domain import names
from cove.domain.capabilities import Capability
from cove.domain.parameters import Value, validate_values

router = APIRouter(prefix="/v1.0/{project_id}/configurations")

#: Longest description kept (Trove's column holds 256 characters).
DESCRIPTION_MAX = 255


def _accepted(status: int = 202) -> Response:
    return Response(status_code=status)


def _name(value: str) -> str:
    """A group name: Trove's rule for names (non-empty, at most 255 characters, with at least
    one letter or digit). Raises ValidationFailed."""
    return checked(names.instance_name, value).strip()


def _description(value: str | None) -> str | None:
    if value is None:
        return None
    checked(lambda v: names.unicode_text(v, "description"), value)
    if len(value) > DESCRIPTION_MAX:
        raise BadRequest(f"The description is longer than {DESCRIPTION_MAX} characters.")
    return value


def _validated(s: Session, version: DatastoreVersion, values: dict[str, Any]) -> dict[str, Value]:
    """``values`` checked against the version's catalogue. Raises OperationNotSupported (the
    datastore has no configuration groups) and Unprocessable (Trove's 422 messages)."""
    require(version.datastore.name, Capability.CONFIGURATION)
    return validate_values(version_label(version), catalogue(s, version.id), values)


@router.get("", responses=answers(ConfigurationList))
def list_configurations(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "configuration:index")
    with c.db.session() as s:
        groups = s.scalars(
            select(Configuration)
            .where(Configuration.project_id == project_id, Configuration.deleted == false())
            .order_by(Configuration.created, Configuration.id)
        ).all()
        views = [configuration_view(request, g) for g in groups]
    return paged(
        request,
        "configurations",
        views,
        lambda v: str(v["id"]),
        limit,
        marker,
        c.settings.page_size,
    )


@router.post("", responses=answers(ConfigurationOne, 404, 422, 501))
def create_configuration(
    project_id: str, body: ConfigurationCreateBody, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """Create a group; 200 with its detail, as Trove answers."""
    authorize(request, project_id, "configuration:create")
    spec = body.configuration
    name = _name(spec.name)
    description = _description(spec.description)
    now = utcnow()
    with c.db.session() as s:
        version = resolve_version(s, c, spec.datastore)
        values = _validated(s, version, spec.values)
        cfg = Configuration(
            id=new_id(),
            project_id=project_id,
            name=name,
            description=description,
            datastore_version_id=version.id,
            values=json.dumps(values),
            created=now,
            updated=now,
            deleted=False,
        )
        s.add(cfg)
        s.flush()
        s.refresh(cfg)
        return {"configuration": configuration_view(request, cfg, instance_count=0)}


@router.get("/{configuration_id}", responses=answers(ConfigurationOne, 404))
def show_configuration(
    project_id: str, configuration_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "configuration:show")
    with c.db.session() as s:
        cfg = find_configuration(s, configuration_id, project_id)
        count = instance_counts(s, [cfg.id]).get(cfg.id, 0)
        return {"configuration": configuration_view(request, cfg, instance_count=count)}


@router.get("/{configuration_id}/instances", responses=answers(InstanceRefList, 404))
def configuration_instances(
    project_id: str,
    configuration_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "configuration:show")
    with c.db.session() as s:
        cfg = find_configuration(s, configuration_id, project_id)
        items = [{"id": i.id, "name": i.name} for i in s.scalars(attached_query(cfg.id))]
    return paged(
        request, "instances", items, lambda v: str(v["id"]), limit, marker, c.settings.page_size
    )


@router.patch(
    "/{configuration_id}", response_class=Response, responses=answers(None, 404, 422, 501, 503)
)
def patch_configuration(
    project_id: str,
    configuration_id: str,
    body: ConfigurationPatchBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    """Merge values into the group, push them to every attached instance, then answer 200
    with an empty body, as Trove does."""
    ctx = authorize(request, project_id, "configuration:update")
    with c.db.session() as s:
        # Changes of the project's groups and attachments take turns: none is lost.
        lock_project(s, project_id)
        cfg = find_configuration(s, configuration_id, project_id)
        merged = {**values_of(cfg), **body.configuration.values}
        cfg.values = json.dumps(_validated(s, cfg.datastore_version, merged))
        cfg.updated = utcnow()
        pushes = ready_pushes(s, c, mark_attached_pending(s, cfg.id))
    push(c, ctx, pushes)
    return _accepted(200)


@router.put(
    "/{configuration_id}",
    status_code=202,
    response_class=Response,
    responses=answers(None, 404, 422, 501, 503),
)
def update_configuration(
    project_id: str,
    configuration_id: str,
    body: ConfigurationUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    """Replace every value of the group (and its name or description when given), push them
    to every attached instance, then answer 202."""
    ctx = authorize(request, project_id, "configuration:update")
    spec = body.configuration
    name = _name(spec.name) if spec.name is not None else None
    description = _description(spec.description)
    with c.db.session() as s:
        lock_project(s, project_id)
        cfg = find_configuration(s, configuration_id, project_id)
        cfg.values = json.dumps(_validated(s, cfg.datastore_version, spec.values))
        if name is not None:
            cfg.name = name
        if "description" in spec.model_fields_set:
            cfg.description = description
        cfg.updated = utcnow()
        pushes = ready_pushes(s, c, mark_attached_pending(s, cfg.id))
    push(c, ctx, pushes)
    return _accepted()


@router.delete(
    "/{configuration_id}", status_code=202, response_class=Response, responses=answers(None, 404)
)
def delete_configuration(
    project_id: str, configuration_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Response:
    """Delete a group no instance uses (400 while one does, as in Trove)."""
    authorize(request, project_id, "configuration:delete")
    with c.db.session() as s:
        lock_project(s, project_id)
        cfg = find_configuration(s, configuration_id, project_id)
        if attached_ids(s, cfg.id):
            raise BadRequest(
                f"Configuration group {configuration_id} is attached to instances; "
                "detach it from them first."
            )
        now = utcnow()
        cfg.deleted = True
        cfg.deleted_at = now
        cfg.updated = now
    return _accepted()
