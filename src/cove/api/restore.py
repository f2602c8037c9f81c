"""What an instance create from a backup (``restorePoint``) checks before it is recorded,
and the window of moments a point-in-time restore may ask for.

``restorePoint: {backupRef, restore_time}`` (a Cove extension) restores the instance that
``backupRef`` is a backup of to ``restore_time``: Cove takes the newest full backup of that
instance that ended before the moment and replays the archived WAL after it up to the moment.
The window runs from the end of the instance's oldest kept full backup to its newest archived
commit; a moment outside it is refused, naming the window.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cove.api.validate import checked_text
from cove.common.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    OperationNotSupported,
    ServiceUnavailable,
    StoreUnavailable,
)
from cove.common.settings import Settings
from cove.common.text import shown
from cove.db.backups import chain, get_backup, meta_of, store_of
from cove.db.models import Backup, DatastoreVersion
from cove.domain import wal
from cove.domain.backups import RAW_SIZE, BackupStatus
from cove.domain.capabilities import Capability, capabilities
from cove.storage import open_store, with_credentials

LOG = logging.getLogger(__name__)

GB = 1024**3


@dataclass(frozen=True)
class RestorePlan:
    """What a ``restorePoint`` restores: the backup (the full one to replay from, with a
    moment), the moment (ISO 8601, UTC) and the archived WAL segments the replay reads."""

    backup: Backup
    moment: str | None = None
    replay_segments: int = 0


def restorable(
    s: Session, settings: Settings, project_id: str, ref: object, volume_gb: int
) -> RestorePlan:
    """The project's backup a ``restorePoint`` names (or, with ``restore_time``, the full
    backup to replay from) and the moment to restore to, checked for a restore onto a volume
    of ``volume_gb``.

    Raises BadRequest (no valid backupRef, a bad moment or one outside the window),
    BackupNotFound, Conflict (not completed), Forbidden (larger than the volume), as Trove
    does, OperationNotSupported (no point-in-time restore for the datastore) and
    ServiceUnavailable (the store cannot be listed).
    """
    if not isinstance(ref, dict) or not isinstance(ref.get("backupRef"), str):
        raise BadRequest("restorePoint needs a 'backupRef' naming a backup.")
    backup_ref = checked_text(ref["backupRef"], "backupRef")
    try:
        uuid.UUID(backup_ref)
    except ValueError:
        raise BadRequest(f"backupRef '{shown(backup_ref)}' is not a backup id.") from None
    unknown = set(ref) - {"backupRef", "restore_time"}
    if unknown:
        raise BadRequest(
            f"Unknown restorePoint field(s): {', '.join(sorted(map(shown, unknown)))}."
        )
    backup = get_backup(s, backup_ref, project_id)
    if backup.status != BackupStatus.COMPLETED.value:
        raise Conflict(f"Backup {backup.id} is not completed (status {backup.status}).")
    moment = None
    segments = 0
    if ref.get("restore_time") is not None:
        moment = _moment(ref["restore_time"])
        backup, segments = _base_for(s, settings, backup, moment)
    needed = math.ceil(_data_size(s, backup) / GB)
    if needed > volume_gb:
        raise Forbidden(
            f"Backup {backup.id} holds {needed} GB of data once restored; a volume of "
            f"{volume_gb} GB was asked."
        )
    return RestorePlan(backup, moment.isoformat() if moment is not None else None, segments)


def _data_size(s: Session, backup: Backup) -> int:
    """The bytes a restore of ``backup``'s chain writes at most: the engine's streams before
    compression, as the guest recorded them (the stored size for a backup without that)."""
    total = 0
    for link in chain(s, backup):
        raw = meta_of(link).get(RAW_SIZE, "")
        total += int(raw) if raw.isdigit() else link.size or 0
    return total


def _moment(value: object) -> datetime:
    """``restore_time`` as an aware moment (UTC when no offset is given). Raises BadRequest."""
    if not isinstance(value, str):
        raise BadRequest("restore_time must be a date and time (ISO 8601).")
    text = checked_text(value, "restore_time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"restore_time '{shown(text)}' is not a date and time (ISO 8601, e.g. "
            "2026-12-05T10:30:00Z)."
        ) from None
    try:  # a moment with an offset at the edge of the calendar has no UTC time
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"restore_time '{shown(text)}' is out of range.") from None


def _fulls(s: Session, project_id: str, instance_id: str) -> list[tuple[datetime, Backup]]:
    """The instance's kept full backups a replay can start from, by end time."""
    rows = s.scalars(
        select(Backup).where(
            Backup.project_id == project_id,
            Backup.instance_id == instance_id,
            Backup.deleted.is_(False),
            Backup.parent_id.is_(None),
            Backup.status == BackupStatus.COMPLETED.value,
        )
    )
    out = []
    for row in rows:
        meta = meta_of(row)
        if meta.get("start_wal") and meta.get("end_time"):
            with contextlib.suppress(ValueError):
                out.append((datetime.fromisoformat(meta["end_time"]), row))
    return sorted(out, key=lambda pair: pair[0])


def restore_window(
    s: Session, settings: Settings, project_id: str, instance_id: str
) -> wal.Window | None:
    """The moments the instance's backups and archived WAL can restore it to; None when it
    has no full backup to replay from. Raises ServiceUnavailable (the store cannot be
    listed)."""
    found = _archive(s, settings, project_id, instance_id)
    return found.window if found is not None else None


@dataclass(frozen=True)
class _Archive:
    """An instance's kept full backups (by end time), its archive's listing, and the window
    they give."""

    fulls: list[tuple[datetime, Backup]]
    objects: list[wal.WalObject]
    window: wal.Window


def _archive(s: Session, settings: Settings, project_id: str, instance_id: str) -> _Archive | None:
    """The instance's archive as a restore sees it; None without a full backup. Raises
    ServiceUnavailable."""
    fulls = _fulls(s, project_id, instance_id)
    if not fulls:
        return None
    store = open_store(with_credentials(store_of(fulls[-1][1]), settings))
    try:
        objects = wal.listing(store.keys(wal.prefix(instance_id)))
    except StoreUnavailable as exc:
        LOG.warning("cannot list the WAL archive of instance %s: %s", instance_id, exc.message)
        raise ServiceUnavailable("The backup store cannot be read now; try again later.") from None
    window = wal.window([end for end, _ in fulls], objects, meta_of(fulls[0][1])["start_wal"])
    return _Archive(fulls, objects, window) if window is not None else None


def _base_for(
    s: Session, settings: Settings, backup: Backup, moment: datetime
) -> tuple[Backup, int]:
    """The full backup of ``backup``'s instance to replay from to reach ``moment``, and the
    archived segments that replay reads. Raises OperationNotSupported and BadRequest (outside
    the window)."""
    datastore = backup.datastore_version.datastore.name
    if Capability.POINT_IN_TIME not in capabilities(datastore):
        raise OperationNotSupported(
            f"Restoring to a moment (restore_time) is not supported for {datastore}."
        )
    found = _archive(s, settings, backup.project_id, backup.instance_id)
    if found is None or not found.window.holds(moment):
        reach = (
            f"between {_shown(found.window.earliest)} and {_shown(found.window.latest)}"
            if found is not None
            else "nowhere yet: it has no completed full backup"
        )
        raise BadRequest(
            f"restore_time {_shown(moment)} is outside what the backups of instance "
            f"{backup.instance_id} can restore to ({reach})."
        )
    base = [row for end, row in found.fulls if end <= moment][-1]
    return base, wal.replay_length(found.objects, meta_of(base)["start_wal"], moment)


def _shown(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def restore_version(backup: Backup, asked: DatastoreVersion | None) -> None:
    """Raises BadRequest when the request names a datastore version other than the backup's."""
    if asked is not None and asked.id != backup.datastore_version_id:
        raise BadRequest(
            f"Backup {backup.id} was made by {backup.datastore_version.datastore.name} "
            f"{backup.datastore_version.name}; it cannot be restored on "
            f"{asked.datastore.name} {asked.name}."
        )
