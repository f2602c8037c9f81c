"""Backup schedules' pure rules: cron expressions, and which backups retention prunes, decided on
frozen lists of backups built here (cove.domain.schedules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cove.domain.backups import BackupStatus
from cove.domain.schedules import (
    BackupFact,
    Retention,
    check_cron,
    next_run,
    starts_new_chain,
    to_prune,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DONE = BackupStatus.COMPLETED


class Backups:
    """A builder of one instance's live backups: ``full``/``incr`` add one, ``days`` before
    NOW, and return its id."""

    def __init__(self) -> None:
        self.facts: list[BackupFact] = []

    def _add(
        self,
        parent: str | None,
        days: float,
        status: BackupStatus,
        scheduled: bool,
    ) -> str:
        backup_id = f"b{len(self.facts) + 1}"
        taken = NOW - timedelta(days=days)
        self.facts.append(BackupFact(backup_id, parent, status, taken, scheduled))
        return backup_id

    def full(self, days: float, status: BackupStatus = DONE, scheduled: bool = True) -> str:
        return self._add(None, days, status, scheduled)

    def incr(
        self, parent: str, days: float, status: BackupStatus = DONE, scheduled: bool = True
    ) -> str:
        return self._add(parent, days, status, scheduled)

    def pruned(self, keep_count: int | None = None, keep_days: int | None = None) -> set[str]:
        return set(to_prune(tuple(self.facts), Retention(keep_count, keep_days), NOW))


# -- cron expressions ----------------------------------------------------------------------------


def test_a_cron_expression_is_normalised():
    assert check_cron("  0   3 * *  * ") == "0 3 * * *"
    assert check_cron("*/15 0-6 1,15 jan-jun mon-fri") == "*/15 0-6 1,15 jan-jun mon-fri"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("", "five fields"),
        ("0 3 * *", "five fields"),
        ("0 0 3 * * *", "five fields"),  # seconds are not a field of Cove's schedules
        ("@daily", "five fields"),
        ("60 * * * *", "not a valid cron expression"),
        ("*/0 * * * *", "not a valid cron expression"),
        ("H * * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never names a time"),
        ("0 " * 200, "at most 255 characters"),
    ],
)
def test_bad_cron_expressions_are_refused(expr: str, says: str):
    with pytest.raises(ValueError, match=says):
        check_cron(expr)


def test_next_run_is_strictly_after_and_in_utc():
    at_three = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    assert next_run("0 3 * * *", at_three) == at_three + timedelta(days=1)
    assert next_run("0 3 * * *", at_three - timedelta(seconds=1)) == at_three
    elsewhere = at_three.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    found = next_run("0 3 * * *", elsewhere)
    assert found == at_three + timedelta(days=1) and found.tzinfo == UTC
    assert next_run("30 4 29 2 *", at_three) == datetime(2028, 2, 29, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("count", "days"), [(0, None), (None, 0), (-1, 3), (1001, None), (None, 36501)]
)
def test_bad_retention_is_refused(count: int | None, days: int | None):
    with pytest.raises(ValueError, match="keep_"):
        Retention(count, days)


# -- retention -----------------------------------------------------------------------------------


def test_without_retention_nothing_is_pruned():
    b = Backups()
    for day in range(5):
        b.full(day)
    assert b.pruned() == set()


def test_keep_count_keeps_the_newest_completed():
    b = Backups()
    oldest, older, newer, newest = (b.full(d) for d in (4, 3, 2, 1))
    assert b.pruned(keep_count=2) == {oldest, older}
    assert b.pruned(keep_count=4) == set()
    assert newer and newest


def test_keep_days_prunes_what_is_older():
    b = Backups()
    old, recent, fresh = b.full(10), b.full(2.5), b.full(0.5)
    assert b.pruned(keep_days=3) == {old}
    assert b.pruned(keep_days=1) == {old, recent}
    assert fresh


def test_both_limits_hold_at_once():
    b = Backups()
    ids = [b.full(d) for d in (9, 7, 5, 3, 1)]
    # keep at most 3, and none older than 6 days: only the newest three are in both.
    assert b.pruned(keep_count=3, keep_days=6) == set(ids[:2])
    # keep at most 4, and none older than 4 days: two are in both.
    assert b.pruned(keep_count=4, keep_days=4) == set(ids[:3])


def test_the_newest_completed_full_backup_is_never_pruned():
    b = Backups()
    older_full, newest_full = b.full(40), b.full(30)
    assert b.pruned(keep_days=7) == {older_full}
    assert newest_full not in b.pruned(keep_days=1, keep_count=1)


def test_ancestors_of_a_kept_incremental_stay():
    b = Backups()
    old_full = b.full(10)
    old_incr = b.incr(old_full, 9)
    full = b.full(6)
    i1 = b.incr(full, 5)
    i2 = b.incr(i1, 4)
    i3 = b.incr(i2, 3)
    # Only i3 is within the count, but a restore of it reads full, i1 and i2.
    assert b.pruned(keep_count=1) == {old_full, old_incr}
    assert i3 not in b.pruned(keep_count=1)


def test_an_incremental_of_another_maker_keeps_its_ancestors():
    b = Backups()
    first = b.full(5)
    b.full(4)
    b.full(3)
    b.incr(first, 2, scheduled=False)  # made by hand on the schedule's first backup
    assert b.pruned(keep_count=1) == {"b2"}


def test_backups_of_others_are_never_pruned():
    b = Backups()
    by_hand = b.full(100, scheduled=False)
    b.full(2)
    b.full(1)
    assert by_hand not in b.pruned(keep_count=1, keep_days=1)


def test_running_backups_and_their_chain_stay():
    b = Backups()
    full = b.full(9)
    middle = b.full(8)
    b.full(7)
    building = b.incr(full, 0.1, status=BackupStatus.BUILDING)
    new = b.full(0.5, status=BackupStatus.NEW)
    assert b.pruned(keep_count=1) == {middle}
    assert not {building, full, new} & b.pruned(keep_count=1, keep_days=1)


def test_failed_backups_go_once_a_newer_one_completed():
    b = Backups()
    failed_before = b.full(3, status=BackupStatus.FAILED)
    b.full(2)
    failed_after = b.full(1.5, status=BackupStatus.FAILED)
    refused_delete = b.full(2.5, status=BackupStatus.DELETE_FAILED)
    assert b.pruned(keep_count=5) == {failed_before, refused_delete}
    # ...or once they are older than keep_days.
    assert b.pruned(keep_days=1) == {failed_before, refused_delete, failed_after}


def test_what_is_pruned_has_no_kept_descendant():
    """Deleting a pruned backup with its descendants deletes only pruned backups."""
    b = Backups()
    full = b.full(30)
    chain = [full]
    for day in range(29, 0, -1):
        parent = chain[-1] if day % 7 else b.full(day + 0.5)
        chain.append(b.incr(parent, day))
    for count in range(1, 12):
        pruned = b.pruned(keep_count=count, keep_days=10)
        kept = {f.id for f in b.facts} - pruned
        for fact in b.facts:
            if fact.id in kept and fact.parent_id is not None:
                assert fact.parent_id in kept, (count, fact)


def test_an_incremental_schedule_starts_a_new_chain_when_retention_needs_one():
    t0 = datetime(2026, 12, 1, 3, tzinfo=UTC)
    days = [t0 + timedelta(days=i) for i in range(5)]
    count = Retention(keep_count=3)
    assert starts_new_chain([], count, t0, 64)  # nothing to build on
    assert not starts_new_chain(days[:2], count, days[2], 64)
    assert starts_new_chain(days[:3], count, days[3], 64)
    assert starts_new_chain(days[:2], Retention(), days[2], 2)  # the longest chain a restore reads
    assert not starts_new_chain(days[:5], Retention(), days[4], 64)  # keep all: one chain
    age = Retention(keep_days=2)
    assert not starts_new_chain(days[:2], age, days[1], 64)
    assert starts_new_chain(days[:3], age, days[2], 64)  # its full backup is 2 days old
