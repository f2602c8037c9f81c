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
* ``apply_configuration`` takes new settings (flavor sizes, volume size, the configuration
  group's overrides laid over the flavor-derived defaults): it rewrites the server's files so
  the next start uses all of them and, while the server runs, sets live what the server can
  change live. What needs a restart leaves the instance "restart required" (remembered in a
  marker file, so a new agent still knows) until the server is next started by the agent.
* Passwords are never logged, never put on a command line and never sent to the server in
  clear text where the server can store a verifier instead.
* A manager never assumes it runs on the same host as the control plane.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from cove.common.errors import OperationNotSupported
from cove.domain.capabilities import Capability
from cove.domain.guest import GuestSettings
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus

LOG = logging.getLogger(__name__)


class DatastoreManager(ABC):
    """Public methods hold the shared policy (validation, logging); backends implement the
    protected hooks."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, config: GuestSettings) -> None:
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
        self.server_started()
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
        self.server_started()

    @abstractmethod
    def status(self) -> GuestStatus: ...

    # -- configuration -----------------------------------------------------------------------

    @property
    def _restart_marker(self) -> Path:
        return self.config.conf_dir / "restart_required"

    @property
    def restart_pending(self) -> bool:
        """Whether settings were changed that the running server takes only when restarted."""
        return self._restart_marker.is_file()

    def apply_configuration(self, config: GuestSettings) -> bool:
        """Adopt ``config`` as the instance's settings; return whether a restart is needed to
        bring all of them into effect. Raises GuestError (or Unprocessable) when the server
        refuses a value: the server then keeps its previous files and live values, and the
        manager its previous settings."""
        LOG.info("applying new settings (%d override(s))", len(config.overrides))
        old, self.config = self.config, config
        try:
            needs_restart = self._apply_configuration(old, config)
        except Exception:
            self.config = old
            raise
        if needs_restart:
            self._restart_marker.write_text("yes\n")
        return needs_restart or self.restart_pending

    @abstractmethod
    def _apply_configuration(self, old: GuestSettings, new: GuestSettings) -> bool:
        """Rewrite the server's files for ``new`` (``self.config`` already is ``new``) and,
        when the server runs, set live what changed and can change live; return whether
        something changed that takes a restart. On a refusal, put the previous files and live
        values back before raising."""

    @abstractmethod
    def effective_configuration(self) -> dict[str, str]:
        """The settings Cove gives the server (flavor-derived defaults overlaid with the
        configuration group), by the server's own names, as its config file spells them."""

    #: The least memory (MB) a flavor must give any instance of this datastore.
    min_ram_floor_mb = 128

    def min_ram_mb(self) -> int:
        """The least memory (MB) a flavor must give this instance to hold its data; a datastore
        that keeps its data in memory counts what it holds now."""
        return self.min_ram_floor_mb

    def server_started(self) -> None:
        """Called by the agent after it started the server: every setting is in effect."""
        with contextlib.suppress(FileNotFoundError):
            self._restart_marker.unlink()

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
        self,
        name: str,
        host: str,
        new_name: str | None,
        new_password: str | None,
        new_host: str | None = None,
    ) -> None:
        """Rename, change the password and (where users have hosts) move the user to another
        host; the user keeps its grants."""
        self._require(Capability.USERS)
        moving = new_host is not None and new_host != host
        if moving:
            self._require(Capability.USER_HOSTS)
        LOG.info("updating user %s", name)
        if new_name is not None or new_password is not None:
            self._update_user(name, host, new_name, new_password)
        if moving:
            self._change_host(new_name or name, host, str(new_host))

    def _change_host(self, name: str, host: str, new_host: str) -> None:
        raise OperationNotSupported(f"users of {self.config.datastore} have no host")

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
