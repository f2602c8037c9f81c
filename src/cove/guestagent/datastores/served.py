"""The lifecycle every datastore manager shares: one server, run as the agent's child.

A :class:`ServedManager` owns a server controller (a ``cove.guestagent.child.ChildServer``
that also makes a fresh data directory and writes its config) and does the rest the same way
for every datastore:

* warm-up and ``prepare`` initialise a fresh data directory, write the config and start the
  server once per agent (a server an earlier agent left running for this instance is stopped
  first, so its files can go); ``prepare`` then creates what the request asks for
  (:meth:`_fill`) and marks the instance prepared; a failure there makes the next ``prepare``
  start again from a clean directory; a replica's ``prepare`` stops the warmed-up server and
  has the ``replication`` engine replace its data directory by a copy of the source's before
  starting it;
* ``start`` writes the config again (the settings may have changed) and starts the server,
  ``adopt`` takes over a prepared instance's running server, ``stop`` waits for a warm-up or
  a recovery under way; ``recover`` is ``start`` after a crash, which a stop asked before it
  cancels;
* ``fence`` records a marker first, then has the replication engine stop the writes; a
  fenced server is never started as a primary again (``start`` refuses, ``recover`` does
  nothing, and a new agent stops one it finds running) until ``follow`` has made it a
  replica; ``follow`` re-points a running replica live, and otherwise stops the server, has
  the engine set its data directory up as a replica (``rejoin``) and starts it;
* ``status``: NEW or BUILDING before ``prepare`` is done; SHUTDOWN when stopped on purpose,
  CRASHED when the server exited by itself (and while ``recover`` starts it again, until it
  answers); HEALTHY when it answers, BLOCKED when it does not.
"""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol

from cove.common.errors import GuestError, OperationNotSupported
from cove.domain.backups import RestoreJob
from cove.domain.guest import ClusterMember, GuestSettings
from cove.domain.replication import ReplicaSource
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent import backups
from cove.guestagent.child import describe_exit
from cove.guestagent.datastores.base import (
    FENCED_MARKER,
    REPLICA_MARKER,
    DatastoreManager,
    ReplicationEngine,
)

LOG = logging.getLogger(__name__)


class Server(Protocol):
    """What a manager asks of its server controller."""

    config: GuestSettings
    #: How logs and reports name the server ("PostgreSQL").
    title: str

    def initialise(self) -> None: ...

    def adopt(self) -> bool: ...

    def start(self) -> None: ...

    def wait_ready(self) -> None: ...

    def stop(self) -> None: ...

    def running(self) -> bool: ...

    def ping(self) -> bool: ...


class ServedManager(DatastoreManager):
    def __init__(self, config: GuestSettings) -> None:
        super().__init__(config)
        self.server = self._make_server(config, self._server_exited)
        self._marker = config.conf_dir / "prepared"
        self._stopped_on_purpose = False
        self._recovering = False
        self._init_lock = threading.Lock()
        self._initialised = False

    @abstractmethod
    def _make_server(self, config: GuestSettings, on_exit: Callable[[int], None]) -> Server:
        """The controller of this datastore's server."""

    @abstractmethod
    def write_config(self) -> None:
        """Write the server's config files for ``self.config``; raises Unprocessable (before
        writing anything) for an override that cannot be written."""

    @abstractmethod
    def _fill(self, databases: Sequence[DatabaseSpec], users: Sequence[UserSpec]) -> None:
        """Create what ``prepare`` asks for on the fresh, running server."""

    def _server_exited(self, code: int) -> None:
        self.on_change(GuestStatus.CRASHED)
        self.on_crash(describe_exit(self.server.title, code))

    @property
    def prepared(self) -> bool:
        return self._marker.is_file()

    def _warm_up(self) -> None:
        self._initialise()

    def _initialise(self) -> None:
        """A fresh data directory, configured and running; done once per agent."""
        with self._init_lock:
            if self._initialised or self.prepared:
                return
            if self._stopped_on_purpose:
                raise GuestError("the guest agent is stopping")
            # A server an earlier agent started for this instance goes before its files do.
            self.server.adopt()
            self.server.stop()
            self.server.initialise()
            self.write_config()
            self.server.start()
            self._initialised = True

    def _prepare(
        self,
        databases: Sequence[DatabaseSpec],
        users: Sequence[UserSpec],
        restore: RestoreJob | None,
        replica_of: ReplicaSource | None,
    ) -> None:
        try:
            if replica_of is not None:
                self._replicate(replica_of)
            else:
                self._initialise()
                if restore is not None:
                    self._restore(restore)
                self._fill(databases, users)
        except Exception:
            self._initialised = False  # a prepare sent again starts from a clean directory
            raise
        self._marker.write_text("ok\n")

    def _replicate(self, source: ReplicaSource) -> None:
        """Replace whatever runs here (the warmed-up server, or one an earlier agent left) by
        a replica of ``source`` and start it."""
        if self.replication is None:
            raise GuestError(f"replication is not supported by {self.config.datastore}")
        with self._init_lock:
            if self._stopped_on_purpose:
                raise GuestError("the guest agent is stopping")
            self._initialised = False
            self.server.adopt()
            self.server.stop()
            self.replication.make_replica(source)
            (self.config.conf_dir / REPLICA_MARKER).write_text(source.instance_id + "\n")
            self.write_config()
            self.server.start()
            self._initialised = True

    def _join_cluster(self, member: ClusterMember) -> None:
        """Stop the warmed-up server (initialising a data directory when warm-up did not),
        have the datastore record the membership (:meth:`_become_member`) and start it: the
        first member begins the cluster on its fresh data, a later one takes a copy of a
        peer's before it answers."""
        with self._init_lock:
            if self._stopped_on_purpose:
                raise GuestError("the guest agent is stopping")
            try:
                self.server.adopt()
                self.server.stop()
                if not self._initialised:
                    self.server.initialise()
                self._initialised = False
                self._become_member(member)
                self.write_config()
                self.server.start()
            except Exception:
                self._initialised = False  # a prepare sent again starts from a clean directory
                raise
            self._initialised = True
        self._marker.write_text("ok\n")

    def _become_member(self, member: ClusterMember) -> None:
        """Record ``member`` so the next start (and every later one) runs in its cluster.
        Raises OperationNotSupported where the datastore has no clusters."""
        raise OperationNotSupported(f"clusters are not supported by {self.config.datastore}")

    def _restore(self, job: RestoreJob) -> None:
        """Replace the fresh server's data by the backups' and start it on them."""
        with self._init_lock:
            self.server.stop()
            backups.restore(self.backups, job)
            self.write_config()
            self.server.start()
        self._after_restore()

    def _after_restore(self) -> None:
        """Make the restored server the agent's own again (its admin account came with the
        data of another instance); nothing where the agent needs no password."""

    def adopt(self) -> bool:
        if not self.prepared or not self.server.adopt():
            return False
        if self.fenced:
            # Left running by an earlier agent after the fence: a primary that lost its place.
            self.stop()
        return True

    def start(self) -> None:
        if not self.prepared:
            raise GuestError("the instance has not been prepared")
        if self.fenced:
            raise GuestError(
                "the server was fenced (another instance took its place as the primary); it "
                "starts again as a replica of the new primary"
            )
        self.write_config()
        self._stopped_on_purpose = False
        self.server.start()

    def recover(self) -> bool:
        # Under the lock that stop takes: a stop asked before is seen here, and one asked
        # while the server starts waits, then stops it.
        with self._init_lock:
            if self._stopped_on_purpose or not self.prepared or self.fenced:
                return False
            self._recovering = True
            try:
                self.write_config()
                self.server.start()
                if not self.server.ping():
                    # Still starting since an earlier attempt that timed out: give it the
                    # same time again rather than kill a server that may be replaying its log.
                    self.server.wait_ready()
            finally:
                self._recovering = False
        self.server_started()
        return True

    def stop(self) -> None:
        self._stopped_on_purpose = True
        # Wait for a warm-up or a recovery under way, which then starts nothing more.
        with self._init_lock:
            self.server.stop()

    def fence(self) -> int | None:
        engine = self._engine()
        with self._init_lock:
            # The marker first: an agent that dies half-way never starts this server again
            # as a primary.
            (self.config.conf_dir / FENCED_MARKER).write_text("fenced\n")
            self._stopped_on_purpose = True
            position = engine.fence()
        LOG.warning("the server is fenced: it takes no more writes (last position %s)", position)
        return position

    def promote(self) -> None:
        engine = self._engine()
        with self._init_lock:
            engine.promote()
            (self.config.conf_dir / REPLICA_MARKER).unlink(missing_ok=True)
        LOG.info("the server is now its group's primary")

    def detach(self) -> None:
        engine = self._engine()
        with self._init_lock:
            engine.detach()
            (self.config.conf_dir / REPLICA_MARKER).unlink(missing_ok=True)

    def unfence(self) -> None:
        self._engine()
        marker = self.config.conf_dir / FENCED_MARKER
        if not marker.exists():
            return
        with self._init_lock:
            marker.unlink()
            self._stopped_on_purpose = False
            if not self.server.running():
                self.write_config()
                self.server.start()
        self.server_started()
        LOG.warning("the fence was lifted: the server is the primary again")

    def follow(self, source: ReplicaSource) -> None:
        engine = self._engine()
        with self._init_lock:
            marker = self.config.conf_dir / FENCED_MARKER
            replica = self.config.conf_dir / REPLICA_MARKER
            if not marker.exists() and self.server.running() and engine.repoint(source):
                replica.write_text(source.instance_id + "\n")
                LOG.info("the replica streams from instance %s now", source.instance_id)
                return
            self._stopped_on_purpose = True
            self.server.adopt()
            self.server.stop()
            engine.rejoin(source)
            replica.write_text(source.instance_id + "\n")
            marker.unlink(missing_ok=True)
            self.write_config()
            self._stopped_on_purpose = False
            self.server.start()
        self.server_started()
        LOG.info("the server rejoined as a replica of instance %s", source.instance_id)

    def _engine(self) -> ReplicationEngine:
        if self.replication is None:
            raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")
        if not self.prepared:
            raise GuestError("the instance has not been prepared")
        return self.replication

    def status(self) -> GuestStatus:
        if not self.prepared:
            return GuestStatus.BUILDING if self.server.running() else GuestStatus.NEW
        if self._recovering or not self.server.running():
            return GuestStatus.SHUTDOWN if self._stopped_on_purpose else GuestStatus.CRASHED
        return GuestStatus.HEALTHY if self.server.ping() else GuestStatus.BLOCKED
