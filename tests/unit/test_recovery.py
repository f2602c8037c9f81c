"""The guest agent's restarts after a crash (cove.guestagent.recovery), as logic: the policy as a
pure function, and the state machine around a stand-in manager whose starts succeed or fail on
cue (the real servers are in tests/integration/test_server_recovery.py)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cove.common.errors import GuestError
from cove.domain.guest import ServerOutcome
from cove.domain.status import GuestStatus
from cove.guestagent.recovery import RESTART_DELAYS, RESTART_WINDOW, Recovery, RestartPolicy

#: Short pauses, so the state machine runs in milliseconds.
QUICK = RestartPolicy(delays=(0.0, 0.01, 0.02), window=60.0)


def test_the_policy_restarts_at_once_then_after_growing_pauses_then_gives_up() -> None:
    policy = RestartPolicy()
    assert policy.delays == RESTART_DELAYS and policy.window == RESTART_WINDOW
    assert RESTART_DELAYS[0] == 0 and list(RESTART_DELAYS) == sorted(RESTART_DELAYS)
    now = 10_000.0
    made: list[float] = []
    for expected in RESTART_DELAYS:
        assert policy.next_delay(made, now) == expected
        made.append(now)
        now += 1
    assert policy.next_delay(made, now) is None
    # Restarts older than the window no longer count: a server that stayed up gets them back.
    assert policy.next_delay(made, made[0] + RESTART_WINDOW) == RESTART_DELAYS[-1]
    assert policy.next_delay(made, made[-1] + RESTART_WINDOW) == 0


class Manager:
    """Stands in for a datastore manager: ``recover`` pops the next outcome (True, False, or
    an exception to raise); ``status`` answers what the test sets."""

    prepared = True

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.after_start = GuestStatus.HEALTHY

    def recover(self) -> bool:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return bool(outcome)

    def status(self) -> GuestStatus:
        return self.after_start


class Reports:
    def __init__(self) -> None:
        self.got: queue.Queue[tuple[ServerOutcome, str]] = queue.Queue()

    def __call__(self, outcome: ServerOutcome, details: str) -> None:
        self.got.put((outcome, details))

    def next(self) -> tuple[ServerOutcome, str]:
        return self.got.get(timeout=10)

    def none_pending(self) -> bool:
        return self.got.empty()


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def recovery(manager: Manager, policy: RestartPolicy = QUICK) -> tuple[Recovery, Reports]:
    reports = Reports()
    return Recovery(manager, threading.Lock(), reports, policy), reports  # type: ignore[arg-type]


def test_a_crash_is_reported_and_the_server_restarted_until_it_answers() -> None:
    manager = Manager(GuestError("still failing"), True)
    rec, reports = recovery(manager)
    rec.server_exited("PostgreSQL was killed by SIGKILL")
    outcome, details = reports.next()
    assert outcome is ServerOutcome.CRASHED and details.startswith("PostgreSQL was killed")
    assert reports.next() == (ServerOutcome.RECOVERED, "answers again after 2 restart(s)")
    assert manager.calls == 2 and not rec.gave_up


def test_exits_while_restarting_belong_to_that_restart() -> None:
    gate = threading.Event()

    class Slow(Manager):
        def recover(self) -> bool:
            gate.wait(10)
            return super().recover()

    manager = Slow(True)
    rec, reports = recovery(manager)
    rec.server_exited("first")
    assert reports.next()[0] is ServerOutcome.CRASHED
    rec.server_exited("a start that failed")  # no second thread, no second report
    gate.set()
    assert reports.next()[0] is ServerOutcome.RECOVERED
    assert manager.calls == 1 and reports.none_pending()


def test_a_server_that_dies_right_after_starting_counts_as_the_same_crash() -> None:
    manager = Manager(*[True] * len(QUICK.delays))
    manager.after_start = GuestStatus.CRASHED
    rec, reports = recovery(manager)
    rec.server_exited("first")
    assert reports.next()[0] is ServerOutcome.CRASHED
    outcome, details = reports.next()
    assert outcome is ServerOutcome.GAVE_UP, details
    assert "exited again right after it started" in details
    assert manager.calls == len(QUICK.delays)


def test_giving_up_and_an_intended_start_afterwards() -> None:
    failures = [GuestError(f"cannot start: try {n}") for n in range(len(QUICK.delays))]
    manager = Manager(*failures)
    rec, reports = recovery(manager)
    rec.server_exited("Redis exited with status 1")
    assert reports.next()[0] is ServerOutcome.CRASHED
    outcome, details = reports.next()
    assert outcome is ServerOutcome.GAVE_UP
    assert details.endswith(f"try {len(QUICK.delays) - 1}")
    assert manager.calls == len(QUICK.delays) and rec.gave_up
    # Given up: a later exit starts nothing.
    rec.server_exited("again")
    assert manager.calls == len(QUICK.delays) and reports.none_pending()
    # A restart asked through the API ends the give-up and the count.
    rec.started_on_purpose()
    assert reports.next() == (ServerOutcome.RECOVERED, "started again by a restart")
    assert not rec.gave_up
    manager.outcomes = [True]
    rec.server_exited("a new crash")
    assert reports.next()[0] is ServerOutcome.CRASHED
    assert reports.next() == (ServerOutcome.RECOVERED, "answers again after 1 restart(s)")


def test_an_intended_stop_ends_the_recovery_quietly() -> None:
    manager = Manager(False)  # recover finds a stop was asked meanwhile
    rec, reports = recovery(manager)
    rec.server_exited("killed")
    assert reports.next()[0] is ServerOutcome.CRASHED
    wait_until(lambda: not rec.active)
    assert manager.calls == 1 and reports.none_pending()  # no claim that the server is back
    # Idle again: a new exit is dealt with afresh.
    manager.outcomes = [True]
    rec.server_exited("again")
    assert reports.next()[0] is ServerOutcome.CRASHED
    assert reports.next()[0] is ServerOutcome.RECOVERED


@pytest.mark.parametrize("while_", ["pausing", "before"])
def test_closing_the_agent_stops_any_further_restart(while_: str) -> None:
    manager = Manager(GuestError("no"), True)
    rec, reports = recovery(manager, RestartPolicy(delays=(0.0, 30.0), window=60.0))
    if while_ == "before":
        rec.close()
        rec.server_exited("killed")
        assert reports.none_pending() and manager.calls == 0
        return
    rec.server_exited("killed")
    assert reports.next()[0] is ServerOutcome.CRASHED
    wait_until(lambda: manager.calls == 1)  # the first restart failed: a 30 s pause begins
    rec.close()
    wait_until(lambda: not rec.active)  # the pause ended at once, with no restart
    assert manager.calls == 1 and reports.none_pending()
