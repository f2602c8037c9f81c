"""The typed clients of a guest agent (topic ``guestagent.<instance id>``).

One method per RPC of the guest agent's table (``cove.guestagent.service.guest_endpoints``),
in two classes on the same topic: :class:`GuestClient` (lifecycle, configuration, backups,
databases, users, root) and :class:`GuestReplicationClient` (replication). Every one is a
call. Reads answer within the client's timeout; ``prepare``, a restart, new settings and a
promotion may take longer and are given their own.
"""

from __future__ import annotations

from typing import Any

from cove.common.errors import GuestError, InvalidArguments
from cove.domain.backups import BackupJob, BackupProgress, RestoreJob
from cove.domain.guest import (
    ClusterHealth,
    ClusterMember,
    ConfigurationApplied,
    PasswordChange,
    RootEnabled,
    Value,
)
from cove.domain.guestlogs import LogState, LogTarget
from cove.domain.replication import ReplicaSource, ReplicationState
from cove.domain.specs import DatabaseSpec, UserInfo, UserSpec
from cove.domain.status import GuestStatus
from cove.rpc import topics
from cove.rpc.client import RpcClient
from cove.rpc.envelope import RequestContext
from cove.rpc.typed import ServiceClient

#: Seconds one ``prepare`` call waits. Short on purpose: a request lost with the bus is asked
#: again soon, and a prepare still running makes the next call wait for it (the task manager
#: asks again until the build's deadline).
PREPARE_TIMEOUT = 20.0
#: A member reads its view of its cluster in at most 2 s.
HEALTH_TIMEOUT = 10.0
#: Seconds a guest has to stop and start its server.
RESTART_TIMEOUT = 300.0
#: Seconds a guest has to rewrite its files and set live what can be set live.
APPLY_TIMEOUT = 120.0
#: Seconds a guest has to stop a backup: it waits up to 10 s for the backup to end.
CANCEL_TIMEOUT = 20.0
#: Seconds a guest has to promote its replica: it waits up to 240 s for the server to leave
#: recovery (replaying what it received first), and for a restart or reconfiguration under way.
DETACH_TIMEOUT = 300.0
#: Seconds a guest has to make its server a replica of a new primary: a rewind, or a fresh
#: copy of the primary's data when the old data cannot be kept.
FOLLOW_TIMEOUT = 6 * 3600.0
#: Seconds a guest has to publish a log (at most ``guestlogs.PUBLISH_BYTES`` of it) or delete
#: what was published.
PUBLISH_TIMEOUT = 120.0


class GuestClient(ServiceClient):
    answer_error = GuestError

    def __init__(
        self,
        bus: RpcClient,
        instance_id: str,
        timeout: float = 30.0,
        apply_timeout: float = APPLY_TIMEOUT,
    ) -> None:
        super().__init__(bus, topics.guest(instance_id), timeout)
        self.instance_id = instance_id
        #: How long ``apply_configuration`` waits: the API, answering within its request,
        #: waits less than the task manager.
        self.apply_timeout = apply_timeout
        self.peer = f"The guest agent of instance {instance_id}"

    def declare(self) -> None:
        """Declare the guest's queue before its agent starts, so early casts are kept.
        Idempotent. Raises ServiceUnavailable."""
        self.bus.declare_topic(self.topic)

    def forget(self) -> None:
        """Delete the guest's queue and what is still in it. Idempotent."""
        self.bus.delete_topic(self.topic)

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
        """Answers once the server runs with what was asked for, restored from ``restore``'s
        backups first when given (the guest also reports it to the conductor). With
        ``replica_of`` (``GuestReplicationClient.replication_source`` of the source), the
        server is a copy of the source's, running as a read-only replica streaming from it;
        with ``cluster``, a member of that cluster, beginning it or holding a copy of a
        peer's data; ``databases``, ``users`` and ``restore`` must then be empty (GuestError
        otherwise). Idempotent: a prepared instance only has its server started, and a
        prepare asked again while one runs waits for it."""
        self._call(
            ctx,
            "prepare",
            type(None),
            PREPARE_TIMEOUT,
            databases=databases,
            users=users,
            restore=restore,
            replica_of=replica_of,
            cluster=cluster,
        )

    def set_cluster_slots(self, ctx: RequestContext, first: int, last: int) -> None:
        """Answers once the sharded cluster's member serves the hash slots ``first`` to
        ``last`` (inclusive) as a master; idempotent."""
        self._call(ctx, "set_cluster_slots", type(None), APPLY_TIMEOUT, first=first, last=last)

    def follow_in_cluster(self, ctx: RequestContext, master: str) -> None:
        """Answers once the sharded cluster's member replicates the member at ``master`` (its
        address); idempotent."""
        self._call(ctx, "follow_in_cluster", type(None), APPLY_TIMEOUT, master=master)

    def cluster_health(self, ctx: RequestContext) -> ClusterHealth | None:
        """How the member's server sees its cluster; None when it is no member or does not
        answer."""
        return self._call(ctx, "cluster_health", ClusterHealth | None, HEALTH_TIMEOUT)  # type: ignore[arg-type]

    def set_cluster_peers(self, ctx: RequestContext, peers: list[str]) -> None:
        """Answers once the member recorded ``peers`` (every member's address) for its
        server's next start; GuestError when it is no cluster member."""
        self._call(ctx, "set_cluster_peers", type(None), APPLY_TIMEOUT, peers=peers)

    def restart(self, ctx: RequestContext) -> None:
        self._call(ctx, "restart", type(None), RESTART_TIMEOUT)

    def apply_configuration(
        self,
        ctx: RequestContext,
        ram_mb: int,
        vcpus: int,
        volume_gb: int,
        overrides: dict[str, Value],
        revision: int = 0,
    ) -> ConfigurationApplied:
        """``revision`` is the instance row's ``settings_revision`` the values were read at:
        a guest that took a later revision keeps it and answers as if it took these. An agent
        started by an older Cove, which knows no revision, is asked without one."""
        args: dict[str, Any] = {
            "ram_mb": ram_mb,
            "vcpus": vcpus,
            "volume_gb": volume_gb,
            "overrides": overrides,
        }
        try:
            return self._call(
                ctx,
                "apply_configuration",
                ConfigurationApplied,
                self.apply_timeout,
                **args,
                revision=revision,
            )
        except InvalidArguments as exc:
            if "revision" not in exc.message:
                raise
            return self._call(
                ctx, "apply_configuration", ConfigurationApplied, self.apply_timeout, **args
            )

    def get_configuration(self, ctx: RequestContext) -> dict[str, str]:
        return self._call(ctx, "get_configuration", dict[str, str])

    def min_ram_mb(self, ctx: RequestContext) -> int:
        return self._call(ctx, "min_ram_mb", int)

    def get_status(self, ctx: RequestContext) -> GuestStatus:
        return self._call(ctx, "get_status", GuestStatus)

    # -- backups -----------------------------------------------------------------------------

    def start_backup(self, ctx: RequestContext, job: BackupJob) -> BackupProgress:
        """Start the backup in the background and answer at once; idempotent by backup id
        (a backup that ran or runs answers its progress)."""
        return self._call(ctx, "start_backup", BackupProgress, job=job)

    def backup_progress(self, ctx: RequestContext, backup_id: str) -> BackupProgress:
        return self._call(ctx, "backup_progress", BackupProgress, backup_id=backup_id)

    def cancel_backup(self, ctx: RequestContext, backup_id: str) -> BackupProgress:
        """Stop the backup (its tool killed, what it stored discarded) and answer its outcome,
        or its progress when it has not ended after a few seconds. Idempotent; a backup the
        guest never started is recorded FAILED, so a ``start_backup`` arriving late never
        runs it."""
        return self._call(ctx, "cancel_backup", BackupProgress, CANCEL_TIMEOUT, backup_id=backup_id)

    # -- guest logs --------------------------------------------------------------------------

    def list_logs(self, ctx: RequestContext) -> list[LogState]:
        return self._call(ctx, "list_logs", list[LogState])

    def show_log(self, ctx: RequestContext, name: str) -> LogState:
        return self._call(ctx, "show_log", LogState, name=name)

    def set_log(self, ctx: RequestContext, name: str, enabled: bool) -> LogState:
        return self._call(
            ctx, "set_log", LogState, name=name, enabled=enabled, timeout=self.apply_timeout
        )

    def publish_log(self, ctx: RequestContext, name: str, target: LogTarget) -> LogState:
        return self._call(
            ctx, "publish_log", LogState, name=name, target=target, timeout=PUBLISH_TIMEOUT
        )

    def discard_log(self, ctx: RequestContext, name: str, target: LogTarget) -> LogState:
        return self._call(
            ctx, "discard_log", LogState, name=name, target=target, timeout=PUBLISH_TIMEOUT
        )

    # -- databases ---------------------------------------------------------------------------

    def list_databases(self, ctx: RequestContext) -> list[DatabaseSpec]:
        return self._call(ctx, "list_databases", list[DatabaseSpec])

    def create_databases(self, ctx: RequestContext, databases: list[DatabaseSpec]) -> None:
        self._call(ctx, "create_databases", type(None), databases=databases)

    def delete_database(self, ctx: RequestContext, name: str) -> None:
        self._call(ctx, "delete_database", type(None), name=name)

    # -- users -------------------------------------------------------------------------------

    def list_users(self, ctx: RequestContext) -> list[UserInfo]:
        return self._call(ctx, "list_users", list[UserInfo])

    def get_user(self, ctx: RequestContext, name: str, host: str) -> UserInfo:
        return self._call(ctx, "get_user", UserInfo, name=name, host=host)

    def create_users(self, ctx: RequestContext, users: list[UserSpec]) -> None:
        self._call(ctx, "create_users", type(None), users=users)

    def delete_user(self, ctx: RequestContext, name: str, host: str) -> None:
        self._call(ctx, "delete_user", type(None), name=name, host=host)

    def update_user(
        self,
        ctx: RequestContext,
        name: str,
        host: str,
        new_name: str | None = None,
        new_password: str | None = None,
        new_host: str | None = None,
    ) -> None:
        self._call(
            ctx,
            "update_user",
            type(None),
            name=name,
            host=host,
            new_name=new_name,
            new_password=new_password,
            new_host=new_host,
        )

    def change_passwords(self, ctx: RequestContext, users: list[PasswordChange]) -> None:
        self._call(ctx, "change_passwords", type(None), users=users)

    def list_access(self, ctx: RequestContext, name: str, host: str) -> list[str]:
        return self._call(ctx, "list_access", list[str], name=name, host=host)

    def grant_access(self, ctx: RequestContext, name: str, host: str, databases: list[str]) -> None:
        self._call(ctx, "grant_access", type(None), name=name, host=host, databases=databases)

    def revoke_access(self, ctx: RequestContext, name: str, host: str, database: str) -> None:
        self._call(ctx, "revoke_access", type(None), name=name, host=host, database=database)

    # -- root --------------------------------------------------------------------------------

    def enable_root(self, ctx: RequestContext, password: str) -> RootEnabled:
        return self._call(ctx, "enable_root", RootEnabled, password=password)

    def disable_root(self, ctx: RequestContext) -> None:
        self._call(ctx, "disable_root", type(None))

    def is_root_enabled(self, ctx: RequestContext) -> bool:
        return self._call(ctx, "is_root_enabled", bool)


class GuestReplicationClient(ServiceClient):
    """The replication RPCs of a guest agent, on the same topic as :class:`GuestClient`."""

    answer_error = GuestError

    def __init__(self, bus: RpcClient, instance_id: str, timeout: float = 30.0) -> None:
        super().__init__(bus, topics.guest(instance_id), timeout)
        self.instance_id = instance_id
        self.peer = f"The guest agent of instance {instance_id}"

    def replication_source(self, ctx: RequestContext) -> ReplicaSource:
        """Where and as whom a replica of this (primary) instance connects, to hand to the
        replica's ``prepare``. The account replicates only; the answer holds its password:
        never log or show it. Idempotent: the same password every time. Raises GuestError on
        an instance that is itself a replica."""
        return self._call(ctx, "replication_source", ReplicaSource)

    def detach_replica(self, ctx: RequestContext) -> None:
        """Promote the replica to a standalone read-write server, which stays one across
        restarts. Idempotent: an instance that is not a replica answers at once."""
        self._call(ctx, "detach_replica", type(None), DETACH_TIMEOUT)

    def replication_state(self, ctx: RequestContext) -> ReplicationState:
        """``replica`` (with the replayed position and whether it streams now) or
        ``primary`` (with the written position) for any read-write server: the control plane
        knows which of those are standalone."""
        return self._call(ctx, "replication_state", ReplicationState)

    def fence_primary(self, ctx: RequestContext) -> int | None:
        """Make the primary take no more writes, for good (it never starts as a primary again
        until ``follow_primary``); answers the last position it wrote, which a replica must
        reach before it is promoted without loss. Idempotent."""
        return self._call(ctx, "fence_primary", int | None, DETACH_TIMEOUT)  # type: ignore[arg-type]

    def promote_replica(self, ctx: RequestContext) -> ReplicaSource:
        """Make the replica its group's read-write primary (after applying all it received);
        answers where the group's other members now replicate from. Idempotent."""
        return self._call(ctx, "promote_replica", ReplicaSource, DETACH_TIMEOUT)

    def set_synchronous(self, ctx: RequestContext, enabled: bool) -> None:
        """Turn the group's synchronous mode on or off on this member (a primary then
        acknowledges a commit only once a replica holds it). Idempotent; kept across
        restarts."""
        self._call(ctx, "set_synchronous", type(None), APPLY_TIMEOUT, enabled=enabled)

    def unfence_primary(self, ctx: RequestContext) -> None:
        """Start a fenced primary again as the primary: only when no other instance was
        promoted in its place (a switchover that could not finish). Idempotent."""
        self._call(ctx, "unfence_primary", type(None), RESTART_TIMEOUT)

    def follow_primary(self, ctx: RequestContext, source: ReplicaSource) -> None:
        """Make the server a running replica of ``source``: a replica is re-pointed live; an
        old primary is rewound, or copied afresh when its data went past the fork. Idempotent."""
        self._call(ctx, "follow_primary", type(None), FOLLOW_TIMEOUT, source=source)
