"""Failed password checks, counted so that guessing is slow and costs the server nothing.

Attempts are counted per (user, client address) and per client address (five times the
limit) in a sliding minute, when they start, so a burst of parallel attempts counts in full;
a successful one is taken back. Past the limit, attempts are refused without checking the
password. No count is per user alone, so nobody can lock a user out from everywhere by failing
on purpose. IPv6 clients count per /64. Behind a proxy every client has the proxy's address:
the per-client count is then shared.
"""

from __future__ import annotations

import hashlib
import ipaddress
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


def client_group(address: str) -> str:
    """The unit a client address counts in: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginThrottle:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        """``limit`` failures a minute per user and client; 0 turns the throttle off."""
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._next_prune = 0.0

    def keys(self, user: str, client: str) -> tuple[tuple[str, int], ...]:
        """The counters an attempt for ``user`` (an id, or a normalised name) touches."""
        group = client_group(client)
        return (
            (_key("user", user, group), self.limit),
            (_key("client", group), self.limit * CLIENT_FACTOR),
        )

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return times

    def begin(self, keys: tuple[tuple[str, int], ...]) -> None:
        """Count an attempt. Raises Unauthorized, counting nothing, while a counter is full."""
        if self.limit <= 0:
            return
        now = self._clock()
        with self._lock:
            for key, limit in keys:
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(1, math.ceil(times[0] + WINDOW - now))
                    raise Unauthorized(
                        f"Too many failed authentications; try again in {wait} seconds."
                    )
            for key, _limit in keys:
                self._failures[key].append(now)
            if now >= self._next_prune or len(self._failures) > MAX_KEYS:
                self._prune(now)

    def succeeded(self, keys: tuple[tuple[str, int], ...]) -> None:
        """Take back the attempt :meth:`begin` counted: it was no failure."""
        if self.limit <= 0:
            return
        with self._lock:
            for key, _limit in keys:
                times = self._failures.get(key)
                if times:
                    times.pop()

    def _prune(self, now: float) -> None:
        """Forget counters whose last failure left the window; past MAX_KEYS, the oldest."""
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - WINDOW}
        if len(self._failures) > MAX_KEYS:
            newest = sorted(self._failures.items(), key=lambda kv: kv[1][-1])[-MAX_KEYS // 2 :]
            self._failures = dict(newest)
        self._next_prune = now + WINDOW

    def __len__(self) -> int:
        return len(self._failures)
