"""Backups: their statuses, what a guest is asked to do, and what it answers.

A backup is one artifact in a store (``cove.storage``): the engine's own tool output,
compressed and sealed (``cove.storage.sealed``), written by the guest agent straight from the
tool's pipe. The control plane records where it is, its size, its checksum and the id of the key
that sealed it; the key itself never goes near the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

_CONTAINER = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_container(name: str) -> str:
    """``name`` if it can name a container (an S3 bucket's rules: 3-63 lower-case letters,
    digits, dots and hyphens, starting and ending with a letter or digit). Raises ValueError."""
    if _CONTAINER.fullmatch(name) is None or ".." in name:
        raise ValueError(
            "a container name has 3 to 63 lower-case letters, digits, dots and hyphens, and "
            "starts and ends with a letter or digit"
        )
    return name


class BackupStatus(StrEnum):
    """Trove's backup statuses. NEW and BUILDING are the running ones."""

    NEW = "NEW"
    BUILDING = "BUILDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DELETE_FAILED = "DELETE_FAILED"

    @property
    def running(self) -> bool:
        return self in (BackupStatus.NEW, BackupStatus.BUILDING)


@dataclass(frozen=True)
class StoreSpec:
    """Where a store is and how to reach it: enough for a guest on another host to open it.

    ``kind`` names the backend (``filesystem``, ``s3``); ``location`` is the filesystem root or
    the S3 endpoint URL; ``bucket`` and ``prefix`` place the artifacts; the credentials are
    secrets and travel only inside RPC arguments.
    """

    kind: str
    location: str
    bucket: str = ""
    prefix: str = ""
    region: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class SealKey:
    """The key an artifact is sealed with, by id (recorded on the backup) and value (hex).

    The task manager gives a guest a key derived for one backup from the deployment's backup
    key ``key_id`` (``cove.common.keys.derive_backup_key``), never that key itself."""

    key_id: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class WalArchive:
    """Where a PostgreSQL instance ships its finished WAL files (``cove.domain.wal`` names
    them): the store, and the key derived for this instance alone."""

    store: StoreSpec
    seal: SealKey


@dataclass(frozen=True)
class WalRestore:
    """The archived WAL a PostgreSQL restore replays: the source instance's archive, the keys
    its files may be sealed with, and how far to go."""

    store: StoreSpec
    source_instance: str
    keys: list[SealKey]
    #: Replay up to this moment (ISO 8601, UTC); None: up to the chain's last backup.
    target_time: str | None = None


@dataclass(frozen=True)
class BackupJob:
    """What a guest is asked to back up and where to put it."""

    backup_id: str
    store: StoreSpec
    #: The artifact's key in the store.
    artifact: str
    seal: SealKey
    #: For an incremental backup: what its parent recorded (``BackupResult.meta``), which tells
    #: the engine where to start from. None for a full backup.
    parent_meta: dict[str, str] | None = None
    #: When the guest stops the backup (its tool killed, what it stored discarded) and fails
    #: it, if it still runs then; None: never. Set by the task manager a little after its own
    #: deadline, so a backup its task manager stopped watching still ends.
    deadline: datetime | None = None
    #: Where to archive the instance's WAL from now on (PostgreSQL), None elsewhere.
    wal: WalArchive | None = None


#: The key of ``BackupResult.meta`` that holds the bytes of the engine's stream before
#: compression: about what a restore of that artifact writes to the volume.
RAW_SIZE = "raw_size"


@dataclass(frozen=True)
class BackupResult:
    """What a finished backup left in the store."""

    artifact: str
    #: Bytes stored (sealed and compressed).
    size: int
    #: SHA-256 of the stored bytes, hex.
    checksum: str
    key_id: str
    #: What the engine needs to restore it or to make the next incremental on top of it
    #: (positions, format), as text.
    meta: dict[str, str] = field(default_factory=dict)


class JobState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    #: The guest knows nothing of the backup: it never started it, or its agent lost what it
    #: recorded. A backup the task manager saw start and the guest no longer knows was cut
    #: short: it is failed, never started again.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BackupProgress:
    """A guest's answer about one backup."""

    state: JobState
    result: BackupResult | None = None
    error: str = ""
    #: Bytes stored so far.
    stored: int = 0


@dataclass(frozen=True)
class RestorePiece:
    """One artifact of a chain to restore, as recorded when it was made."""

    backup_id: str
    artifact: str
    checksum: str
    seal: SealKey
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreJob:
    """Restore a full backup and the incrementals on top of it, oldest first."""

    store: StoreSpec
    chain: list[RestorePiece]
    #: The archived WAL to replay after the chain's full backup (PostgreSQL incrementals and
    #: point-in-time restores), None when the full backup alone is restored.
    wal: WalRestore | None = None

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a restore needs at least one backup")
