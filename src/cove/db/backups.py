"""Queries on backups shared by the API and the task manager."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, and_, false, func, or_, select, update
from sqlalchemy.orm import Session, joinedload

from cove.common.errors import BackupNotFound
from cove.common.text import shown
from cove.db.models import Backup, DatastoreVersion
from cove.domain.backups import BackupStatus, StoreSpec

#: Longest chain of incrementals on one full backup; a restore reads every link.
MAX_CHAIN = 64


def get_backup(session: Session, backup_id: str, project_id: str | None = None) -> Backup:
    """The live backup ``backup_id`` (of ``project_id`` if given). Raises BackupNotFound."""
    row = session.get(
        Backup,
        backup_id,
        options=[joinedload(Backup.datastore_version).joinedload(DatastoreVersion.datastore)],
    )
    if row is None or row.deleted or (project_id is not None and row.project_id != project_id):
        raise BackupNotFound(f"Backup {shown(backup_id)} could not be found.")
    return row


def page_backups(
    session: Session, query: Select[Backup], marker: str | None, size: int
) -> tuple[list[Backup], bool]:
    """One page of the backups ``query`` selects, newest ``updated`` first (ties by id), and
    whether more follow; ``marker`` is the last id of the previous page (an id the query does
    not select gives an empty page)."""
    if marker is not None:
        after = session.scalar(query.where(Backup.id == marker))
        if after is None:
            return [], False
        query = query.where(
            or_(
                Backup.updated < after.updated,
                and_(Backup.updated == after.updated, Backup.id < after.id),
            )
        )
    rows = list(
        session.scalars(
            query.order_by(Backup.updated.desc(), Backup.id.desc())
            .options(joinedload(Backup.datastore_version).joinedload(DatastoreVersion.datastore))
            .limit(size + 1)
        )
    )
    return rows[:size], len(rows) > size


def live_backups() -> Select[Backup]:
    return select(Backup).where(Backup.deleted == false())


def backups_in_use(session: Session, project_id: str) -> int:
    """How many backups count against the project's ``backups`` quota: every live one."""
    return int(
        session.scalar(
            select(func.count(Backup.id)).where(
                Backup.project_id == project_id, Backup.deleted == false()
            )
        )
        or 0
    )


def running_backup_of(session: Session, instance_ids: Sequence[str]) -> set[str]:
    """Which of ``instance_ids`` have a backup running (their status reads BACKUP)."""
    if not instance_ids:
        return set()
    running = [s.value for s in BackupStatus if s.running]
    return set(
        session.scalars(
            select(Backup.instance_id).where(
                Backup.instance_id.in_(list(instance_ids)),
                Backup.deleted == false(),
                Backup.status.in_(running),
            )
        )
    )


def latest_completed(session: Session, instance_id: str) -> Backup | None:
    """The instance's newest COMPLETED backup: the parent of an incremental asked for
    without one."""
    return session.scalars(
        select(Backup)
        .where(
            Backup.instance_id == instance_id,
            Backup.deleted == false(),
            Backup.status == BackupStatus.COMPLETED.value,
        )
        .order_by(Backup.created.desc(), Backup.id.desc())
        .limit(1)
    ).first()


def chain(session: Session, backup: Backup) -> list[Backup]:
    """``backup`` and its ancestors, the full backup first. Raises BackupNotFound when a link
    is missing (deleted), ValueError when the chain is longer than MAX_CHAIN."""
    links = [backup]
    while links[-1].parent_id is not None:
        if len(links) >= MAX_CHAIN:
            raise ValueError(f"backup {backup.id} has more than {MAX_CHAIN} links")
        links.append(get_backup(session, links[-1].parent_id))
    return list(reversed(links))


def descendants(session: Session, backup_id: str) -> list[Backup]:
    """Every live backup built on ``backup_id``, children before their own children."""
    found: list[Backup] = []
    frontier = [backup_id]
    while frontier:
        children = list(
            session.scalars(
                select(Backup).where(Backup.parent_id.in_(frontier), Backup.deleted == false())
            )
        )
        found += children
        frontier = [c.id for c in children]
    return found


def set_status(
    session: Session,
    backup_id: str,
    from_status: set[BackupStatus],
    to_status: BackupStatus,
    now: datetime,
    **values: object,
) -> bool:
    """Move the backup's status atomically; False if it was not in one of ``from_status``."""
    result = session.execute(
        update(Backup)
        .where(Backup.id == backup_id, Backup.status.in_([s.value for s in from_status]))
        .values(status=to_status.value, updated=now, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def store_of(row: Backup) -> StoreSpec:
    """Where the backup's artifact is, without credentials (the settings give those)."""
    data = json.loads(row.store)
    return StoreSpec(
        kind=str(data["kind"]),
        location=str(data.get("location", "")),
        bucket=str(data.get("bucket", "")),
        prefix=str(data.get("prefix", "")),
        region=str(data.get("region", "")),
    )


def store_json(spec: StoreSpec) -> str:
    """``spec`` as recorded on a backup: never its credentials."""
    return json.dumps(
        {
            "kind": spec.kind,
            "location": spec.location,
            "bucket": spec.bucket,
            "prefix": spec.prefix,
            "region": spec.region,
        }
    )


def meta_of(row: Backup) -> dict[str, str]:
    data = json.loads(row.meta or "{}")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
