"""The guest agent's RPC methods on databases, users, access and root.

Each method applies, once, the policy every datastore shares: the datastore must have the
capability (``OperationNotSupported``, 501, otherwise), a change is logged (never a password),
and an update that moves a user to another host is split from its rename and password change.
Then it calls the manager's admin object (``DatastoreManager.admin``, the ``Admin`` protocol of
``cove.guestagent.datastores.base``) directly. ``cove.guestagent.service.guest_endpoints`` puts
these methods in the agent's RPC table.
"""

from __future__ import annotations

import logging

from cove.common.errors import OperationNotSupported
from cove.domain.capabilities import Capability
from cove.domain.guest import PasswordChange, RootEnabled
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.guestagent.datastores.base import Admin, DatastoreManager
from cove.rpc import RequestContext

LOG = logging.getLogger(__name__)


class GuestAdminEndpoints:
    def __init__(self, manager: DatastoreManager) -> None:
        self.manager = manager

    def _admin(self, capability: Capability) -> Admin:
        """The manager's admin object. Raises OperationNotSupported when the datastore does
        not have ``capability``."""
        if capability not in self.manager.capabilities:
            raise OperationNotSupported(
                f"{capability.value} are not supported by {self.manager.config.datastore}"
            )
        return self.manager.admin

    # -- databases ---------------------------------------------------------------------------

    def list_databases(self, ctx: RequestContext) -> list[DatabaseSpec]:
        return self._admin(Capability.DATABASES).list_databases()

    def create_databases(self, ctx: RequestContext, databases: list[DatabaseSpec]) -> None:
        admin = self._admin(Capability.DATABASES)
        LOG.info("creating %d database(s)", len(databases))
        admin.create_databases(databases)

    def delete_database(self, ctx: RequestContext, name: str) -> None:
        admin = self._admin(Capability.DATABASES)
        LOG.info("deleting database %s", name)
        admin.delete_database(name)

    # -- users -------------------------------------------------------------------------------

    def list_users(self, ctx: RequestContext) -> list[UserInfo]:
        return self._admin(Capability.USERS).list_users()

    def get_user(self, ctx: RequestContext, name: str, host: str) -> UserInfo:
        return self._admin(Capability.USERS).get_user(name, host)

    def create_users(self, ctx: RequestContext, users: list[UserSpec]) -> None:
        admin = self._admin(Capability.USERS)
        LOG.info("creating %d user(s)", len(users))
        admin.create_users(users)

    def delete_user(self, ctx: RequestContext, name: str, host: str) -> None:
        admin = self._admin(Capability.USERS)
        LOG.info("deleting user %s", name)
        admin.delete_user(name, host)

    def update_user(
        self,
        ctx: RequestContext,
        name: str,
        host: str,
        new_name: str | None = None,
        new_password: str | None = None,
        new_host: str | None = None,
    ) -> None:
        """Rename, change the password and (where users have hosts) move the user to another
        host; the user keeps its grants. A move needs ``Capability.USER_HOSTS``, checked
        before anything changes."""
        admin = self._admin(Capability.USERS)
        moving = new_host is not None and new_host != host
        if moving:
            self._admin(Capability.USER_HOSTS)
        LOG.info("updating user %s", name)
        if new_name is not None or new_password is not None:
            admin.update_user(name, host, new_name, new_password)
        if moving:
            admin.change_host(new_name or name, host, str(new_host))

    def change_passwords(self, ctx: RequestContext, users: list[PasswordChange]) -> None:
        for user in users:
            self.update_user(ctx, user.name, user.host, None, user.password)

    def list_access(self, ctx: RequestContext, name: str, host: str) -> list[str]:
        return list(self.get_user(ctx, name, host).databases)

    def grant_access(self, ctx: RequestContext, name: str, host: str, databases: list[str]) -> None:
        admin = self._admin(Capability.USERS)
        LOG.info("granting %s access to %d database(s)", name, len(databases))
        admin.grant_access(name, host, databases)

    def revoke_access(self, ctx: RequestContext, name: str, host: str, database: str) -> None:
        admin = self._admin(Capability.USERS)
        LOG.info("revoking %s access to %s", name, database)
        admin.revoke_access(name, host, database)

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, ctx: RequestContext, password: str) -> RootEnabled:
        """Enable the superuser login and answer its user name."""
        admin = self._admin(Capability.ROOT)
        LOG.info("enabling root")
        return RootEnabled(name=admin.enable_root(password))

    def disable_root(self, ctx: RequestContext) -> None:
        admin = self._admin(Capability.ROOT)
        LOG.info("disabling root")
        admin.disable_root()

    def is_root_enabled(self, ctx: RequestContext) -> bool:
        return self._admin(Capability.ROOT).is_root_enabled()
