"""What an instance create from a backup (``restorePoint``) checks before it is recorded."""

from __future__ import annotations

import math
import uuid

from sqlalchemy.orm import Session

from cove.api.validate import checked_text
from cove.common.errors import BadRequest, Conflict, Forbidden
from cove.common.text import shown
from cove.db.backups import get_backup
from cove.db.models import Backup, DatastoreVersion
from cove.domain.backups import BackupStatus

GB = 1024**3


def restorable(s: Session, project_id: str, ref: object, volume_gb: int) -> Backup:
    """The project's backup a ``restorePoint`` names, checked for a restore onto a volume of
    ``volume_gb``.

    Raises BadRequest (no valid backupRef), BackupNotFound, Conflict (not completed) and
    Forbidden (larger than the volume), as Trove does.
    """
    if not isinstance(ref, dict) or not isinstance(ref.get("backupRef"), str):
        raise BadRequest("restorePoint needs a 'backupRef' naming a backup.")
    backup_ref = checked_text(ref["backupRef"], "backupRef")
    try:
        uuid.UUID(backup_ref)
    except ValueError:
        raise BadRequest(f"backupRef '{shown(backup_ref)}' is not a backup id.") from None
    unknown = set(ref) - {"backupRef"}
    if unknown:
        raise BadRequest(
            f"Unknown restorePoint field(s): {', '.join(sorted(map(shown, unknown)))}."
        )
    backup = get_backup(s, backup_ref, project_id)
    if backup.status != BackupStatus.COMPLETED.value:
        raise Conflict(f"Backup {backup.id} is not completed (status {backup.status}).")
    needed = math.ceil((backup.size or 0) / GB)
    if needed > volume_gb:
        raise Forbidden(
            f"Backup {backup.id} needs a volume of at least {needed} GB; {volume_gb} GB was asked."
        )
    return backup


def restore_version(backup: Backup, asked: DatastoreVersion | None) -> None:
    """Raises BadRequest when the request names a datastore version other than the backup's."""
    if asked is not None and asked.id != backup.datastore_version_id:
        raise BadRequest(
            f"Backup {backup.id} was made by {backup.datastore_version.datastore.name} "
            f"{backup.datastore_version.name}; it cannot be restored on "
            f"{asked.datastore.name} {asked.name}."
        )
