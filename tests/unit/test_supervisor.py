"""How `cove up` paces the restarts of a process that keeps dying."""

from __future__ import annotations

from cove.cli.supervisor import MAX_BACKOFF, QUICK, Child, backoff


def test_a_one_off_death_is_restarted_at_once_and_a_crash_loop_ever_slower() -> None:
    assert backoff(1) == 0.0
    pauses = [backoff(n) for n in range(2, 12)]
    assert pauses[0] == 0.2 and pauses == sorted(pauses)
    assert pauses[-1] == MAX_BACKOFF and backoff(100) == MAX_BACKOFF


def test_only_quick_deaths_in_a_row_count() -> None:
    child = Child("taskmanager", started=100.0)
    assert child.exited(100.5) == 0.0 and child.quick_deaths == 1
    child.started = 101.0
    assert child.exited(101.1) == 0.2 and child.due == 101.1 + 0.2
    child.started = 102.0
    assert child.exited(102.1) == 0.4 and child.quick_deaths == 3
    # Lived long enough: the count starts over.
    child.started = 103.0
    assert child.exited(103.0 + QUICK + 1) == 0.0 and child.quick_deaths == 1
