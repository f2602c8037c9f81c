"""Whether the API can serve requests: the checks behind ``GET /readyz``.

The control database must answer a trivial query and the bus must take a command (declaring the
task manager's queue, which the API does at start anyway). Checks run one at a time, and an
answer younger than ``reuse_seconds`` serves the requests that come meanwhile, so a crowd of
probes costs one check, and a bus that is down (each check then waits for the bus client's
connect timeout) ties up one worker thread, not one per probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from cove.db.engine import Database
from cove.rpc import RpcClient
from cove.rpc.taskmanager import TaskManagerClient

LOG = logging.getLogger(__name__)

#: The dependencies checked, in order, by the names the answer gives them.
DEPENDENCIES = ("database", "bus")


@dataclass(frozen=True)
class Readiness:
    """The outcome of one check: the dependencies that failed (none: ready)."""

    failed: frozenset[str]
    at: float

    @property
    def ready(self) -> bool:
        return not self.failed


def _query(db: Database) -> None:
    with db.session() as s:
        s.execute(text("SELECT 1"))


def _declare(bus: RpcClient) -> None:
    TaskManagerClient(bus).declare()


class ReadinessProbe:
    """Checks the control database and the bus; thread-safe."""

    def __init__(self, reuse_seconds: float = 1.0) -> None:
        self.reuse_seconds = reuse_seconds
        self._lock = threading.Lock()
        self._last: Readiness | None = None

    def check(self, db: Database, bus: RpcClient) -> Readiness:
        """Check each dependency (or reuse a fresh answer). Never raises: a dependency that
        fails is named in the answer, and why in the log."""
        last = self._last
        if last is not None and time.monotonic() - last.at < self.reuse_seconds:
            return last
        if not self._lock.acquire(blocking=False):
            # Another probe is checking (perhaps waiting on a dead bus): answer with what was
            # last seen rather than hold a worker thread for as long.
            return last if last is not None else Readiness(frozenset(DEPENDENCIES), 0.0)
        try:
            checks: dict[str, Callable[[], None]] = {
                "database": lambda: _query(db),
                "bus": lambda: _declare(bus),
            }
            failed = frozenset(name for name in DEPENDENCIES if not _passes(name, checks[name]))
            self._last = Readiness(failed, time.monotonic())
            return self._last
        finally:
            self._lock.release()


def _passes(name: str, check: Callable[[], None]) -> bool:
    try:
        check()
    # Whatever goes wrong means "not ready"; the probe must answer, not fail.
    except Exception as exc:
        LOG.warning("readiness: the %s check failed: %s: %s", name, type(exc).__name__, exc)
        return False
    return True
