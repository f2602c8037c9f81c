"""Per-project quotas: operator defaults, per-project overrides, usage counted from the rows.

Checks run inside the transaction that creates the resource, after :func:`lock_project`.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from cove.common.settings import Settings
from cove.db.models import ProjectLock


def lock_project(s: Session, project_id: str) -> None:
    """Take the project's lock row for the rest of the transaction (created if missing)."""
    if not s.execute(
        update(ProjectLock)
        .where(ProjectLock.project_id == project_id)
        .values(serial=ProjectLock.serial + 1)
    ).rowcount:  # type: ignore[attr-defined]
        s.add(ProjectLock(project_id=project_id, serial=1))
        s.flush()


def check_instance_quota(
    s: Session, settings: Settings, project_id: str, ram: int, volume: int
) -> None:
    """Raises QuotaExceeded when one more instance of ``ram`` MB and ``volume`` GB would
    exceed a quota of the project."""
