"""The backup stores and keys as the task manager hands them to guests: a store with the
credentials of the settings, and a key derived for one backup."""

from __future__ import annotations

from cove import storage
from cove.common import keys
from cove.domain.backups import SealKey, StoreSpec
from cove.taskmanager.context import TaskContext


def with_credentials(tc: TaskContext, spec: StoreSpec) -> StoreSpec:
    """``spec`` as recorded on a backup, with the credentials of the configured store when it
    is that store (a store the settings no longer describe has none)."""
    return storage.with_credentials(spec, tc.settings)


def seal_key(tc: TaskContext, key_id: str, backup_id: str) -> SealKey:
    """The key of the backup ``backup_id``, derived from the deployment's backup key
    ``key_id`` (``cove.common.keys.derive_backup_key``): what a guest is given to seal or open
    that backup, never the deployment's key itself. It keeps ``key_id`` (recorded in the
    artifact and on the backup), so a backup sealed before a rotation opens after it.
    Raises ConfigurationError (the key is missing or damaged)."""
    master = keys.backup_key(tc.settings.backup_keys_dir, key_id)
    return SealKey(key_id, keys.derive_backup_key(master, backup_id).hex())


def current_key_id(tc: TaskContext) -> str:
    """The id of the backup key new backups are sealed with (made on first use). Raises
    ConfigurationError."""
    key_id, _ = keys.current_backup_key(tc.settings.backup_keys_dir)
    return key_id
