"""The Redis datastore manager: a facade over the server process and its ACL users.

Databases are no Redis concept: the manager declares no DATABASES capability, so the base
class refuses every database method, and a prepare or a user naming databases is refused the
same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from cove.common.errors import GuestError, OperationNotSupported
from cove.domain.capabilities import capabilities
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.config import GuestConfig
from cove.guestagent.datastores.base import DatastoreManager
from cove.guestagent.datastores.redis.acl import NO_DATABASES, RedisAcl
from cove.guestagent.datastores.redis.server import RedisServer

LOG = logging.getLogger(__name__)


class RedisManager(DatastoreManager):
    capabilities = capabilities("redis")

    def __init__(self, config: GuestConfig) -> None:
        super().__init__(config)
        self.server = RedisServer(config, self._server_exited)
        self.acl = RedisAcl(self.server.connect)
        self._marker = config.conf_dir / "prepared"
        self._stopped_on_purpose = False
        self._init_lock = threading.Lock()
        self._initialised = False

    def _server_exited(self, code: int) -> None:
        self.on_change(GuestStatus.CRASHED)

    @property
    def prepared(self) -> bool:
        return self._marker.is_file()

    def _warm_up(self) -> None:
        self._initialise()

    def _initialise(self) -> None:
        """A fresh data directory, admin user and config, with the server running; done once
        per agent."""
        with self._init_lock:
            if self._initialised or self.prepared:
                return
            if self._stopped_on_purpose:
                raise GuestError("the guest agent is stopping")
            # A server an earlier agent started for this instance goes before its files do.
            self.server.adopt()
            self.server.stop()
            self.server.initialise()
            self.server.write_config()
            self.server.start()
            self._initialised = True

    def _prepare(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        if databases or any(u.databases for u in users):
            raise OperationNotSupported(NO_DATABASES)
        self._initialise()
        try:
            self.acl.create_users(users)
        except Exception:
            self._initialised = False  # a prepare sent again starts from a clean directory
            raise
        self._marker.write_text("ok\n")

    def adopt(self) -> bool:
        return self.prepared and self.server.adopt()

    def start(self) -> None:
        if not self.prepared:
            raise GuestError("the instance has not been prepared")
        self.server.write_config()
        self._stopped_on_purpose = False
        self.server.start()

    def stop(self) -> None:
        self._stopped_on_purpose = True
        with self._init_lock:  # wait for a warm-up under way, which then starts nothing more
            self.server.stop()

    def status(self) -> GuestStatus:
        if not self.prepared:
            return GuestStatus.BUILDING if self.server.running() else GuestStatus.NEW
        if not self.server.running():
            return GuestStatus.SHUTDOWN if self._stopped_on_purpose else GuestStatus.CRASHED
        return GuestStatus.HEALTHY if self.server.ping() else GuestStatus.BLOCKED

    # -- databases: refused by the base class, which checks the capabilities first -----------

    def _list_databases(self) -> list[DatabaseSpec]:
        raise OperationNotSupported(NO_DATABASES)

    def _create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        raise OperationNotSupported(NO_DATABASES)

    def _delete_database(self, name: str) -> None:
        raise OperationNotSupported(NO_DATABASES)

    # -- users -------------------------------------------------------------------------------

    def _list_users(self) -> list[UserInfo]:
        return self.acl.list_users()

    def _get_user(self, name: str, host: str) -> UserInfo:
        return self.acl.get_user(name, host)

    def _create_users(self, users: Sequence[UserSpec]) -> None:
        self.acl.create_users(users)

    def _delete_user(self, name: str, host: str) -> None:
        self.acl.delete_user(name, host)

    def _update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        self.acl.update_user(name, host, new_name, new_password)

    def _grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        raise OperationNotSupported(NO_DATABASES)

    def _revoke_access(self, name: str, host: str, database: str) -> None:
        raise OperationNotSupported(NO_DATABASES)

    # -- root --------------------------------------------------------------------------------

    def _enable_root(self, password: str) -> str:
        return self.acl.enable_root(password)

    def _disable_root(self) -> None:
        self.acl.disable_root()

    def _is_root_enabled(self) -> bool:
        return self.acl.is_root_enabled()
