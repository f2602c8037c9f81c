"""What every task manager workflow works with."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cove.common.settings import Settings
from cove.compute.base import ComputeDriver
from cove.db.engine import Database
from cove.rpc import RpcClient
from cove.rpc.guest import GuestClient


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


@dataclass
class TaskContext:
    settings: Settings
    db: Database
    bus: RpcClient
    driver: ComputeDriver
    locks: InstanceLocks = field(default_factory=InstanceLocks)

    def guest(self, instance_id: str) -> GuestClient:
        """The guest agent of ``instance_id``."""
        return GuestClient(self.bus, instance_id, self.settings.rpc_timeout)
