"""The guest agent's RPC endpoint and heartbeat.

The table :func:`guest_endpoints` builds is the whole remote surface of the agent; the control
plane calls nothing else, through ``cove.rpc.guest.GuestClient`` (and
``GuestReplicationClient`` for replication). :class:`GuestService` answers the lifecycle,
configuration, status, backup and replication methods, ``GuestAdminEndpoints``
(``cove.guestagent.admin_endpoints``) those on databases, users and root. Arguments and results
are typed (``cove.rpc.codec`` carries them as JSON); secrets arrive only in arguments and are
never logged. A server that exits by itself is started again by ``Recovery``
(``cove.guestagent.recovery``), which reports each step to the conductor.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cove.common.errors import CoveError, GuestError, OperationNotSupported
from cove.common.ids import utcnow
from cove.domain.backups import BackupJob, BackupProgress, RestoreJob
from cove.domain.guest import (
    SERVER_REPORT,
    ClusterHealth,
    ClusterMember,
    ConfigurationApplied,
    DatabaseVitals,
    GuestSettings,
    HeartbeatPayload,
    ServerOutcome,
    Value,
)
from cove.domain.guestlogs import LogState, LogTarget
from cove.domain.replication import ReplicaSource, ReplicationState
from cove.domain.specs import DatabaseSpec, UserSpec
from cove.domain.status import GuestStatus
from cove.guestagent.admin_endpoints import GuestAdminEndpoints
from cove.guestagent.backups import BackupJobs
from cove.guestagent.datastores.base import DatastoreManager, ReplicationEngine
from cove.guestagent.isolation import IsolationWatch
from cove.guestagent.lease import LeaseKeeper
from cove.guestagent.recovery import DEFAULT_POLICY, Recovery, RestartPolicy
from cove.rpc import RequestContext, RpcClient, codec
from cove.rpc.conductor import ConductorClient

LOG = logging.getLogger(__name__)

#: Seconds between two reads of the server's vital signs (``DatabaseVitals``).
VITALS_EVERY = 5.0


def guest_endpoints(
    service: GuestService, admin: GuestAdminEndpoints
) -> dict[str, Callable[..., Any]]:
    """The agent's RPC table; ``cove.rpc.guest.GuestClient`` and ``GuestReplicationClient``
    are its clients. It only binds methods, so instances made without ``__init__`` are
    enough to read it."""
    return codec.endpoints(
        {
            "prepare": service.prepare,
            "restart": service.restart,
            "set_cluster_peers": service.set_cluster_peers,
            "set_cluster_slots": service.set_cluster_slots,
            "follow_in_cluster": service.follow_in_cluster,
            "cluster_health": service.cluster_health,
            "apply_configuration": service.apply_configuration,
            "get_configuration": service.get_configuration,
            "min_ram_mb": service.min_ram_mb,
            "get_status": service.get_status,
            "start_backup": service.start_backup,
            "backup_progress": service.backup_progress,
            "cancel_backup": service.cancel_backup,
            "replication_source": service.replication_source,
            "detach_replica": service.detach_replica,
            "replication_state": service.replication_state,
            "fence_primary": service.fence_primary,
            "promote_replica": service.promote_replica,
            "follow_primary": service.follow_primary,
            "unfence_primary": service.unfence_primary,
            "set_synchronous": service.set_synchronous,
            "list_logs": service.list_logs,
            "show_log": service.show_log,
            "set_log": service.set_log,
            "publish_log": service.publish_log,
            "discard_log": service.discard_log,
            "list_databases": admin.list_databases,
            "create_databases": admin.create_databases,
            "delete_database": admin.delete_database,
            "list_users": admin.list_users,
            "get_user": admin.get_user,
            "create_users": admin.create_users,
            "delete_user": admin.delete_user,
            "update_user": admin.update_user,
            "change_passwords": admin.change_passwords,
            "list_access": admin.list_access,
            "grant_access": admin.grant_access,
            "revoke_access": admin.revoke_access,
            "enable_root": admin.enable_root,
            "disable_root": admin.disable_root,
            "is_root_enabled": admin.is_root_enabled,
        }
    )


class GuestService:
    def __init__(
        self,
        config: GuestSettings,
        manager: DatastoreManager,
        bus: RpcClient,
        restarts: RestartPolicy = DEFAULT_POLICY,
    ) -> None:
        self.config = config
        self.manager = manager
        self.admin_endpoints = GuestAdminEndpoints(manager)
        self.conductor = ConductorClient(bus)
        self._busy: GuestStatus | None = None
        self._stop = threading.Event()
        self._beat_now = threading.Event()
        self._op_lock = threading.Lock()
        self._source_lock = threading.Lock()
        # The settings revision last taken (apply_configuration); none yet at start, when the
        # agent has the settings the compute driver wrote for it.
        self._settings_revision = 0
        # The server's vital signs and when they were read (time.monotonic()).
        self._last_vitals: tuple[float, DatabaseVitals | None] = (-VITALS_EVERY, None)
        self.isolation = IsolationWatch(manager, self.report, self._op_lock)
        self.recovery = Recovery(manager, self._op_lock, self._server_report, restarts)
        self.lease = LeaseKeeper(manager, self.conductor, config.instance_id)
        self.backups = BackupJobs(manager.backups, config.conf_dir / "backups")
        manager.on_change = lambda _status: self._beat_now.set()
        manager.on_crash = self._server_crashed

    def endpoints(self) -> dict[str, Callable[..., Any]]:
        """The agent's RPC table (see :func:`guest_endpoints`)."""
        return guest_endpoints(self, self.admin_endpoints)

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
        # Stamped before it is filled: a report made meanwhile (a full volume, say) is newer
        # than what this heartbeat says, and the conductor keeps the report's word.
        sent = utcnow()
        payload = HeartbeatPayload(
            agent_pid=os.getpid(),
            isolation=self.isolation.look(),
            cluster=self.manager.cluster_health(),
            replica=self._replica(),
            vitals=self._vitals(),
        )
        try:
            self.conductor.heartbeat(
                RequestContext(), self.config.instance_id, self.status(), payload, sent
            )
        except CoveError as exc:
            LOG.warning("cannot reach the conductor (heartbeat): %s", exc.message)

    def _vitals(self) -> DatabaseVitals | None:
        """The server's vital signs, read at most every VITALS_EVERY seconds (a query each,
        which the instance pays for), the last ones told again in between."""
        read_at, vitals = self._last_vitals
        now = time.monotonic()
        if now - read_at >= VITALS_EVERY:
            try:
                vitals = self.manager.vitals()
            except Exception:  # the heartbeat goes on without them
                LOG.exception("cannot read the server's vital signs")
                vitals = None
            self._last_vitals = (now, vitals)
        return vitals

    def _replica(self) -> ReplicationState | None:
        """A prepared replica's place behind its source, for the heartbeat; None otherwise
        or when its server does not say (a hung server answers no later than its connection
        timeout)."""
        manager = self.manager
        if manager.replication is None or not manager.prepared or not manager.is_replica:
            return None
        try:
            return manager.replication.state()
        except CoveError as exc:
            LOG.debug("cannot read the replica's state: %s", exc.message)
            return None

    def report(self, operation: str, outcome: str, details: str = "") -> None:
        try:
            self.conductor.report(
                RequestContext(), self.config.instance_id, operation, outcome, details, utcnow()
            )
        except CoveError as exc:
            LOG.warning("cannot reach the conductor (report): %s", exc.message)

    def _server_report(self, outcome: ServerOutcome, details: str) -> None:
        self.report(SERVER_REPORT, outcome.value, details)
        self._beat_now.set()

    def _server_crashed(self, what: str) -> None:
        # Before prepare is done, and during a restart or prepare asked of the agent, a server
        # that exits is that work's failure, which it reports itself.
        if self.manager.prepared and self._busy is None:
            if self.lease.holds() and self.lease.auto_failover:
                # A group's primary is not started again in place: it is fenced, its lease
                # lapses and a replica takes its place within LEASE_TTL.
                self._server_report(ServerOutcome.CRASHED, what)
                self.lease.fence_after_crash(what)
                return
            self.recovery.server_exited(what)

    def run_heartbeats(self) -> None:
        """Send a heartbeat every interval, and at once when the server changes state."""
        try:
            self.conductor.declare()
        except CoveError as exc:
            LOG.warning("cannot declare the conductor topic yet: %s", exc.message)
        while not self._stop.is_set():
            self.heartbeat()
            self.manager.sync_users()
            self._beat_now.wait(self.config.heartbeat_interval)
            self._beat_now.clear()

    @property
    def stopping(self) -> threading.Event:
        """Set once the agent stops: the loops of its threads end."""
        return self._stop

    def stop(self) -> None:
        self.lease.stop()
        self.backups.stop_all("the guest agent is stopping")
        self.recovery.close()
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
        self,
        ctx: RequestContext,
        databases: list[DatabaseSpec],
        users: list[UserSpec],
        restore: RestoreJob | None = None,
        replica_of: ReplicaSource | None = None,
        cluster: ClusterMember | None = None,
    ) -> None:
        """Set the server up (from ``restore``'s backups when given), then create
        ``databases`` and ``users``; with ``replica_of``, make it a read-only replica of that
        source, with ``cluster`` a member of that cluster (then with no databases, users or
        restore). Raises GuestError when it failed (reported to the conductor too, so the
        outcome is recorded even when the caller is gone)."""
        try:
            self._while(
                GuestStatus.BUILDING,
                lambda: self.manager.prepare(databases, users, restore, replica_of, cluster),
            )
        except Exception as exc:
            message = exc.message if isinstance(exc, CoveError) else f"{type(exc).__name__}: {exc}"
            LOG.exception("prepare failed")
            self.report("prepare", "failure", message)
            raise GuestError(message) from None
        self.report("prepare", "success")

    def set_cluster_slots(self, ctx: RequestContext, first: int, last: int) -> None:
        """Serve the sharded cluster's hash slots ``first`` to ``last`` as a master."""
        if not self.manager.prepared:
            raise GuestError("the instance has not been prepared")
        with self._op_lock:
            self.manager.set_cluster_slots(first, last)

    def follow_in_cluster(self, ctx: RequestContext, master: str) -> None:
        """Replicate the sharded cluster's member at ``master``."""
        if not self.manager.prepared:
            raise GuestError("the instance has not been prepared")
        with self._op_lock:
            self.manager.follow_in_cluster(master)

    def cluster_health(self, ctx: RequestContext) -> ClusterHealth | None:
        """How the server sees its cluster (as the heartbeat says it)."""
        return self.manager.cluster_health()

    def set_cluster_peers(self, ctx: RequestContext, peers: list[str]) -> None:
        """Record the cluster's members' addresses for the server's next start."""
        if not self.manager.prepared:
            raise GuestError("the instance has not been prepared")
        with self._op_lock:
            self.manager.set_cluster_peers(peers)

    def restart(self, ctx: RequestContext) -> None:
        self._while(GuestStatus.RESTARTING, self.manager.restart)
        self.recovery.started_on_purpose()

    def apply_configuration(
        self,
        ctx: RequestContext,
        ram_mb: int,
        vcpus: int,
        volume_gb: int,
        overrides: dict[str, Value],
        revision: int = 0,
    ) -> ConfigurationApplied:
        """Take new flavor sizes, volume size and configuration overrides; answers whether
        the server must be restarted for all of them to be in effect. Settings of an older
        ``revision`` than the last taken are not taken: the API and the task manager both
        push, and the one that read the row first may arrive last."""
        new = dataclasses.replace(
            self.manager.config,
            ram_mb=ram_mb,
            vcpus=vcpus,
            volume_gb=volume_gb,
            overrides=dict(overrides),
        )
        with self._op_lock:
            if revision < self._settings_revision:
                LOG.info(
                    "settings of revision %d not taken: revision %d is newer",
                    revision,
                    self._settings_revision,
                )
                return ConfigurationApplied(restart_required=self.manager.restart_pending)
            try:
                needs_restart = self.manager.apply_configuration(new)
            finally:
                self.config = self.manager.config
                self._beat_now.set()
            self._settings_revision = revision
        return ConfigurationApplied(restart_required=needs_restart)

    def get_configuration(self, ctx: RequestContext) -> dict[str, str]:
        return self.manager.effective_configuration()

    def min_ram_mb(self, ctx: RequestContext) -> int:
        return self.manager.min_ram_mb()

    def get_status(self, ctx: RequestContext) -> GuestStatus:
        return self.status()

    # -- guest logs --------------------------------------------------------------------------

    def list_logs(self, ctx: RequestContext) -> list[LogState]:
        return self.manager.logs.states()

    def show_log(self, ctx: RequestContext, name: str) -> LogState:
        return self.manager.logs.show(name)

    def set_log(self, ctx: RequestContext, name: str, enabled: bool) -> LogState:
        """Turn a USER log on or off: it rewrites the server's files, so not while another
        operation (a restart, new settings) does."""
        with self._op_lock:
            return self.manager.logs.set_enabled(name, enabled)

    def publish_log(self, ctx: RequestContext, name: str, target: LogTarget) -> LogState:
        return self.manager.logs.publish(name, target)

    def discard_log(self, ctx: RequestContext, name: str, target: LogTarget) -> LogState:
        return self.manager.logs.discard(name, target)

    # -- backups -----------------------------------------------------------------------------

    def start_backup(self, ctx: RequestContext, job: BackupJob) -> BackupProgress:
        """Start ``job`` in the background (idempotent by backup id) and answer at once."""
        if not self.manager.prepared:
            raise GuestError("the instance has not been prepared")
        return self.backups.start(job)

    def backup_progress(self, ctx: RequestContext, backup_id: str) -> BackupProgress:
        return self.backups.progress(backup_id)

    def cancel_backup(self, ctx: RequestContext, backup_id: str) -> BackupProgress:
        """Stop the backup if it runs (its tool killed, what it stored discarded) and answer
        its outcome; a backup never started here is recorded FAILED, so it never starts."""
        return self.backups.cancel(backup_id)

    # -- replication -------------------------------------------------------------------------

    def _replication(self) -> ReplicationEngine:
        """Raises OperationNotSupported where the datastore has no replication, GuestError
        before the instance is prepared."""
        engine = self.manager.replication
        if engine is None:
            raise OperationNotSupported(f"replication is not supported by {self.config.datastore}")
        if not self.manager.prepared:
            raise GuestError("the instance has not been prepared")
        return engine

    def replication_source(self, ctx: RequestContext) -> ReplicaSource:
        """Where and as whom a new replica of this instance connects (idempotent: the same
        account and password every time). A server that keeps nothing for replicas yet is
        restarted first (once). Raises GuestError on a replica."""
        engine = self._replication()
        with self._source_lock:  # two new replicas: one restart, and no source() during it
            if engine.begin_source():
                self.restart(ctx)
            source = engine.source()
        LOG.info("answered the replication account for a replica of this instance")
        # A primary with a replica holds its group's lease from now on: ask at once.
        self.lease.wake()
        return source

    def detach_replica(self, ctx: RequestContext) -> None:
        """Make a replica a standalone read-write server for good; at once on a server that
        is not a replica."""
        self._replication()
        with self._op_lock:  # never while the server is being restarted or reconfigured
            self.manager.detach()
        self.lease.forget()
        self._beat_now.set()

    def replication_state(self, ctx: RequestContext) -> ReplicationState:
        return self._replication().state()

    def fence_primary(self, ctx: RequestContext) -> int | None:
        """Take no more writes, for good; the last position written."""
        self._replication()
        with self._op_lock:
            position = self.manager.fence()
        self._beat_now.set()
        return position

    def promote_replica(self, ctx: RequestContext) -> ReplicaSource:
        """Make this replica the primary of its group; where its replicas connect now."""
        engine = self._replication()
        with self._op_lock:
            self.manager.promote()
        self.lease.forget()
        self._beat_now.set()
        return engine.source()

    def set_synchronous(self, ctx: RequestContext, enabled: bool) -> None:
        """The group's synchronous mode, on or off, for this server (kept across restarts)."""
        engine = self._replication()
        with self._op_lock:
            engine.set_synchronous(enabled)
        LOG.info("synchronous replication is %s", "on" if enabled else "off")

    def unfence_primary(self, ctx: RequestContext) -> None:
        """Take writes again after a fence no other instance took advantage of."""
        self._replication()
        with self._op_lock:
            self.manager.unfence()
        self.lease.forget()
        self.lease.assume_held()
        self._beat_now.set()

    def follow_primary(self, ctx: RequestContext, source: ReplicaSource) -> None:
        """Make this server a running replica of ``source`` (re-pointed live, or rejoined)."""
        self._replication()
        with self._op_lock:
            self.manager.follow(source)
        self.lease.forget()
        self._beat_now.set()
