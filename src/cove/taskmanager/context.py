"""What every task manager workflow works with."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from cove.common.metrics import Metrics
from cove.common.settings import Settings
from cove.compute.base import ComputeDriver
from cove.db.engine import Database
from cove.db.sealed import Sealer
from cove.rpc import RpcClient
from cove.rpc.guest import GuestClient

if TYPE_CHECKING:
    from cove.taskmanager.events import EventSender


class InstanceLocks:
    """One lock per instance, so this task manager's workflows that change an instance's
    settings (a configuration push, a resize) run one after the other: each reads the row when
    it starts, so the last one leaves the place and the guest as the row stands. Task managers
    on other hosts are not covered: the instance's task keeps a resize from starting while
    another runs."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._users: dict[str, int] = {}

    @contextmanager
    def hold(self, instance_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(instance_id, threading.Lock())
            self._users[instance_id] = self._users.get(instance_id, 0) + 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                self._users[instance_id] -= 1
                if not self._users[instance_id]:
                    del self._users[instance_id], self._locks[instance_id]


class PendingPushes:
    """This task manager's pushes of pending settings (cove.taskmanager.configure.push_pending):
    which instances one is running for (at most ``limit`` at once, never two for one instance),
    and when an instance whose push failed may be tried again: after FIRST_WAIT, doubled at each
    further failure up to MOST_WAIT, so a guest that is gone is not called again and again. A
    new change of the instance's settings (its row's ``updated`` moved) is tried at once."""

    FIRST_WAIT = 5.0
    MOST_WAIT = 300.0

    def __init__(self, limit: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._guard = threading.Lock()
        self._running: dict[str, datetime] = {}  # instance id: the revision being pushed
        self._failed: dict[str, tuple[datetime, int, float]] = {}  # revision, failures, next

    def claim(self, instance_id: str, revision: datetime) -> bool:
        """Whether a push of ``revision`` (the row's ``updated``) may start now; if so, it is
        running until :meth:`done`."""
        with self._guard:
            if instance_id in self._running or len(self._running) >= self.limit:
                return False
            failed = self._failed.get(instance_id)
            if failed is not None and failed[0] == revision and self._clock() < failed[2]:
                return False
            self._running[instance_id] = revision
            return True

    def done(self, instance_id: str, ok: bool) -> None:
        """The push :meth:`claim` allowed ended, well or not."""
        with self._guard:
            revision = self._running.pop(instance_id)
            if ok:
                self._failed.pop(instance_id, None)
                return
            before = self._failed.get(instance_id)
            failures = before[1] + 1 if before is not None and before[0] == revision else 1
            wait = min(self.FIRST_WAIT * 2 ** min(failures - 1, 16), self.MOST_WAIT)
            self._failed[instance_id] = (revision, failures, self._clock() + wait)

    def keep_only(self, pending: set[str]) -> None:
        """Forget the failures of instances no longer waiting for a push."""
        with self._guard:
            for instance_id in set(self._failed) - pending:
                del self._failed[instance_id]

    def idle(self) -> bool:
        """Whether no push is running."""
        with self._guard:
            return not self._running


@dataclass
class TaskContext:
    settings: Settings
    db: Database
    bus: RpcClient
    driver: ComputeDriver
    locks: InstanceLocks = field(default_factory=InstanceLocks)
    pushes: PendingPushes = field(default_factory=PendingPushes)
    #: Where the tasks' durations are counted; None when metrics are off.
    metrics: Metrics | None = None
    #: Who tells the ends of tasks as notification events (the task manager's); None: nobody.
    events: EventSender | None = None

    @cached_property
    def sealer(self) -> Sealer:
        """Opens the sealed arguments of tasks. Raises ConfigurationError (no task key)."""
        return Sealer.for_settings(self.settings)

    def guest(self, instance_id: str) -> GuestClient:
        """The guest agent of ``instance_id``."""
        return GuestClient(self.bus, instance_id, self.settings.rpc_timeout)
