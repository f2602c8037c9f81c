"""How `cove up` paces the restarts of a process that keeps dying."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from cove.cli.supervisor import MAX_BACKOFF, QUICK, Child, Supervisor, backoff
from cove.common.errors import ServiceUnavailable
from cove.common.settings import load_settings


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


class _FlakyBus:
    """A bus server that is dead and fails to start ``failures`` times."""

    socket = "bus.sock"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.starts: list[float] = []
        self.up = False

    def running(self) -> bool:
        return self.up

    def start(self) -> None:
        self.starts.append(time.monotonic())
        if len(self.starts) <= self.failures:
            raise ServiceUnavailable("the embedded bus exited at start")
        self.up = True


def test_a_bus_that_fails_to_start_again_is_retried_ever_slower_and_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(load_settings(data_dir=tmp_path))
    bus = _FlakyBus(failures=4)
    supervisor.bus = bus  # type: ignore[assignment]
    deadline = time.monotonic() + 30
    with caplog.at_level(logging.WARNING, logger="cove.up"):
        while not bus.up:
            assert time.monotonic() < deadline, "the bus was not started again"
            supervisor._check_bus()
            time.sleep(0.01)
    gaps = [b - a for a, b in zip(bus.starts, bus.starts[1:], strict=False)]
    # Not a tight loop: each failed start waits longer before the next.
    assert len(bus.starts) == 5 and gaps == sorted(gaps) and gaps[-1] >= 0.4
    assert any(
        r.levelno == logging.ERROR and "keeps dying" in r.getMessage() for r in caplog.records
    )
