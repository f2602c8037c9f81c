"""The datastore manager contract: what the guest agent asks of a datastore.

A manager owns one database server beside the guest agent. It is a facade over small parts
(server process control, configuration rendering, database and user administration) and declares
its capabilities so the API can refuse unsupported work before it reaches the guest.

Rules every manager follows:

* ``prepare`` is idempotent: called again after it succeeded it does nothing; called after a
  crash half-way it starts over from a clean data directory. It may block for minutes.
* ``start``, ``stop`` and ``restart`` are idempotent and block until the server is up (or down).
  The server runs as a direct child of the agent whenever the agent started it, so a crash is
  seen at once; ``adopt`` takes over a server left running by a previous agent.
* ``status`` never raises and returns within a few seconds.
* Administration methods (databases, users, access, root) require a running server and raise
  ``DatabaseNotFound``, ``UserNotFound``, ``DatabaseAlreadyExists``, ``UserAlreadyExists`` or
  ``BadRequest`` for the user's mistakes, ``GuestError`` for the server's. A request naming
  several items is checked whole before anything changes, so a mistake in one item leaves the
  server as it was.
* Passwords are never logged, never put on a command line and never sent to the server in
  clear text where the server can store a verifier instead.
* A manager never assumes it runs on the same host as the control plane.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from cove.common.errors import OperationNotSupported
from cove.domain.capabilities import Capability
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.config import GuestConfig

LOG = logging.getLogger(__name__)


class DatastoreManager(ABC):
    """Public methods hold the shared policy (validation, logging); backends implement the
    protected hooks."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, config: GuestConfig) -> None:
        self.config = config
        #: Called with the new status whenever the server changes state on its own (e.g. exits).
        self.on_change: Callable[[GuestStatus], None] = lambda _status: None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    @abstractmethod
    def prepared(self) -> bool:
        """Whether ``prepare`` completed for this instance."""

    def prepare(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        """Initialise, configure and start the server, then create databases and users."""
        if self.prepared:
            LOG.info("instance already prepared")
            self.start()
            return
        LOG.info("preparing %s %s", self.config.datastore, self.config.datastore_version)
        self._prepare(databases, users)
        LOG.info("prepared")

    @abstractmethod
    def _prepare(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None: ...

    def warm_up(self) -> None:
        """Before ``prepare`` arrives, do what needs nothing from the request (initialise and
        start the server), so a new instance is ready sooner. Idempotent; may block; a failure
        is only logged: ``prepare`` meets it again and reports it."""
        try:
            self._warm_up()
        except Exception as exc:
            LOG.warning("could not ready the server ahead of prepare: %s", exc)

    @abstractmethod
    def _warm_up(self) -> None: ...

    @abstractmethod
    def adopt(self) -> bool:
        """Take over a server left running by an earlier agent; True if there was one."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def restart(self) -> None:
        LOG.info("restarting the database server")
        self.stop()
        self.start()

    @abstractmethod
    def status(self) -> GuestStatus: ...

    # -- databases ---------------------------------------------------------------------------

    def _require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise OperationNotSupported(
                f"{capability.value} are not supported by {self.config.datastore}"
            )

    def list_databases(self) -> list[DatabaseSpec]:
        self._require(Capability.DATABASES)
        return self._list_databases()

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        """Create all of ``databases`` or, when one cannot be made, none of them."""
        self._require(Capability.DATABASES)
        LOG.info("creating %d database(s)", len(databases))
        self._create_databases(databases)

    def delete_database(self, name: str) -> None:
        self._require(Capability.DATABASES)
        LOG.info("deleting database %s", name)
        self._delete_database(name)

    @abstractmethod
    def _list_databases(self) -> list[DatabaseSpec]: ...

    @abstractmethod
    def _create_databases(self, databases: Sequence[DatabaseSpec]) -> None: ...

    @abstractmethod
    def _delete_database(self, name: str) -> None: ...

    # -- users -------------------------------------------------------------------------------

    def list_users(self) -> list[UserInfo]:
        self._require(Capability.USERS)
        return self._list_users()

    def get_user(self, name: str, host: str) -> UserInfo:
        self._require(Capability.USERS)
        return self._get_user(name, host)

    def create_users(self, users: Sequence[UserSpec]) -> None:
        """Create all of ``users`` or, when one cannot be made, none of them."""
        self._require(Capability.USERS)
        LOG.info("creating %d user(s)", len(users))
        self._create_users(users)

    def delete_user(self, name: str, host: str) -> None:
        self._require(Capability.USERS)
        LOG.info("deleting user %s", name)
        self._delete_user(name, host)

    def update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        self._require(Capability.USERS)
        LOG.info("updating user %s", name)
        self._update_user(name, host, new_name, new_password)

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None:
        self._require(Capability.USERS)
        LOG.info("granting %s access to %d database(s)", name, len(databases))
        self._grant_access(name, host, databases)

    def revoke_access(self, name: str, host: str, database: str) -> None:
        self._require(Capability.USERS)
        LOG.info("revoking %s access to %s", name, database)
        self._revoke_access(name, host, database)

    @abstractmethod
    def _list_users(self) -> list[UserInfo]: ...

    @abstractmethod
    def _get_user(self, name: str, host: str) -> UserInfo: ...

    @abstractmethod
    def _create_users(self, users: Sequence[UserSpec]) -> None: ...

    @abstractmethod
    def _delete_user(self, name: str, host: str) -> None: ...

    @abstractmethod
    def _update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None: ...

    @abstractmethod
    def _grant_access(self, name: str, host: str, databases: Sequence[str]) -> None: ...

    @abstractmethod
    def _revoke_access(self, name: str, host: str, database: str) -> None: ...

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, password: str) -> str:
        """Enable the superuser login and return its user name."""
        self._require(Capability.ROOT)
        LOG.info("enabling root")
        return self._enable_root(password)

    def disable_root(self) -> None:
        self._require(Capability.ROOT)
        LOG.info("disabling root")
        self._disable_root()

    def is_root_enabled(self) -> bool:
        self._require(Capability.ROOT)
        return self._is_root_enabled()

    @abstractmethod
    def _enable_root(self, password: str) -> str: ...

    @abstractmethod
    def _disable_root(self) -> None: ...

    @abstractmethod
    def _is_root_enabled(self) -> bool: ...
