"""Configuration groups and parameter catalogues in the control database."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, false, func, select, update
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, NotFound
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db.models import Configuration, DatastoreVersion, DatastoreVersionParameter, Instance
from cove.domain.parameters import Parameter, ParamType, Value, denied


def version_label(version: DatastoreVersion) -> str:
    """How messages name a version: ``postgresql 15``."""
    return f"{version.datastore.name} {version.name}"


def _number(text: str | None) -> int | float | None:
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parameter(row: DatastoreVersionParameter) -> Parameter:
    allowed = json.loads(row.allowed) if row.allowed is not None else None
    return Parameter(
        name=row.name,
        type=ParamType(row.type),
        restart_required=row.restart_required,
        min=_number(row.min),
        max=_number(row.max),
        allowed=tuple(str(a) for a in allowed) if allowed is not None else None,
    )


def catalogue(session: Session, version_id: str) -> dict[str, Parameter]:
    """The parameters of a version by name, sorted by name (empty: groups are not supported).

    The deny-list applies again here: a catalogue read before a parameter was denied (it is
    read again only when the binaries change) never offers it."""
    manager = session.scalar(
        select(DatastoreVersion.manager).where(DatastoreVersion.id == version_id)
    )
    rows = session.scalars(
        select(DatastoreVersionParameter)
        .where(DatastoreVersionParameter.datastore_version_id == version_id)
        .order_by(DatastoreVersionParameter.name)
    )
    return {row.name: _parameter(row) for row in rows if not denied(str(manager), row.name)}


def store_catalogue(
    session: Session, version: DatastoreVersion, params: Iterable[Parameter], read_for: str | None
) -> int:
    """Replace the catalogue of ``version`` with ``params`` and record the exact version it
    was read for (None: none was read, so the next registration tries again). Returns how
    many parameters were stored; a name given twice keeps its first entry."""
    session.execute(
        delete(DatastoreVersionParameter).where(
            DatastoreVersionParameter.datastore_version_id == version.id
        )
    )
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            continue
        seen.add(p.name)
        session.add(
            DatastoreVersionParameter(
                datastore_version_id=version.id,
                name=p.name,
                type=p.type.value,
                min=json.dumps(p.min) if p.min is not None else None,
                max=json.dumps(p.max) if p.max is not None else None,
                allowed=json.dumps(list(p.allowed)) if p.allowed is not None else None,
                restart_required=p.restart_required,
            )
        )
    version.parameters_version = read_for
    return len(seen)


def get_configuration(
    session: Session, configuration_id: str, project_id: str | None = None
) -> Configuration:
    """The live group ``configuration_id`` (of ``project_id`` when given: another project's
    group is not found, as if it did not exist).

    Raises NotFound.
    """
    cfg = session.get(Configuration, configuration_id)
    if cfg is None or cfg.deleted or (project_id is not None and cfg.project_id != project_id):
        raise NotFound(f"Configuration group {shown(configuration_id)} could not be found.")
    return cfg


def find_configuration(session: Session, ref: str, project_id: str) -> Configuration:
    """The project's live group ``ref`` names, by id or, failing that, by name (the openstack
    client sends what its user typed).

    Raises NotFound, and BadRequest when several groups of the project have that name.
    """
    try:
        return get_configuration(session, ref, project_id)
    except NotFound:
        named = list(
            session.scalars(
                select(Configuration).where(
                    Configuration.project_id == project_id,
                    Configuration.name == ref,
                    Configuration.deleted == false(),
                )
            )
        )
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise BadRequest(
                f"Several configuration groups are named {shown(ref)}; name the one meant by "
                "its id."
            ) from None
        raise


def values_of(cfg: Configuration | None) -> dict[str, Value]:
    """A group's values (none without a group)."""
    if cfg is None:
        return {}
    data: Any = json.loads(cfg.values or "{}")
    return dict(data) if isinstance(data, dict) else {}


def attached_query(configuration_id: str) -> Any:
    """The live instances a group is attached to, oldest first."""
    return (
        select(Instance)
        .where(Instance.configuration_id == configuration_id, Instance.deleted == false())
        .order_by(Instance.created, Instance.id)
    )


def attached_ids(session: Session, configuration_id: str) -> list[str]:
    query = select(Instance.id).where(
        Instance.configuration_id == configuration_id, Instance.deleted == false()
    )
    return list(session.scalars(query.order_by(Instance.created, Instance.id)))


def settings_changed(now: datetime | None = None) -> dict[str, Any]:
    """The values an UPDATE of instance rows sets, in the transaction that changes their
    settings (flavor, volume, configuration): the ``settings_pending`` mark, the change counted
    in ``settings_revision`` (so a guest refuses a push, still under way, of the settings as
    they were before), and ``updated`` touched (so such a push does not clear the mark)."""
    return {
        "settings_pending": True,
        "settings_revision": Instance.settings_revision + 1,
        "updated": now or utcnow(),
    }


def mark_attached_pending(session: Session, configuration_id: str) -> list[str]:
    """In the transaction that changes a group's values: mark every live instance it is
    attached to ``settings_pending`` (as ``cove.db.instances.mark_settings_pending`` does one);
    returns their ids, oldest first."""
    session.execute(
        update(Instance)
        .where(Instance.configuration_id == configuration_id, Instance.deleted == false())
        .values(**settings_changed())
    )
    return attached_ids(session, configuration_id)


def instance_counts(session: Session, configuration_ids: list[str]) -> dict[str, int]:
    """How many live instances each group is attached to."""
    if not configuration_ids:
        return {}
    rows = session.execute(
        select(Instance.configuration_id, func.count())
        .where(Instance.configuration_id.in_(configuration_ids), Instance.deleted == false())
        .group_by(Instance.configuration_id)
    ).all()
    return {str(cid): int(n) for cid, n in rows}


def check_same_version(cfg: Configuration, version: DatastoreVersion) -> None:
    """Raises BadRequest unless ``cfg`` is a group of ``version``."""
    if cfg.datastore_version_id != version.id:
        raise BadRequest(
            f"Configuration group {cfg.id} is for {version_label(cfg.datastore_version)}, "
            f"but the instance runs {version_label(version)}: a group applies only to "
            "instances of its own datastore version."
        )
