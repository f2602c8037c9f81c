"""The guest agent's RPC endpoint and heartbeat.

The table in :meth:`GuestService.endpoints` is the whole remote surface of the agent; the
control plane calls nothing else, through ``cove.rpc.guest.GuestClient``. Arguments and results
are typed (``cove.rpc.codec`` carries them as JSON); secrets arrive only in arguments and are
never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from cove.common.errors import CoveError
from cove.common.ids import utcnow
from cove.domain.guest import (
    ConfigurationApplied,
    GuestSettings,
    HeartbeatPayload,
    PasswordChange,
    RootEnabled,
    Value,
)
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.datastores.base import DatastoreManager
from cove.rpc import RequestContext, RpcClient, codec
from cove.rpc.conductor import ConductorClient

LOG = logging.getLogger(__name__)


class GuestService:
    def __init__(self, config: GuestSettings, manager: DatastoreManager, bus: RpcClient) -> None:
        self.config = config
        self.manager = manager
        self.conductor = ConductorClient(bus)
        self._busy: GuestStatus | None = None
        self._stop = threading.Event()
        self._beat_now = threading.Event()
        self._op_lock = threading.Lock()
        manager.on_change = lambda _status: self._beat_now.set()

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        """The agent's RPC table; ``cove.rpc.guest.GuestClient`` is its client."""
        return codec.endpoints(
            {
                "prepare": self.prepare,
                "restart": self.restart,
                "apply_configuration": self.apply_configuration,
                "get_configuration": self.get_configuration,
                "min_ram_mb": self.min_ram_mb,
                "get_status": self.get_status,
                "list_databases": self.list_databases,
                "create_databases": self.create_databases,
                "delete_database": self.delete_database,
                "list_users": self.list_users,
                "get_user": self.get_user,
                "create_users": self.create_users,
                "delete_user": self.delete_user,
                "update_user": self.update_user,
                "change_passwords": self.change_passwords,
                "list_access": self.list_access,
                "grant_access": self.grant_access,
                "revoke_access": self.revoke_access,
                "enable_root": self.enable_root,
                "disable_root": self.disable_root,
                "is_root_enabled": self.is_root_enabled,
            }
        )

    # -- reporting ---------------------------------------------------------------------------

    def status(self) -> GuestStatus:
        if self._busy is not None:
            return self._busy
        try:
            status = self.manager.status()
        except Exception:
            LOG.exception("status check failed")
            return GuestStatus.UNKNOWN
        if status in (GuestStatus.HEALTHY, GuestStatus.RUNNING) and self.manager.restart_pending:
            return GuestStatus.RESTART_REQUIRED
        return status

    def heartbeat(self) -> None:
        payload = HeartbeatPayload(agent_pid=os.getpid())
        try:
            self.conductor.heartbeat(
                RequestContext(), self.config.instance_id, self.status(), payload, utcnow()
            )
        except CoveError as exc:
            LOG.warning("cannot reach the conductor (heartbeat): %s", exc.message)

    def report(self, operation: str, outcome: str, details: str = "") -> None:
        try:
            self.conductor.report(
                RequestContext(), self.config.instance_id, operation, outcome, details, utcnow()
            )
        except CoveError as exc:
            LOG.warning("cannot reach the conductor (report): %s", exc.message)

    def run_heartbeats(self) -> None:
        """Send a heartbeat every interval, and at once when the server changes state."""
        try:
            self.conductor.declare()
        except CoveError as exc:
            LOG.warning("cannot declare the conductor topic yet: %s", exc.message)
        while not self._stop.is_set():
            self.heartbeat()
            self._beat_now.wait(self.config.heartbeat_interval)
            self._beat_now.clear()

    def stop(self) -> None:
        self._stop.set()
        self._beat_now.set()

    def _while(self, state: GuestStatus, work: Callable[[], None]) -> None:
        with self._op_lock:
            self._busy = state
            self._beat_now.set()
            try:
                work()
            finally:
                self._busy = None
                self._beat_now.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def prepare(
        self, ctx: RequestContext, databases: list[DatabaseSpec], users: list[UserSpec]
    ) -> None:
        try:
            self._while(GuestStatus.BUILDING, lambda: self.manager.prepare(databases, users))
        except Exception as exc:
            message = exc.message if isinstance(exc, CoveError) else f"{type(exc).__name__}: {exc}"
            LOG.exception("prepare failed")
            self.report("prepare", "failure", message)
            return
        self.report("prepare", "success")

    def restart(self, ctx: RequestContext) -> None:
        self._while(GuestStatus.RESTARTING, self.manager.restart)

    def apply_configuration(
        self,
        ctx: RequestContext,
        ram_mb: int,
        vcpus: int,
        volume_gb: int,
        overrides: dict[str, Value],
    ) -> ConfigurationApplied:
        """Take new flavor sizes, volume size and configuration overrides; answers whether
        the server must be restarted for all of them to be in effect."""
        new = dataclasses.replace(
            self.manager.config,
            ram_mb=ram_mb,
            vcpus=vcpus,
            volume_gb=volume_gb,
            overrides=dict(overrides),
        )
        with self._op_lock:
            try:
                needs_restart = self.manager.apply_configuration(new)
            finally:
                self.config = self.manager.config
                self._beat_now.set()
        return ConfigurationApplied(restart_required=needs_restart)

    def get_configuration(self, ctx: RequestContext) -> dict[str, str]:
        return self.manager.effective_configuration()

    def min_ram_mb(self, ctx: RequestContext) -> int:
        return self.manager.min_ram_mb()

    def get_status(self, ctx: RequestContext) -> GuestStatus:
        return self.status()

    # -- databases ---------------------------------------------------------------------------

    def list_databases(self, ctx: RequestContext) -> list[DatabaseSpec]:
        return self.manager.list_databases()

    def create_databases(self, ctx: RequestContext, databases: list[DatabaseSpec]) -> None:
        self.manager.create_databases(databases)

    def delete_database(self, ctx: RequestContext, name: str) -> None:
        self.manager.delete_database(name)

    # -- users -------------------------------------------------------------------------------

    def list_users(self, ctx: RequestContext) -> list[UserInfo]:
        return self.manager.list_users()

    def get_user(self, ctx: RequestContext, name: str, host: str) -> UserInfo:
        return self.manager.get_user(name, host)

    def create_users(self, ctx: RequestContext, users: list[UserSpec]) -> None:
        self.manager.create_users(users)

    def delete_user(self, ctx: RequestContext, name: str, host: str) -> None:
        self.manager.delete_user(name, host)

    def update_user(
        self,
        ctx: RequestContext,
        name: str,
        host: str,
        new_name: str | None = None,
        new_password: str | None = None,
        new_host: str | None = None,
    ) -> None:
        self.manager.update_user(name, host, new_name, new_password, new_host)

    def change_passwords(self, ctx: RequestContext, users: list[PasswordChange]) -> None:
        for user in users:
            self.manager.update_user(user.name, user.host, None, user.password)

    def list_access(self, ctx: RequestContext, name: str, host: str) -> list[str]:
        return list(self.manager.get_user(name, host).databases)

    def grant_access(self, ctx: RequestContext, name: str, host: str, databases: list[str]) -> None:
        self.manager.grant_access(name, host, databases)

    def revoke_access(self, ctx: RequestContext, name: str, host: str, database: str) -> None:
        self.manager.revoke_access(name, host, database)

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, ctx: RequestContext, password: str) -> RootEnabled:
        return RootEnabled(name=self.manager.enable_root(password))

    def disable_root(self, ctx: RequestContext) -> None:
        self.manager.disable_root()

    def is_root_enabled(self, ctx: RequestContext) -> bool:
        return self.manager.is_root_enabled()
