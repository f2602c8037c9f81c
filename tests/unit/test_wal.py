"""The WAL archive's names, the WAL a restore needs and the point-in-time window, as pure
decisions over a listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cove.domain import wal
from cove.domain.backups import BackupStatus

INSTANCE = "6f1c1d2e-0000-4000-8000-000000000001"
SUM = "ab" * 32
T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def seg(n: int, tli: int = 1) -> str:
    return f"{tli:08X}{n // 256:08X}{n % 256:08X}"


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


class Archive:
    """A listing built one archived file at a time."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def add(
        self, name: str, commit: datetime | None = None, key_id: str = "bk-0000abcd"
    ) -> Archive:
        self.keys.append(wal.object_key(INSTANCE, name, key_id, us(commit) if commit else 0, SUM))
        return self

    def objects(self) -> list[wal.WalObject]:
        return wal.listing(self.keys)


def test_a_key_names_what_a_reader_needs_and_parses_back() -> None:
    key = wal.object_key(INSTANCE, seg(3), "bk-0000abcd", us(T0), SUM)
    assert key.startswith(f"wal/{INSTANCE}/000000010000000000000003.bk-0000abcd.")
    found = wal.parse(key)
    assert found is not None
    assert (found.wal_file, found.key_id, found.checksum, found.key) == (
        seg(3),
        "bk-0000abcd",
        SUM,
        key,
    )
    assert found.last_commit == T0 and found.segment


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "00000001", "000000010000000000000003.part", "x" * 24]
)
def test_only_wal_file_names_are_archived(name: str) -> None:
    with pytest.raises(ValueError):
        wal.object_key(INSTANCE, name, "bk-0000abcd", 0, SUM)


def test_other_keys_and_duplicates_are_skipped() -> None:
    archive = Archive().add(seg(2)).add(seg(1)).add("00000002.history")
    archive.keys.append(f"wal/{INSTANCE}/notes.txt")
    archive.add(seg(2), T0)  # shipped again by an agent stopped before it forgot its copy
    assert [o.wal_file for o in archive.objects()] == [seg(1), seg(2), "00000002.history"]


def test_a_restore_needs_the_segments_from_the_start_and_the_histories() -> None:
    archive = Archive()
    for n in range(1, 8):
        archive.add(seg(n))
    archive.add("00000002.history").add(f"{seg(3)}.00000028.backup")
    wanted = wal.needed(archive.objects(), seg(3), seg(5))
    assert [o.wal_file for o in wanted] == [seg(3), seg(4), seg(5), "00000002.history"]


def test_replay_stops_at_the_first_missing_segment() -> None:
    archive = Archive().add(seg(255)).add(seg(256)).add(seg(258))
    reachable = wal.contiguous(archive.objects(), seg(255))
    assert [o.wal_file for o in reachable] == [seg(255), seg(256)]


def test_the_window_runs_from_the_oldest_backup_to_the_newest_reachable_commit() -> None:
    archive = (
        Archive()
        .add(seg(3), T0 + timedelta(minutes=1))
        .add(seg(4))
        .add(seg(5), T0 + timedelta(minutes=5))
        .add(seg(7), T0 + timedelta(minutes=9))  # after a gap: not reachable
    )
    window = wal.window([T0 + timedelta(minutes=2), T0], archive.objects(), seg(3))
    assert window == wal.Window(T0, T0 + timedelta(minutes=5))
    assert window.holds(T0 + timedelta(minutes=3))
    assert not window.holds(T0 + timedelta(minutes=6))
    assert not window.holds(T0 - timedelta(seconds=1))


def test_without_commits_since_the_backup_the_window_is_its_end() -> None:
    archive = Archive().add(seg(3))
    assert wal.window([T0], archive.objects(), seg(3)) == wal.Window(T0, T0)
    assert wal.window([], archive.objects(), seg(3)) is None


def backup_fact(
    instance: str = "i",
    *,
    full: bool = True,
    status: BackupStatus = BackupStatus.COMPLETED,
    deleted: bool = False,
    start: int | None = 5,
) -> wal.ArchivedBackup:
    return wal.ArchivedBackup(
        instance_id=instance,
        full=full,
        status=status,
        deleted=deleted,
        start_wal=seg(start) if start is not None else None,
    )


def test_the_archive_keeps_from_the_oldest_kept_full_backup() -> None:
    facts = [
        backup_fact(start=0x1FF),
        backup_fact(start=0x100),  # older across a log boundary: 0x100 < 0x1FF
        backup_fact(start=3, deleted=True),  # deleted: needs nothing
        backup_fact(start=2, status=BackupStatus.FAILED),
        backup_fact(full=False, start=1),  # an incremental starts where its chain starts
    ]
    assert wal.keep_from(facts) == {"i": seg(0x100)}


def test_an_archive_no_backup_needs_goes_whole() -> None:
    facts = [backup_fact(deleted=True), backup_fact("j", status=BackupStatus.FAILED, start=None)]
    assert wal.keep_from(facts) == {"i": None, "j": None}


@pytest.mark.parametrize("full", [True, False])
def test_a_running_backup_keeps_the_whole_archive(full: bool) -> None:
    """A full backup's start is recorded only once it completed, and the archive before it
    was shipped for it: nothing goes while it runs, even with every older backup deleted."""
    facts = [
        backup_fact(deleted=True),
        backup_fact(full=full, status=BackupStatus.BUILDING, start=None),
        backup_fact("j", start=9),
    ]
    assert wal.keep_from(facts) == {"i": wal.KEEP_ALL, "j": seg(9)}


def test_a_replay_reads_the_segments_up_to_the_moment() -> None:
    archive = Archive()
    for n, minutes in ((4, 1), (5, 0), (6, 3), (7, 5)):  # segment 5 holds no commit
        archive.add(seg(n), T0 + timedelta(minutes=minutes) if minutes else None)
    objects = wal.listing(archive.keys)
    assert wal.replay_length(objects, seg(4), T0 + timedelta(minutes=2)) == 3
    assert wal.replay_length(objects, seg(4), T0 + timedelta(minutes=9)) == 4  # all reachable
    assert wal.replay_length(objects, seg(6), T0) == 1
    assert wal.span(seg(0xFF), seg(0x101)) == 3
    assert wal.span(seg(5), seg(4)) == 0
