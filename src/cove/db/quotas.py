"""Per-project quotas: operator defaults, per-project overrides, usage counted from the rows.

Four resources are limited: ``instances`` (a count), ``ram`` (MB, the sum of the instances'
flavors), ``volumes`` (GB, the sum of the instances' volume sizes) and ``backups`` (a count).
A limit of -1 means unlimited. The operator's defaults come from the settings
(``max_<resource>_per_project``); a row of the ``quotas`` table overrides one for one project.

Usage is never stored: it is counted from the live rows inside the transaction that creates the
resource, after :func:`lock_project` has made concurrent creates in the same project take turns,
so two of them can never both see the last free unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import false, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, NotFound, QuotaExceeded, ServiceUnavailable
from cove.common.settings import Settings
from cove.common.text import shown
from cove.db.backups import backups_in_use
from cove.db.models import Flavor, Instance, Project, ProjectLock, Quota
from cove.domain import names

RESOURCES = ("instances", "ram", "volumes", "backups")
UNITS = {"instances": "", "ram": " MB", "volumes": " GB", "backups": ""}
UNLIMITED = -1
#: The largest limit the control database's integer column holds on every backend.
MAX_LIMIT = 2**31 - 1
#: The width of the project id columns.
MAX_PROJECT_ID = 64


@dataclass(frozen=True)
class QuotaUsage:
    """One resource of a project: what is in use, what is reserved (always 0: usage is
    counted inside the creating transaction, so nothing is held in between) and the limit."""

    in_use: int
    reserved: int
    limit: int


def _bump(s: Session, project_id: str) -> bool:
    result = s.execute(
        update(ProjectLock)
        .where(ProjectLock.project_id == project_id)
        .values(serial=ProjectLock.serial + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def lock_project(s: Session, project_id: str) -> None:
    """Take the project's lock row for the rest of the transaction (created if missing).

    Call it first in the transaction: on SQLite the UPDATE takes the database's write lock, on
    PostgreSQL and MariaDB the row lock, so a second transaction of the same project waits here
    until the first has committed and then counts what the first created.

    Raises ServiceUnavailable if the row can be neither updated nor created (never expected).
    """
    for _attempt in range(3):
        if _bump(s, project_id):
            return
        # The project's first locked transaction. Two may get here together (PostgreSQL: an
        # UPDATE of no row locks nothing): the second INSERT waits on the first's uncommitted
        # key and fails once it commits; the UPDATE is then retried and waits as usual.
        try:
            with s.begin_nested():
                s.execute(insert(ProjectLock).values(project_id=project_id, serial=1))
            return
        except IntegrityError:
            continue
    raise ServiceUnavailable(f"Could not lock project {project_id}; try again.")


def default_limits(settings: Settings) -> dict[str, int]:
    """The operator's limits for every project without an override."""
    return {
        "instances": settings.max_instances_per_project,
        "ram": settings.max_ram_per_project,
        "volumes": settings.max_volumes_per_project,
        "backups": settings.max_backups_per_project,
    }


def effective_limits(s: Session, settings: Settings, project_id: str) -> dict[str, int]:
    """The project's limits: the defaults overlaid with the project's overrides."""
    limits = default_limits(settings)
    for row in s.scalars(select(Quota).where(Quota.project_id == project_id)):
        if row.resource in limits:
            limits[row.resource] = row.hard_limit
    return limits


def usage(s: Session, project_id: str) -> dict[str, int]:
    """What the project holds now, counted from its live (not deleted) rows."""
    count, ram, volumes = s.execute(
        select(
            func.count(Instance.id),
            func.coalesce(func.sum(Flavor.ram), 0),
            func.coalesce(func.sum(Instance.volume_size), 0),
        )
        .join(Instance.flavor)
        .where(Instance.project_id == project_id, Instance.deleted == false())
    ).one()
    return {
        "instances": int(count),
        "ram": int(ram),
        "volumes": int(volumes),
        "backups": backups_in_use(s, project_id),
    }


def quota_usage(s: Session, settings: Settings, project_id: str) -> dict[str, QuotaUsage]:
    """Usage and limit of every resource of the project, in the order of RESOURCES."""
    limits = effective_limits(s, settings, project_id)
    used = usage(s, project_id)
    return {r: QuotaUsage(in_use=used[r], reserved=0, limit=limits[r]) for r in RESOURCES}


def _over(requested: Mapping[str, int], quotas: Mapping[str, QuotaUsage]) -> list[str]:
    return [
        r
        for r, want in requested.items()
        if want > 0 and quotas[r].limit != UNLIMITED and quotas[r].in_use + want > quotas[r].limit
    ]


def check_instance_quota(
    s: Session, settings: Settings, project_id: str, ram: int, volume: int
) -> None:
    """Raises QuotaExceeded when one more instance of ``ram`` MB and ``volume`` GB would
    exceed a quota of the project. Call it after :func:`lock_project` in the same transaction."""
    _check(s, settings, project_id, {"instances": 1, "ram": ram, "volumes": volume})


def check_backup_quota(s: Session, settings: Settings, project_id: str) -> None:
    """Raises QuotaExceeded when one more backup would exceed the project's ``backups``
    quota. Call it after :func:`lock_project` in the same transaction."""
    _check(s, settings, project_id, {"backups": 1})


def check_resize_quota(
    s: Session, settings: Settings, project_id: str, ram: int = 0, volume: int = 0
) -> None:
    """Raises QuotaExceeded when growing an instance by ``ram`` MB and ``volume`` GB would
    exceed a quota of the project (shrinking is always within quota). Call it after
    :func:`lock_project` in the same transaction that records the new size."""
    _check(s, settings, project_id, {"ram": ram, "volumes": volume})


def _check(s: Session, settings: Settings, project_id: str, requested: dict[str, int]) -> None:
    quotas = quota_usage(s, settings, project_id)
    over = _over(requested, quotas)
    if not over:
        return
    details = "; ".join(
        f"{r}: {quotas[r].in_use}{UNITS[r]} in use of {quotas[r].limit}{UNITS[r]}, "
        f"{requested[r]}{UNITS[r]} more requested"
        for r in over
    )
    raise QuotaExceeded(f"Quota exceeded for resources: {over}. {details}.")


def check_project(s: Session, settings: Settings, project_id: str) -> None:
    """Refuse a project whose quotas cannot be shown or set.

    Raises BadRequest for an id that is empty or longer than the column. With the embedded
    identity service Cove owns the projects, so one it does not hold raises NotFound; with an
    external Keystone the projects live there and any well-formed id is accepted.
    """
    if not project_id or len(project_id) > MAX_PROJECT_ID:
        raise BadRequest(f"A project id has 1 to {MAX_PROJECT_ID} characters.")
    if settings.auth_strategy == "embedded" and s.get(Project, project_id) is None:
        raise NotFound(f"Project {project_id} could not be found.")


def _checked_limit(resource: str, limit: object) -> int:
    try:
        names.unicode_text(resource, "A quota resource name")
    except ValueError as exc:
        raise BadRequest(f"{exc}.") from None
    if resource not in RESOURCES:
        raise NotFound(
            f"Quota resource '{shown(resource)}' does not exist (resources: {RESOURCES})."
        )
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise BadRequest(f"The limit of '{resource}' must be an integer.")
    if limit < UNLIMITED or limit > MAX_LIMIT:
        raise BadRequest(
            f"The limit of '{resource}' must be between -1 (unlimited) and {MAX_LIMIT}."
        )
    return limit


def set_quotas(
    s: Session, settings: Settings, project_id: str, limits: Mapping[str, object]
) -> dict[str, int]:
    """Override the project's limits (all or none of ``limits``); returns what was set.

    Takes the project's lock, so a change and a create in the project never interleave.
    Raises NotFound for an unknown resource or project (see :func:`check_project`),
    BadRequest for a limit that is not an integer of at least -1, for a resource name that is
    not valid Unicode text, for no limits at all and for a malformed project id.
    """
    if not limits:
        raise BadRequest("No quotas were given.")
    check_project(s, settings, project_id)
    checked = {r: _checked_limit(r, v) for r, v in limits.items()}
    lock_project(s, project_id)
    for resource, limit in checked.items():
        row = s.get(Quota, (project_id, resource))
        if row is None:
            s.add(Quota(project_id=project_id, resource=resource, hard_limit=limit))
        else:
            row.hard_limit = limit
    s.flush()
    return checked
