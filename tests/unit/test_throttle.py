"""The login throttle: per user and client, per client, pruning, off switch."""

from __future__ import annotations

import pytest

from cove.common.errors import Unauthorized
from cove.identity.throttle import CLIENT_FACTOR, MAX_KEYS, WINDOW, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_is_refused_from_the_failing_client_only() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, clock)
    mine = throttle.keys("ann", "10.0.0.1")
    for _ in range(3):
        throttle.check(mine)
        throttle.failed(mine)
    with pytest.raises(Unauthorized, match="try again in 60 seconds"):
        throttle.check(mine)
    throttle.check(throttle.keys("ann", "10.0.0.2"))  # ann elsewhere is not locked out
    clock.now += WINDOW
    throttle.check(mine)


def test_a_client_spraying_many_users_is_refused() -> None:
    throttle = LoginThrottle(2, Clock())
    for i in range(2 * CLIENT_FACTOR):
        throttle.failed(throttle.keys(f"user{i}", "10.0.0.9"))
    with pytest.raises(Unauthorized):
        throttle.check(throttle.keys("someone-new", "10.0.0.9"))
    throttle.check(throttle.keys("someone-new", "10.0.0.10"))


def test_old_counters_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(10, clock)
    for i in range(1000):
        throttle.failed(throttle.keys(f"u{i}", f"c{i}"))
    assert len(throttle) == 2000
    clock.now += WINDOW + 1
    throttle.failed(throttle.keys("late", "c"))
    assert len(throttle) == 2
    for i in range(MAX_KEYS):
        throttle.failed(throttle.keys(f"x{i}" * 50, "same"))
    assert len(throttle) <= MAX_KEYS + 1


def test_zero_turns_it_off() -> None:
    throttle = LoginThrottle(0, Clock())
    keys = throttle.keys("ann", "c")
    for _ in range(100):
        throttle.failed(keys)
    throttle.check(keys)
    assert len(throttle) == 0
