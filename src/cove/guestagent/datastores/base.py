"""The datastore manager contract: what the guest agent asks of a datastore.

A manager owns one database server beside the guest agent. It is a facade over small parts
(server process control, configuration rendering, database and user administration) and declares
its capabilities so the API can refuse unsupported work before it reaches the guest.

:class:`DatastoreManager` is the lifecycle and configuration part; every manager also exposes
its administration object as ``manager.admin``, which satisfies :class:`Admin` and which the
guest agent's RPC methods (``cove.guestagent.admin_endpoints``) call directly, after the policy
every datastore shares (the capability check, the log line, splitting an update that moves a
user to another host). A manager never wraps its admin object in methods of its own.

Rules every manager follows:

* ``prepare`` is idempotent: called again after it succeeded it does nothing; called after a
  crash half-way it starts over from a clean data directory. It may block for minutes. With
  ``replica_of`` (only where the manager has a ``replication`` engine) the server is made a
  copy of that source and started as a read-only replica streaming from it; the request then
  names no databases, users or restore (``GuestError`` otherwise).
* ``start``, ``stop`` and ``restart`` are idempotent and block until the server is up (or down).
  The server runs as a direct child of the agent whenever the agent started it, so a crash is
  seen at once; ``adopt`` takes over a server left running by a previous agent.
* A server that exits without being asked to is announced through ``on_change`` (CRASHED) and
  ``on_crash``; ``recover`` starts it again, unless a stop was asked meanwhile (a stop always
  wins over a recovery). The agent decides when to call it (``cove.guestagent.recovery``).
* ``status`` never raises and returns within a few seconds.
* ``apply_configuration`` takes new settings (flavor sizes, volume size, the configuration
  group's overrides laid over the flavor-derived defaults): it rewrites the server's files so
  the next start uses all of them and, while the server runs, sets live what the server can
  change live. What needs a restart leaves the instance "restart required" (remembered in a
  marker file, so a new agent still knows) until the server is next started by the agent.
* A manager never assumes it runs on the same host as the control plane.

Rules every admin object (:class:`Admin`) follows:

* Every method needs a running server. It raises ``DatabaseNotFound``, ``UserNotFound``,
  ``DatabaseAlreadyExists``, ``UserAlreadyExists`` or ``BadRequest`` for the user's mistakes,
  ``GuestError`` for the server's, and ``OperationNotSupported`` for what the datastore does
  not have (databases in Redis, hosts in PostgreSQL and Redis); the caller checks the
  manager's capabilities first, so that last one is only a safeguard.
* Users are named by name and host everywhere. A datastore whose users have no host ignores
  the host (PostgreSQL, which shows every user as ``%``) or refuses any host but ``%``
  (Redis, with ``BadRequest``).
* A request naming several items (``create_databases``, ``create_users``) is checked whole
  before anything changes, so a mistake in one item leaves the server as it was; when the
  server refuses one item half-way, what was already made is removed again (all or nothing).
* A user keeps its grants when renamed, given a new password or moved to another host.
* Passwords are never logged, never put on a command line and never sent to the server in
  clear text where the server can store a verifier instead.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cove.common.errors import GuestError, OperationNotSupported
from cove.domain.backups import RestoreJob, WalArchive, WalRestore
from cove.domain.capabilities import Capability
from cove.domain.guest import ClusterHealth, ClusterMember, DatabaseVitals, GuestSettings
from cove.domain.replication import ReplicaSource, ReplicationState
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.guestlogs import GuestLogs

LOG = logging.getLogger(__name__)


class Admin(Protocol):
    """Databases, users, access and root on the running server (see the module's rules)."""

    def list_databases(self) -> list[DatabaseSpec]:
        """The tenant's databases; the server's own stay hidden."""
        ...

    def create_databases(self, databases: Sequence[DatabaseSpec]) -> None:
        """Create all of ``databases`` or, when one cannot be made, none of them."""
        ...

    def delete_database(self, name: str) -> None:
        """Drop ``name``; no user keeps access to a database made later under that name."""
        ...

    def list_users(self) -> list[UserInfo]:
        """The tenant's users with their databases; the agent's and root stay hidden."""
        ...

    def get_user(self, name: str, host: str) -> UserInfo: ...

    def create_users(self, users: Sequence[UserSpec]) -> None:
        """Create all of ``users`` (with their grants) or, when one cannot be made, none."""
        ...

    def delete_user(self, name: str, host: str) -> None: ...

    def update_user(
        self, name: str, host: str, new_name: str | None, new_password: str | None
    ) -> None:
        """Rename and/or give a new password (``None``: unchanged)."""
        ...

    def change_host(self, name: str, host: str, new_host: str) -> None:
        """Move ``name``@``host`` to ``new_host``, grants and all; only where users have
        hosts (``Capability.USER_HOSTS``)."""
        ...

    def grant_access(self, name: str, host: str, databases: Sequence[str]) -> None: ...

    def revoke_access(self, name: str, host: str, database: str) -> None:
        """Revoke, and end the user's sessions that the grant let in."""
        ...

    def enable_root(self, password: str) -> str:
        """Enable the superuser login (with a new password) and return its user name."""
        ...

    def disable_root(self) -> None:
        """Disable the superuser login and end its sessions."""
        ...

    def is_root_enabled(self) -> bool: ...


class BackupSource(Protocol):
    """A backup being made: the engine's tool running, its output read as chunks."""

    #: What the engine records for the restore and for the next incremental; complete once
    #: ``chunks`` is exhausted.
    meta: dict[str, str]

    def chunks(self) -> Iterator[bytes]:
        """The tool's output; raises GuestError or CommandFailed at the end when the tool
        failed, so a cut-short stream is never taken for a whole one."""
        ...


@dataclass(frozen=True)
class RestoreSource:
    """One artifact of a chain to restore: its engine stream (already checked and opened)
    and what the engine recorded when it was made."""

    chunks: Iterable[bytes]
    meta: dict[str, str]


@runtime_checkable
class WalEngine(Protocol):
    """A backup engine that archives the server's write-ahead log continuously (PostgreSQL):
    its incrementals and point-in-time restores replay the archived log."""

    def archive_to(self, target: WalArchive) -> None:
        """Archive the WAL to ``target`` from now on (idempotent, kept across restarts)."""
        ...

    def restore_with_wal(
        self, pieces: Sequence[RestoreSource], wal_restore: WalRestore | None
    ) -> None:
        """``restore``, then the archived WAL ``wal_restore`` describes replayed on top."""
        ...


class BackupEngine(Protocol):
    """How a datastore's own tool makes backups and restores them (a manager's ``backups``).

    ``open_backup`` runs against the live server and must not stop it: the instance serves
    throughout. ``restore`` runs with the server stopped, before the instance is prepared, and
    leaves a data directory the server starts from with exactly the backed-up data, users
    and databases; on failure the data directory is left for ``prepare`` to start over.
    """

    #: Whether ``open_backup`` takes a parent's meta (incremental backups).
    incremental: bool

    def open_backup(
        self, parent_meta: dict[str, str] | None
    ) -> contextlib.AbstractContextManager[BackupSource]: ...

    def restore(self, pieces: Sequence[RestoreSource]) -> None: ...


#: The marker, in the configuration directory, of a fenced server (``DatastoreManager.fence``).
FENCED_MARKER = "fenced"
#: The marker of a server told to refuse tenants' writes while its volume is full.
WRITES_REFUSED_MARKER = "writes-refused"
#: The marker of a server made a replica (by ``prepare`` or ``follow``; ``promote`` and
#: ``detach`` take it away): the agent's cheap way to know without asking the server.
REPLICA_MARKER = "replica"


class ReplicationEngine(Protocol):
    """How a datastore's server streams its data to replicas (a manager's ``replication``).

    * ``begin_source`` runs on a primary before its first ``source``: it has the server keep,
      from its next start on and for good, what a replica copies and follows (MariaDB's binary
      log, which a standalone server does without); answers True when that start is still to
      come, and the caller restarts the server before asking ``source``. Idempotent and cheap
      (False from then on, and always where every server keeps it). Raises GuestError.
    * ``source`` runs on a primary: it makes sure the account replicas connect with exists
      (replication rights only) and is let in over the network, and answers where and as whom
      to connect. Idempotent: every call answers the same password, kept privately beside the
      server's configuration, and whatever it sets up outlives rewrites of the configuration.
      Raises GuestError on a server that is itself a replica or that does not answer.
    * ``make_replica`` runs with the server stopped, before the instance is prepared: it
      replaces the data directory by a copy of ``source``'s, set up so that the server, once
      started, is a read-only replica streaming from it (across restarts too). May block for
      as long as the copy takes. The password goes through files of mode 0600 only, never a
      command line, an environment or a log. Raises GuestError or CommandFailed when the copy
      fails; the data directory is then left for ``prepare`` to start over.
    * ``detach`` makes a replica a standalone read-write server that stays one across
      restarts; idempotent: on a server that is not a replica it answers at once. Needs the
      running server; may block until the server has left recovery. Raises GuestError.
    * ``state`` says the server's role and position; raises GuestError when it does not answer.
      Positions are comparable within one replication group: a replica whose position has
      reached a primary's has every write of it.

    Changing primaries (a switchover, a failover; the manager's ``fence``, ``promote`` and
    ``follow`` hold the shared policy around these hooks):

    * ``fence`` runs on a primary that must take no more writes, for good: once it returns, no
      client write is acknowledged any more, while what was written still reaches the
      replicas that stream from it (PostgreSQL: a clean shutdown, which sends every record to
      connected standbys first; a datastore that can refuse writes while it runs may keep
      serving reads and its replicas). Answers the last position it wrote (None when it
      cannot tell). Idempotent; needs no running server (a stopped one is fenced already).
    * ``promote`` makes a replica the read-write primary of its group, keeping what it needs
      to be a ``source`` (unlike ``detach``, which takes the copied account away). It first
      applies everything it received (a MariaDB replica's relay log: promoting before that
      loses committed transactions). Idempotent; needs the running server.
    * ``repoint`` makes a running replica stream from ``source`` from now on, without a
      restart; answers False (and changes nothing) when the server is not a running replica.
    * ``rejoin`` runs with the server stopped, on an old primary or a replica: it sets the data
      directory up as a replica of ``source``, keeping the data where it can (PostgreSQL
      ``pg_rewind`` when its history forked from the source's), and copying the source's data
      afresh where it cannot (MariaDB whenever its own transactions go past the fork point: it
      would otherwise replicate silently with different data). The server, once started, is
      a replica of ``source``. Raises GuestError or CommandFailed.
    * ``set_synchronous`` turns the group's synchronous mode on or off for this server, kept
      across restarts and roles: on a primary, a commit is acknowledged only once at least
      one replica holds it durably (PostgreSQL ``synchronous_standby_names = 'ANY 1 (*)'``,
      MariaDB semi-synchronous replication waiting AFTER_SYNC with no timeout fallback);
      Redis has no such acknowledgement, and gets the closest it has (a primary refuses
      writes while no replica is connected and at most 1 s behind). On a replica it sets
      what the replica needs to acknowledge, and what it applies once promoted. Idempotent;
      needs the running server. Raises GuestError.
    """

    def begin_source(self) -> bool: ...

    def source(self) -> ReplicaSource: ...

    def make_replica(self, source: ReplicaSource) -> None: ...

    def detach(self) -> None: ...

    def state(self) -> ReplicationState: ...

    def fence(self) -> int | None: ...

    def promote(self) -> None: ...

    def repoint(self, source: ReplicaSource) -> bool: ...

    def rejoin(self, source: ReplicaSource) -> None: ...

    def set_synchronous(self, enabled: bool) -> None: ...


class DatastoreManager(ABC):
    """The lifecycle and configuration of one server. Public methods hold the shared policy
    (logging, the prepared and restart-required markers); backends implement the protected
    hooks and set ``admin``."""

    capabilities: frozenset[Capability] = frozenset()
    #: Databases, users, access and root; set by each manager's ``__init__``.
    admin: Admin
    #: Backups and restores, where the datastore has them.
    backups: BackupEngine | None = None
    #: Streaming replication, where the datastore has it.
    replication: ReplicationEngine | None = None

    def __init__(self, config: GuestSettings) -> None:
        self.config = config
        #: Called with the new status whenever the server changes state on its own (e.g. exits).
        self.on_change: Callable[[GuestStatus], None] = lambda _status: None
        #: Called, after ``on_change``, with how the server ended ("PostgreSQL was killed by
        #: SIGKILL") when it exits without being asked to.
        self.on_crash: Callable[[str], None] = lambda _what: None
        #: The server's logs as Trove's log API shows them; turning one on calls apply_logs.
        self.logs = GuestLogs(
            config.datastore, config.instance_id, config.conf_dir, config.log_dir, self.apply_logs
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    @abstractmethod
    def prepared(self) -> bool:
        """Whether ``prepare`` completed for this instance."""

    def prepare(
        self,
        databases: Sequence[DatabaseSpec],
        users: Sequence[UserSpec],
        restore: RestoreJob | None = None,
        replica_of: ReplicaSource | None = None,
        cluster: ClusterMember | None = None,
    ) -> None:
        """Initialise (from ``restore``'s backups when given), configure and start the server,
        then create databases and users; with ``replica_of``, make the server a read-only
        replica of that source instead; with ``cluster``, make it a member of that cluster
        (beginning it, or joining its peers). Raises GuestError for a replica or a member
        asked with databases, users or a restore, OperationNotSupported where the datastore
        has no replication or no clusters."""
        if cluster is not None:
            if databases or users or restore is not None or replica_of is not None:
                raise GuestError(
                    "A cluster member is prepared without databases, users, a backup to "
                    "restore or a replica source."
                )
            if self.prepared:
                LOG.info("instance already prepared")
                self.start()
                return
            LOG.info(
                "preparing %s %s to %s cluster %s",
                self.config.datastore,
                self.config.datastore_version,
                "begin" if cluster.bootstrap else "join",
                cluster.cluster_id,
            )
            self._join_cluster(cluster)
            self.server_started()
            LOG.info("prepared")
            return
        if replica_of is not None:
            if databases or users or restore is not None:
                raise GuestError(
                    "A replica is prepared without databases, users or a backup to restore: "
                    "it gets those of its source."
                )
            if self.replication is None:
                raise OperationNotSupported(
                    f"replication is not supported by {self.config.datastore}"
                )
        if self.prepared:
            LOG.info("instance already prepared")
            self.start()
            return
        LOG.info(
            "preparing %s %s%s",
            self.config.datastore,
            self.config.datastore_version,
            f" as a replica of instance {replica_of.instance_id}" if replica_of else "",
        )
        self._prepare(databases, users, restore, replica_of)
        self.server_started()
        LOG.info("prepared")

    @abstractmethod
    def _prepare(
        self,
        databases: Sequence[DatabaseSpec],
        users: Sequence[UserSpec],
        restore: RestoreJob | None,
        replica_of: ReplicaSource | None,
    ) -> None: ...

    def _join_cluster(self, member: ClusterMember) -> None:
        """Make the server a member of ``member``'s cluster, running, and mark the instance
        prepared. Raises OperationNotSupported where the datastore has no clusters."""
        raise OperationNotSupported(f"clusters are not supported by {self.config.datastore}")

    def set_cluster_peers(self, peers: list[str]) -> None:
        """Record the cluster's members' addresses for the server's next start (a running
        member learns its peers from the cluster itself). Raises GuestError when the server
        is no cluster member, OperationNotSupported where the datastore has no clusters."""
        raise OperationNotSupported(f"clusters are not supported by {self.config.datastore}")

    def set_cluster_slots(self, first: int, last: int) -> None:
        """Serve the hash slots ``first`` to ``last`` of a sharded cluster as a master;
        idempotent. Raises GuestError, OperationNotSupported where the datastore does not
        shard."""
        raise OperationNotSupported(f"sharding is not supported by {self.config.datastore}")

    def follow_in_cluster(self, master: str) -> None:
        """Replicate the sharded cluster's member at ``master`` (on this server's port);
        idempotent. Raises GuestError, OperationNotSupported where the datastore does not
        shard."""
        raise OperationNotSupported(f"sharding is not supported by {self.config.datastore}")

    def cluster_health(self) -> ClusterHealth | None:
        """How the server sees its cluster, for the heartbeat; None when it is no cluster
        member or does not answer. Cheap (a few status reads); never raises."""
        return None

    def apply_logs(self, enabled: frozenset[str]) -> None:
        """Make the server write the USER logs ``enabled`` (``cove.domain.guestlogs``; the
        agent's record says so already): rewrite its files for the next start and set live
        what it can. The default serves datastores that have none."""
        return None

    def vitals(self) -> DatabaseVitals | None:
        """The server's vital signs, for the heartbeat; None when it does not answer. One
        short query or command over the agent's own connection (a few seconds at most when
        the server hangs); never raises."""
        return None

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
    def recover(self) -> bool:
        """Start the server again after it exited on its own and block until it answers; True
        once it does. False, starting nothing, when the instance is not prepared or a stop
        was asked since. Raises GuestError (or another CoveError) when it does not start."""

    @abstractmethod
    def stop(self) -> None: ...

    def restart(self) -> None:
        LOG.info("restarting the database server")
        self.stop()
        self.start()
        self.server_started()

    @abstractmethod
    def status(self) -> GuestStatus: ...

    def sync_users(self) -> None:
        """The agent's hook at every heartbeat, for a datastore whose replicas must copy
        something from their source that replication does not carry (Redis: its users).
        Cheap, never raises; nothing by default."""
        return

    # -- changing primaries ------------------------------------------------------------------

    @property
    def writes_refused(self) -> bool:
        """Whether the server was told to refuse tenants' writes (its volume is full)."""
        return (self.config.conf_dir / WRITES_REFUSED_MARKER).is_file()

    def refuse_writes(self, refuse: bool) -> None:
        """Have the server refuse tenants' writes (``refuse``) while the volume is full, or
        take them again; the marker, written once it is in effect, keeps it across restarts
        (so a call that failed is made again). Raises GuestError or OSError when the server
        or its files do not take it."""
        self._refuse_writes(refuse)
        marker = self.config.conf_dir / WRITES_REFUSED_MARKER
        if refuse:
            marker.write_text("the volume is full\n")
        else:
            marker.unlink(missing_ok=True)
        LOG.warning("the server %s tenants' writes", "refuses" if refuse else "takes again")

    def _refuse_writes(self, refuse: bool) -> None:
        """Bring ``refuse`` into effect. The base does nothing: a server that refuses writes
        by itself on a full disk, and takes them once there is room (Redis), needs nothing
        more."""
        return None

    @property
    def fenced(self) -> bool:
        """Whether this server was fenced (``fence``) and has not become a replica since: it
        is never started as a primary again, by this agent or a later one."""
        return (self.config.conf_dir / FENCED_MARKER).is_file()

    @property
    def is_replica(self) -> bool:
        """Whether the server is (or starts as) a replica of another instance's."""
        return (self.config.conf_dir / REPLICA_MARKER).is_file()

    def detach(self) -> None:
        """Make this replica a standalone read-write server for good. Idempotent."""
        raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")

    def fence(self) -> int | None:
        """Stop taking writes for good (see ``ReplicationEngine.fence``); answers the last
        position written. Idempotent."""
        raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")

    def promote(self) -> None:
        """Make this replica its group's read-write primary. Idempotent."""
        raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")

    def unfence(self) -> None:
        """Undo ``fence`` when no other instance took this one's place (a switchover that
        could not promote): start the server as the primary again. Idempotent."""
        raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")

    def follow(self, source: ReplicaSource) -> None:
        """Make this server (a replica, a fenced or a stopped old primary) a running replica
        of ``source``. Idempotent."""
        raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")

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
