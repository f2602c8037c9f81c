"""Per-project request rate limits, as Trove applies them: a number of requests a minute for
each verb (GET, POST, PUT, DELETE; PATCH counts as PUT), in each API process.

A sliding window: the times of the last requests are kept per (project, verb); a request is
refused while the window holds ``limit`` of them, with the seconds until the oldest leaves.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cove.common.errors import RateLimited

WINDOW = 60.0
VERBS = ("POST", "PUT", "DELETE", "GET")


@dataclass(frozen=True)
class RateState:
    verb: str
    value: int
    remaining: int
    next_available: float  # epoch seconds when one more request is allowed


def verb_of(method: str) -> str | None:
    method = method.upper()
    if method == "PATCH":
        return "PUT"
    return method if method in VERBS else None


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def _now(self) -> float:
        return self._clock()

    def _window(self, key: tuple[str, str], now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - WINDOW:
            hits.popleft()
        return hits

    def hit(self, project_id: str, method: str) -> None:
        """Count a request. Raises RateLimited when the project's minute is used up."""
        verb = verb_of(method)
        if verb is None or self.per_minute <= 0:
            return
        now = self._now()
        with self._lock:
            hits = self._window((project_id, verb), now)
            if len(hits) >= self.per_minute:
                retry = max(1, math.ceil(hits[0] + WINDOW - now))
                raise RateLimited(
                    "This request was rate-limited.",
                    retry_after=retry,
                    details=f"Only {self.per_minute} {verb} request(s) can be made per minute.",
                )
            hits.append(now)
            if len(self._hits) > 100_000:
                self._hits = {k: v for k, v in self._hits.items() if v}

    def state(self, project_id: str) -> list[RateState]:
        now = self._now()
        out = []
        with self._lock:
            for verb in VERBS:
                hits = self._window((project_id, verb), now)
                remaining = max(0, self.per_minute - len(hits))
                nxt = now if remaining else hits[0] + WINDOW
                out.append(RateState(verb, self.per_minute, remaining, nxt))
        return out
