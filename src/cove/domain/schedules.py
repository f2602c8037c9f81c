"""Backup schedules: when one runs (a cron expression, in UTC) and which of its backups its
retention removes.

Both are pure functions, so they are tested without a database: :func:`to_prune` decides on a
frozen list of :class:`BackupFact`, the way :mod:`cove.domain.status` decides on an instance
snapshot. The task manager's scheduler (``cove.taskmanager.scheduler``) gathers the facts and
carries the decision out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from cove.domain.backups import BackupStatus

#: Minute, hour, day of month, month, day of week.
CRON_FIELDS = 5
CRON_MAX = 255
MAX_KEEP_COUNT = 1000
MAX_KEEP_DAYS = 36500
#: Where a cron expression is tried, to tell one that never runs ("0 0 30 2 *").
_PROBE_FROM = datetime(2000, 1, 1, tzinfo=UTC)

CRON_HELP = (
    "a cron expression has five fields separated by spaces: minute, hour, day of month, month "
    "and day of week, in UTC (for example '0 3 * * *': every day at 03:00)"
)


def check_cron(expr: str) -> str:
    """``expr`` with its fields separated by single spaces, if it is a cron expression of
    five fields that runs at some time. Raises ValueError saying what is wrong, without
    quoting ``expr``."""
    if len(expr) > CRON_MAX:
        raise ValueError(f"a cron expression has at most {CRON_MAX} characters")
    fields = expr.split()
    if len(fields) != CRON_FIELDS:
        raise ValueError(CRON_HELP)
    text = " ".join(fields)
    if not croniter.is_valid(text):
        raise ValueError(f"it is not a valid cron expression; {CRON_HELP}")
    try:
        next_run(text, _PROBE_FROM)
    except ValueError:
        raise ValueError("it never names a time that exists (such as February 30)") from None
    return text


def next_run(expr: str, after: datetime) -> datetime:
    """The first time ``expr`` names strictly after ``after``, timezone-aware in UTC. Raises
    ValueError (croniter's errors are ValueErrors) for an expression :func:`check_cron`
    refuses."""
    start = after.astimezone(UTC)
    found = croniter(expr, start).get_next(datetime)
    if not isinstance(found, datetime):
        raise ValueError("the cron expression gave no time")
    return found.astimezone(UTC)


@dataclass(frozen=True)
class Retention:
    """How many of a schedule's completed backups to keep (``keep_count``) and for how many
    days (``keep_days``); either may be None, and a backup is kept only while both allow it.
    With neither, every backup is kept."""

    keep_count: int | None = None
    keep_days: int | None = None

    def __post_init__(self) -> None:
        if self.keep_count is not None and not 1 <= self.keep_count <= MAX_KEEP_COUNT:
            raise ValueError(f"keep_count must be an integer from 1 to {MAX_KEEP_COUNT}")
        if self.keep_days is not None and not 1 <= self.keep_days <= MAX_KEEP_DAYS:
            raise ValueError(f"keep_days must be an integer from 1 to {MAX_KEEP_DAYS}")

    @property
    def limited(self) -> bool:
        return self.keep_count is not None or self.keep_days is not None


@dataclass(frozen=True)
class BackupFact:
    """One live backup of the instance, as retention sees it."""

    id: str
    parent_id: str | None
    status: BackupStatus
    #: When the schedule ran it (the scheduler's clock); for other backups, when made.
    taken_at: datetime
    #: Made by the schedule whose retention applies: only these are ever pruned. The others
    #: (made by hand, or by another schedule) are facts only because they may build on one.
    scheduled: bool = True


def starts_new_chain(
    chain: Sequence[datetime], retention: Retention, now: datetime, max_chain: int
) -> bool:
    """Whether an incremental schedule's next run is a full backup, given ``chain``: when its
    newest completed backup's chain was taken (the full backup first; empty when there is
    none).

    Every backup of a chain stays while a newer one of it is kept (see ``to_prune``), so a
    chain that only grew would keep everything; a new chain starts once the current one holds
    ``keep_count`` backups, or once its full backup is ``keep_days`` old, so the old chain ages
    out whole (at most about twice what the retention keeps is held). A chain also ends at
    ``max_chain`` backups, the longest a restore reads.
    """
    if not chain or len(chain) >= max_chain:
        return True
    if retention.keep_count is not None and len(chain) >= retention.keep_count:
        return True
    return retention.keep_days is not None and now - chain[0] >= timedelta(days=retention.keep_days)


def to_prune(backups: Iterable[BackupFact], retention: Retention, now: datetime) -> frozenset[str]:
    """The ids of the schedule's backups that ``retention`` removes at ``now``.

    Kept are: the newest ``keep_count`` completed backups not older than ``keep_days``; the
    newest completed full backup, whatever its age; running backups; a failed one until a
    newer backup completed (or it is older than ``keep_days``); every backup that is not the
    schedule's; and every ancestor of a kept backup (a kept incremental needs its whole chain).
    So what is pruned never has a live descendant that is kept, and deleting a pruned backup
    with its descendants deletes only pruned backups.
    """
    facts = {b.id: b for b in backups}
    if not retention.limited:
        return frozenset()
    ours = [b for b in facts.values() if b.scheduled]
    completed = sorted(
        (b for b in ours if b.status is BackupStatus.COMPLETED),
        key=lambda b: (b.taken_at, b.id),
        reverse=True,
    )
    cutoff = now - timedelta(days=retention.keep_days) if retention.keep_days else None
    kept = {b.id for b in facts.values() if not b.scheduled}
    for rank, b in enumerate(completed):
        within_count = retention.keep_count is None or rank < retention.keep_count
        if within_count and (cutoff is None or b.taken_at >= cutoff):
            kept.add(b.id)
    newest_full = next((b for b in completed if b.parent_id is None), None)
    if newest_full is not None:
        kept.add(newest_full.id)
    newest_done = completed[0].taken_at if completed else None
    for b in ours:
        if b.status.running:
            kept.add(b.id)
        elif b.status is not BackupStatus.COMPLETED:
            superseded = newest_done is not None and b.taken_at < newest_done
            expired = cutoff is not None and b.taken_at < cutoff
            if not (superseded or expired):
                kept.add(b.id)
    _add_ancestors(kept, facts)
    return frozenset(b.id for b in ours if b.id not in kept)


def _add_ancestors(kept: set[str], facts: dict[str, BackupFact]) -> None:
    frontier = list(kept)
    while frontier:
        fact = facts.get(frontier.pop())
        parent = fact.parent_id if fact is not None else None
        if parent is not None and parent in facts and parent not in kept:
            kept.add(parent)
            frontier.append(parent)
