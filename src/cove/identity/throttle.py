"""Failed password checks, counted so that guessing is slow and costs the server nothing.

Failures are counted per (user name, client address) and per client address (five times the
limit) in a sliding minute; past the limit, attempts are refused without checking the password.
No key is per user alone, so nobody can lock a user out from everywhere by failing on purpose.
Behind a proxy every client has the proxy's address: the per-client count is then shared.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from cove.common.errors import Unauthorized

WINDOW = 60.0
CLIENT_FACTOR = 5
MAX_KEYS = 100_000


def _key(*parts: str) -> str:
    # Fixed size whatever the caller sent as a name.
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:24]


class LoginThrottle:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        """``limit`` failures a minute per user and client; 0 turns the throttle off."""
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._next_prune = 0.0

    def keys(self, user: str, client: str) -> tuple[tuple[str, int], ...]:
        """The counters one attempt touches, with their limits."""
        return (
            (_key("user", user, client), self.limit),
            (_key("client", client), self.limit * CLIENT_FACTOR),
        )

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return times

    def check(self, keys: tuple[tuple[str, int], ...]) -> None:
        """Raises Unauthorized while a counter is full."""
        if self.limit <= 0:
            return
        now = self._clock()
        with self._lock:
            for key, limit in keys:
                times = self._failures.get(key)
                if times is None:
                    continue
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(1, math.ceil(times[0] + WINDOW - now))
                    raise Unauthorized(
                        f"Too many failed authentications; try again in {wait} seconds."
                    )

    def failed(self, keys: tuple[tuple[str, int], ...]) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        with self._lock:
            for key, _limit in keys:
                self._recent(key, now).append(now)
            if now >= self._next_prune or len(self._failures) > MAX_KEYS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget counters whose last failure left the window; past MAX_KEYS, the oldest."""
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - WINDOW}
        if len(self._failures) > MAX_KEYS:
            newest = sorted(self._failures.items(), key=lambda kv: kv[1][-1])[-MAX_KEYS // 2 :]
            self._failures = dict(newest)
        self._next_prune = now + WINDOW

    def __len__(self) -> int:
        return len(self._failures)
