"""A PostgreSQL instance's WAL archive in the backup store: how its objects are named, which of
them a restore needs, and the window of time they can restore to.

While an instance has backups, its guest agent copies every WAL file the server finishes to
the store under ``wal/<instance id>/``, each sealed like a backup artifact. The name of each
object carries what a reader needs without opening it::

    <WAL file name>.<key id>.<last commit, µs since the epoch, or 0>.<SHA-256 of the object>

so the control plane can tell the point-in-time window from a listing alone, and a restore
can check every object it fetches (the checksum) and unseal it (the key id). Everything here
is pure: the listing comes from the store, the clock from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cove.domain.backups import BackupStatus

#: The store prefix of one instance's archive.
PREFIX = "wal/{instance_id}/"

#: A WAL segment (timeline, log, segment), a timeline history file, or a backup history file.
_SEGMENT = r"[0-9A-F]{24}"
_WAL_FILE = re.compile(rf"{_SEGMENT}|[0-9A-F]{{8}}\.history|{_SEGMENT}\.[0-9A-F]{{8}}\.backup")
_OBJECT = re.compile(
    rf"(?P<wal>{_SEGMENT}|[0-9A-F]{{8}}\.history|{_SEGMENT}\.[0-9A-F]{{8}}\.backup)"
    r"\.(?P<key>bk-[0-9a-f]{8})\.(?P<commit>[0-9]{1,17})\.(?P<sum>[0-9a-f]{64})"
)


def prefix(instance_id: str) -> str:
    return PREFIX.format(instance_id=instance_id)


def is_wal_file(name: str) -> bool:
    """Whether ``name`` is a file name the server archives."""
    return _WAL_FILE.fullmatch(name) is not None


@dataclass(frozen=True, order=True)
class WalObject:
    """One archived WAL file as its store key names it."""

    wal_file: str
    key_id: str
    #: The newest commit it holds, in µs since the epoch; 0 when it holds none.
    last_commit_us: int
    checksum: str
    key: str

    @property
    def segment(self) -> bool:
        return len(self.wal_file) == 24

    @property
    def last_commit(self) -> datetime | None:
        if not self.last_commit_us:
            return None
        return datetime.fromtimestamp(self.last_commit_us / 1e6, UTC)


def object_key(
    instance_id: str, wal_file: str, key_id: str, last_commit_us: int, checksum: str
) -> str:
    """The store key of an archived WAL file. Raises ValueError for a name the server would
    not archive."""
    if not is_wal_file(wal_file):
        raise ValueError(f"not a WAL file name: {wal_file[:60]!r}")
    return f"{prefix(instance_id)}{wal_file}.{key_id}.{last_commit_us}.{checksum}"


def parse(key: str) -> WalObject | None:
    """The archived WAL file ``key`` names; None for any other key (skipped by readers)."""
    name = key.rpartition("/")[2]
    match = _OBJECT.fullmatch(name)
    if match is None:
        return None
    return WalObject(
        wal_file=match["wal"],
        key_id=match["key"],
        last_commit_us=int(match["commit"]),
        checksum=match["sum"],
        key=key,
    )


def listing(keys: list[str]) -> list[WalObject]:
    """The archived WAL files among ``keys``, in WAL order; a file archived twice (an agent
    stopped between the upload and forgetting its copy) counts once."""
    seen: dict[str, WalObject] = {}
    for key in keys:
        found = parse(key)
        if found is not None and found.wal_file not in seen:
            seen[found.wal_file] = found
    return sorted(seen.values())


def needed(objects: list[WalObject], start_wal: str, end_wal: str | None = None) -> list[WalObject]:
    """What a restore from a base backup that started in segment ``start_wal`` needs: every
    segment from it on (up to ``end_wal`` when given) and every history file."""
    out = []
    for obj in objects:
        if not obj.segment:
            if obj.wal_file.endswith(".history"):
                out.append(obj)
            continue
        if obj.wal_file[8:] < start_wal[8:]:
            continue
        if end_wal is not None and obj.wal_file[8:] > end_wal[8:]:
            continue
        out.append(obj)
    return out


def contiguous(objects: list[WalObject], start_wal: str) -> list[WalObject]:
    """The segments of ``objects`` from ``start_wal`` on that follow each other without a gap
    (a restore replays no further than the first missing one)."""
    segments = [o for o in objects if o.segment and o.wal_file[8:] >= start_wal[8:]]
    out: list[WalObject] = []
    expected = _number(start_wal)
    for obj in segments:
        if _number(obj.wal_file) != expected:
            break
        out.append(obj)
        expected += 1
    return out


#: Bytes of a WAL segment (PostgreSQL's default size, which Cove's servers keep).
SEGMENT_BYTES = 16 << 20


def span(start_wal: str, end_wal: str) -> int:
    """The segments from ``start_wal`` to ``end_wal``, both included."""
    return max(0, _number(end_wal) - _number(start_wal) + 1)


def replay_length(objects: list[WalObject], start_wal: str, moment: datetime) -> int:
    """The segments a replay from ``start_wal`` reads to reach ``moment``: the reachable ones
    up to the first holding a commit at or after it (all reachable ones when none does)."""
    limit = moment.timestamp() * 1_000_000
    count = 0
    for obj in contiguous(objects, start_wal):
        count += 1
        if obj.last_commit_us >= limit:
            break
    return count


def _number(segment: str) -> int:
    """A segment's position: log * 256 + seg (the default 16 MB segments make 256 per log)."""
    return int(segment[8:16], 16) * 0x100 + int(segment[16:24], 16)


def latest_commit(objects: list[WalObject]) -> datetime | None:
    """The newest commit among ``objects``."""
    newest = max((o.last_commit_us for o in objects), default=0)
    return datetime.fromtimestamp(newest / 1e6, UTC) if newest else None


@dataclass(frozen=True)
class Window:
    """The moments an instance can be restored to: from the end of its oldest kept full
    backup to its newest archived commit (or that backup's end, when nothing was committed
    since)."""

    earliest: datetime
    latest: datetime

    def holds(self, moment: datetime) -> bool:
        return self.earliest <= moment <= self.latest


def window(base_ends: list[datetime], objects: list[WalObject], start_wal: str) -> Window | None:
    """The window given the end times of the kept full backups, the archive's listing and the
    oldest kept backup's first segment; None without a full backup."""
    if not base_ends:
        return None
    earliest = min(base_ends)
    reachable = contiguous(objects, start_wal)
    newest = latest_commit(reachable)
    latest = max(earliest, newest) if newest is not None else earliest
    return Window(earliest, latest)


@dataclass(frozen=True)
class ArchivedBackup:
    """One PostgreSQL backup, as the pruning of its instance's WAL archive sees it."""

    instance_id: str
    full: bool
    status: BackupStatus
    deleted: bool
    #: The WAL file a replay on top of it starts from (recorded once it completed).
    start_wal: str | None


#: What ``keep_from`` answers for an instance whose archive must stay whole for now.
KEEP_ALL = "keep all"


def keep_from(backups: Iterable[ArchivedBackup]) -> dict[str, str | None]:
    """For each instance among ``backups``: the oldest WAL file its archive must keep (the
    oldest start of a kept full backup), None when no backup needs any of it (remove it all),
    or KEEP_ALL while one of its backups runs (a full backup's start is known only once it
    completed, and a running incremental replays from its chain's start)."""
    backups = list(backups)
    answer: dict[str, str | None] = {}
    for b in backups:
        answer.setdefault(b.instance_id, None)
    for b in backups:
        if answer[b.instance_id] == KEEP_ALL:
            continue
        if not b.deleted and b.status.running:
            answer[b.instance_id] = KEEP_ALL
        elif not b.deleted and b.full and b.status is BackupStatus.COMPLETED and b.start_wal:
            oldest = answer[b.instance_id]
            if oldest is None or _number(b.start_wal) < _number(oldest):
                answer[b.instance_id] = b.start_wal
    return answer
