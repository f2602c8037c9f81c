"""The login throttle: per user and client, per client, bursts, pruning, off switch."""

from __future__ import annotations

import pytest

from cove.common.errors import Unauthorized
from cove.identity.throttle import CLIENT_FACTOR, MAX_KEYS, WINDOW, LoginThrottle, client_group


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
        throttle.begin(mine)  # each fails: nothing taken back
    with pytest.raises(Unauthorized, match="try again in 60 seconds"):
        throttle.begin(mine)
    throttle.begin(throttle.keys("ann", "10.0.0.2"))  # ann elsewhere is not locked out
    clock.now += WINDOW
    throttle.begin(mine)


def test_attempts_count_when_they_start_and_successes_are_taken_back() -> None:
    throttle = LoginThrottle(2, Clock())
    keys = throttle.keys("ann", "10.0.0.1")
    throttle.begin(keys)
    throttle.begin(keys)  # two in flight at once: the third must wait for neither to fail
    with pytest.raises(Unauthorized):
        throttle.begin(keys)
    throttle.succeeded(keys)
    throttle.begin(keys)


def test_a_client_spraying_many_users_is_refused() -> None:
    throttle = LoginThrottle(2, Clock())
    for i in range(2 * CLIENT_FACTOR):
        throttle.begin(throttle.keys(f"user{i}", "10.0.0.9"))
    with pytest.raises(Unauthorized):
        throttle.begin(throttle.keys("someone-new", "10.0.0.9"))
    throttle.begin(throttle.keys("someone-new", "10.0.0.10"))


def test_ipv6_clients_count_per_64() -> None:
    assert client_group("2001:db8::1") == client_group("2001:db8::ffff") == "2001:db8::/64"
    assert client_group("10.1.2.3") == "10.1.2.3" and client_group("testclient") == "testclient"


def test_old_counters_are_forgotten_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(10, clock)
    for i in range(1000):
        throttle.begin(throttle.keys(f"u{i}", f"c{i}"))
    assert len(throttle) == 2000
    clock.now += WINDOW + 1
    throttle.begin(throttle.keys("late", "c"))
    assert len(throttle) == 2
    for i in range(MAX_KEYS):
        throttle.begin(throttle.keys(f"x{i}" * 50, f"d{i}"))
    assert len(throttle) <= MAX_KEYS + 1


def test_zero_turns_it_off() -> None:
    throttle = LoginThrottle(0, Clock())
    keys = throttle.keys("ann", "c")
    for _ in range(100):
        throttle.begin(keys)
    assert len(throttle) == 0
