"""The backup stores and keys as the task manager hands them to guests."""

from __future__ import annotations

from cove.common import keys
from cove.domain.backups import SealKey, StoreSpec
from cove.taskmanager.context import TaskContext


def with_credentials(tc: TaskContext, spec: StoreSpec) -> StoreSpec:
    """``spec`` as recorded on a backup, with the credentials of the configured store when it
    is that store (a store the settings no longer describe has none)."""
    settings = tc.settings
    if spec.kind == "s3" and settings.backup_store == "s3":
        return StoreSpec(
            kind=spec.kind,
            location=spec.location,
            bucket=spec.bucket,
            prefix=spec.prefix,
            region=spec.region,
            access_key=settings.backup_access_key,
            secret_key=settings.backup_secret_key.get_secret_value(),
        )
    return spec


def seal_key(tc: TaskContext, key_id: str) -> SealKey:
    """The backup key ``key_id`` with its value. Raises ConfigurationError."""
    return SealKey(key_id, keys.backup_key(tc.settings.backup_keys_dir, key_id).decode())
