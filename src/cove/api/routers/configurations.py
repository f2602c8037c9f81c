"""Configuration groups (Trove's ``/configurations``): a project's parameter values for the
instances of one datastore version, validated against the version's catalogue.

Changing a group's values has the task manager push them to every instance it is attached to;
dynamic parameters apply live, static ones leave the instance RESTART_REQUIRED.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import false, select
from sqlalchemy.orm import Session

from cove.api.context import ApiContext, authorize, cove
from cove.api.guest import require
from cove.api.instances import resolve_version
from cove.api.schemas import (
    ConfigurationCreateBody,
    ConfigurationPatchBody,
    ConfigurationUpdateBody,
)
from cove.api.validate import checked
from cove.api.views import configuration_view, paged
from cove.common.errors import BadRequest, CoveError, ServiceUnavailable
from cove.common.ids import new_id, utcnow
from cove.db.configurations import (
    attached_ids,
    attached_query,
    catalogue,
    find_configuration,
    instance_counts,
    values_of,
    version_label,
)
from cove.db.models import Configuration, DatastoreVersion
from cove.db.quotas import lock_project
from cove.domain import names
from cove.domain.capabilities import Capability
from cove.domain.parameters import Value, validate_values
from cove.rpc import RequestContext

LOG = logging.getLogger(__name__)

router = APIRouter(prefix="/v1.0/{project_id}/configurations")

#: Longest description kept (Trove's column holds 256 characters).
DESCRIPTION_MAX = 255


def _accepted(status: int = 202) -> Response:
    return Response(status_code=status, media_type="application/json")


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


def _push(c: ApiContext, ctx: RequestContext, instance_ids: list[str]) -> None:
    """Ask the task manager to apply the settings of each instance.

    Raises ServiceUnavailable when the bus failed for any of them (after trying all): the
    values are saved, and sending the same request again pushes them.
    """
    failed: list[str] = []
    for instance_id in instance_ids:
        try:
            c.taskmanager.update_configuration(ctx, instance_id)
        except CoveError as exc:
            LOG.error("could not ask the task manager to update instance %s: %s", instance_id, exc)
            failed.append(instance_id)
    if failed:
        raise ServiceUnavailable(
            "The values were saved, but the task manager could not be reached to apply them to "
            f"instance(s) {', '.join(failed)}; send the request again to apply them."
        )


@router.get("")
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


@router.post("")
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


@router.get("/{configuration_id}")
def show_configuration(
    project_id: str, configuration_id: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    authorize(request, project_id, "configuration:show")
    with c.db.session() as s:
        cfg = find_configuration(s, configuration_id, project_id)
        count = instance_counts(s, [cfg.id]).get(cfg.id, 0)
        return {"configuration": configuration_view(request, cfg, instance_count=count)}


@router.get("/{configuration_id}/instances")
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


@router.patch("/{configuration_id}")
def patch_configuration(
    project_id: str,
    configuration_id: str,
    body: ConfigurationPatchBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    """Merge values into the group (200, empty body, as Trove answers), then push them to
    every attached instance."""
    ctx = authorize(request, project_id, "configuration:update")
    with c.db.session() as s:
        # Changes of the project's groups and attachments take turns: none is lost.
        lock_project(s, project_id)
        cfg = find_configuration(s, configuration_id, project_id)
        merged = {**values_of(cfg), **body.configuration.values}
        cfg.values = json.dumps(_validated(s, cfg.datastore_version, merged))
        cfg.updated = utcnow()
        targets = attached_ids(s, cfg.id)
    _push(c, ctx, targets)
    return _accepted(200)


@router.put("/{configuration_id}")
def update_configuration(
    project_id: str,
    configuration_id: str,
    body: ConfigurationUpdateBody,
    request: Request,
    c: ApiContext = Depends(cove),
) -> Response:
    """Replace every value of the group (and its name or description when given); 202, then
    push them to every attached instance."""
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
        targets = attached_ids(s, cfg.id)
    _push(c, ctx, targets)
    return _accepted()


@router.delete("/{configuration_id}")
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
