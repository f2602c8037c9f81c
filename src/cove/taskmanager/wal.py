"""The PostgreSQL WAL archive as the task manager handles it: what a guest is given to ship
its WAL and to replay it, and the pruning of archived WAL no kept backup needs.

A guest seals its WAL with a key derived from the deployment's backup key for its instance
alone (HKDF-SHA256), so the deployment key never reaches an instance, and one instance's key
opens no other instance's archive. The key id of the deployment key it was derived from is in
each archived file's name (``cove.domain.wal``), so keys can be rotated: a restore is given
the derived keys of every backup key this deployment holds.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import func, or_, select

from cove.common import keys
from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.db.backups import meta_of, store_of
from cove.db.models import Backup, DatastoreVersion, Instance
from cove.domain import wal
from cove.domain.backups import BackupStatus, SealKey, StoreSpec, WalArchive, WalRestore
from cove.domain.capabilities import MANAGED, Capability, capabilities
from cove.storage import open_store
from cove.taskmanager.context import TaskContext
from cove.taskmanager.stores import with_credentials

LOG = logging.getLogger(__name__)

#: The datastores (managers) whose instances archive their WAL.
ARCHIVING = sorted(n for n in MANAGED if Capability.POINT_IN_TIME in capabilities(n))
#: How often the archives are pruned at most.
PRUNE_INTERVAL = 300.0


def instance_key(master: bytes, key_id: str, instance_id: str) -> SealKey:
    """The key instance ``instance_id`` seals its WAL with, derived from the backup key
    ``key_id`` (value ``master``)."""
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"cove-wal-v1/{instance_id}".encode(),
    ).derive(master)
    return SealKey(key_id, derived.hex())


def _master(tc: TaskContext, key_id: str) -> bytes:
    return bytes.fromhex(keys.backup_key(tc.settings.backup_keys_dir, key_id).decode())


def archive_target(tc: TaskContext, spec: StoreSpec, instance_id: str) -> WalArchive:
    """Where and with what ``instance_id`` ships its WAL: ``spec``'s store, with the current
    backup key's derivation. Raises ConfigurationError."""
    key_id, master = keys.current_backup_key(tc.settings.backup_keys_dir)
    seal = instance_key(bytes.fromhex(master.decode()), key_id, instance_id)
    return WalArchive(store=with_credentials(tc, spec), seal=seal)


def replay_source(
    tc: TaskContext, spec: StoreSpec, source_instance: str, target_time: str | None
) -> WalRestore:
    """What a restore replays from ``source_instance``'s archive. Raises ConfigurationError."""
    known = sorted(p.stem for p in tc.settings.backup_keys_dir.glob("bk-*.key"))
    return WalRestore(
        store=with_credentials(tc, spec),
        source_instance=source_instance,
        keys=[instance_key(_master(tc, k), k, source_instance) for k in known],
        target_time=target_time,
    )


class Pruner:
    """Removes archived WAL older than what the oldest kept full backup of its instance
    starts from (``cove.domain.wal.keep_from``): at once when PostgreSQL backups were deleted
    since the last pass, and every PRUNE_INTERVAL anyway. An instance none of whose backups
    is kept loses its whole archive, and again at each pass while its agent goes on shipping
    (its instance lives)."""

    def __init__(self, interval: float = PRUNE_INTERVAL) -> None:
        self.interval = interval
        self._next = 0.0
        self._deleted = -1

    def __call__(self, tc: TaskContext) -> None:
        with tc.db.session() as s:
            deleted = s.scalar(
                select(func.count())
                .select_from(Backup)
                .join(DatastoreVersion, Backup.datastore_version_id == DatastoreVersion.id)
                .where(Backup.deleted.is_(True), DatastoreVersion.manager.in_(ARCHIVING))
            )
        now = time.monotonic()
        if now < self._next and deleted == self._deleted:
            return
        self._next = now + self.interval
        self._deleted = deleted or 0
        prune(tc)


def prune(tc: TaskContext) -> None:
    """One pruning pass over the PostgreSQL instances whose archive may hold something: a
    backup of theirs is kept or running, was deleted lately, or the instance lives."""
    lately = utcnow() - timedelta(days=1)
    live_instances = select(Instance.id).where(Instance.deleted.is_(False))
    with tc.db.session() as s:
        rows = s.scalars(
            select(Backup)
            .join(DatastoreVersion, Backup.datastore_version_id == DatastoreVersion.id)
            .where(
                DatastoreVersion.manager.in_(ARCHIVING),
                or_(
                    Backup.deleted.is_(False),
                    Backup.deleted_at >= lately,
                    Backup.instance_id.in_(live_instances),
                ),
            )
        ).all()
        facts = [
            wal.ArchivedBackup(
                instance_id=row.instance_id,
                full=row.parent_id is None,
                status=BackupStatus(row.status),
                deleted=row.deleted,
                start_wal=meta_of(row).get("start_wal"),
            )
            for row in rows
        ]
        # Every store a backup of the instance named: each one held its archive for a while.
        stores: dict[str, list[StoreSpec]] = {}
        for row in rows:
            spec = store_of(row)
            if spec not in stores.setdefault(row.instance_id, []):
                stores[row.instance_id].append(spec)
    for instance_id, oldest in wal.keep_from(facts).items():
        if oldest == wal.KEEP_ALL:
            continue
        for spec in stores[instance_id]:
            try:
                _prune_one(tc, instance_id, spec, oldest)
            except (CoveError, ValueError) as exc:
                message = exc.message if isinstance(exc, CoveError) else str(exc)
                LOG.warning("cannot prune the WAL archive of instance %s: %s", instance_id, message)


def _prune_one(tc: TaskContext, instance_id: str, spec: StoreSpec, oldest: str | None) -> None:
    store = open_store(with_credentials(tc, spec))
    objects = [o for o in map(wal.parse, store.keys(wal.prefix(instance_id))) if o is not None]
    doomed = [
        o
        for o in objects
        if oldest is None or (not o.wal_file.endswith(".history") and o.wal_file[8:24] < oldest[8:])
    ]
    for obj in doomed:
        store.delete(obj.key)
    if doomed:
        LOG.info("removed %d archived WAL file(s) of instance %s", len(doomed), instance_id)
