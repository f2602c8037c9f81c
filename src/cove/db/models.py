"""Control database tables.

The control database is written by the API (requests), the task manager (workflows) and the
conductor (guest-reported state). The guest agent never touches it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        # MySQL and MariaDB drop fractions of a second unless asked; revocation compares
        # token times to the microsecond.
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Datastore(Base):
    __tablename__ = "datastores"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    default_version_id: Mapped[str | None] = mapped_column(String(36), nullable=True)

    versions: Mapped[list[DatastoreVersion]] = relationship(
        back_populates="datastore", order_by="DatastoreVersion.name"
    )


class DatastoreVersion(Base):
    __tablename__ = "datastore_versions"
    __table_args__ = (UniqueConstraint("datastore_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    datastore_id: Mapped[str] = mapped_column(ForeignKey("datastores.id"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    manager: Mapped[str] = mapped_column(String(64))
    bin_dir: Mapped[str] = mapped_column(String(1024))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The exact version (``version``) the parameter catalogue was read from; None until a
    #: read succeeds. Registration reads the catalogue again only when the binaries change.
    parameters_version: Mapped[str | None] = mapped_column(String(64), nullable=True)

    datastore: Mapped[Datastore] = relationship(back_populates="versions")


class DatastoreVersionParameter(Base):
    """One entry of a datastore version's catalogue of configurable parameters, read from the
    server itself when the version is registered."""

    __tablename__ = "datastore_version_parameters"
    __table_args__ = (UniqueConstraint("datastore_version_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    # JSON numbers as text: integer limits (up to 2**63) do not survive a float column.
    min: Mapped[str | None] = mapped_column(String(64), nullable=True)
    max: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: A JSON list of the accepted values of an enumerated setting.
    allowed: Mapped[str | None] = mapped_column(Text, nullable=True)
    restart_required: Mapped[bool] = mapped_column(Boolean, default=False)


class Configuration(Base):
    """A project's configuration group: parameter values for instances of one version."""

    __tablename__ = "configurations"
    __table_args__ = (Index("ix_configurations_project", "project_id", "deleted", "created"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    #: The values as a JSON object, validated against the version's catalogue.
    values: Mapped[str] = mapped_column(Text, default="{}")
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    datastore_version: Mapped[DatastoreVersion] = relationship()


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ram: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer, default=0)
    ephemeral: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Instance(Base):
    __tablename__ = "instances"
    # Lists page a project's live (or deleted) instances newest first, ties by id, both
    # descending: one index range scanned backwards.
    __table_args__ = (Index("ix_instances_project_page", "project_id", "deleted", "created", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    flavor_id: Mapped[str] = mapped_column(ForeignKey("flavors.id"))
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    volume_size: Mapped[int] = mapped_column(Integer)
    compute_driver: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    task_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    compute_state: Mapped[str] = mapped_column(String(32))
    agent_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"), nullable=True)
    port: Mapped[int] = mapped_column(Integer)
    fault_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    fault_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The task manager working on ``task`` and until when its claim holds; an expired claim
    # means it died, and another takes the task over (cove.taskmanager.leases).
    task_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the task needs to be resumed that the row does not hold (the passwords of a
    # create), sealed with the deployment's task key: never in clear text.
    task_args: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The row's settings (flavor, volume, configuration) changed and no push of the task
    # manager has given them to the place and the guest since: the monitor pushes them again
    # (cove.taskmanager.configure.push_pending).
    settings_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # Counts the changes of those settings: a push carries the count it read, and a guest
    # that took a later one refuses it, so pushes overtaking each other cannot undo a change.
    settings_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    configuration_id: Mapped[str | None] = mapped_column(
        ForeignKey("configurations.id"), nullable=True, index=True
    )
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The instance this one is a read-only replica of (None: not a replica).
    replica_of_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    #: Which replica is promoted when the most advanced ones tie (a Cove extension: the
    #: heaviest first).
    replication_weight: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    #: A replica that has yet to follow its replica source (an old primary, or one whose
    #: follow failed): the coordinator asks it again once its agent reports after this time.
    rejoin_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The cluster this instance is a member of (None: not a member), and its number there
    #: (from 0, in the order the members were asked for: the first bootstraps the cluster).
    cluster_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    cluster_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Who may connect (cove.domain.access): published on the host's public address, and
    #: the networks let in (a JSON list; None: every address).
    is_public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    allowed_cidrs: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The port it is published on, once the task manager gave it one (while ``is_public``).
    public_port: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    flavor: Mapped[Flavor] = relationship()
    configuration: Mapped[Configuration | None] = relationship(viewonly=True)
    datastore_version: Mapped[DatastoreVersion] = relationship()
    guest: Mapped[GuestState | None] = relationship(uselist=False, viewonly=True)
    network: Mapped[Network | None] = relationship(viewonly=True)


class Cluster(Base):
    """A cluster: its members are the instances whose ``cluster_id`` names it ("Clusters" in
    docs/architecture.md)."""

    __tablename__ = "clusters"
    __table_args__ = (Index("ix_clusters_project_page", "project_id", "deleted", "created", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    #: The task last asked of the cluster (a ``ClusterTask`` name); what the cluster shows is
    #: computed from it and its members' tasks (cove.domain.clusters.cluster_task).
    task: Mapped[str] = mapped_column(String(32))
    task_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    locality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Trove's ``extended_properties``, as the JSON object the request gave.
    extended_properties: Mapped[str | None] = mapped_column(Text, nullable=True)
    configuration_id: Mapped[str | None] = mapped_column(
        ForeignKey("configurations.id"), nullable=True
    )
    #: The cluster's load-balanced endpoint (on the datastore's port), allocated from its
    #: members' network by the task manager that first serves it.
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: What the members of a sharded cluster share (a ``ClusterSecret``), sealed with the
    #: deployment's task key.
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    datastore_version: Mapped[DatastoreVersion] = relationship()


class ReplicationGroup(Base):
    """A primary and its replicas (the instances whose ``replica_of_id`` names it).

    Every change of primary increments ``epoch`` in the transaction that names the new one;
    the primary's guest agent renews ``lease_until`` through the conductor by a conditional
    update on ``primary_id`` and ``epoch``, so an old primary's renewals are refused once
    another is named ("Replication and failover" in docs/architecture.md).
    """

    __tablename__ = "replication_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    primary_id: Mapped[str] = mapped_column(String(36), unique=True)
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    #: Until when the primary's agent holds the group's lease (None: no lease yet).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The primary's written position at its last renewal (the datastore's unit): what a
    #: failover compares the replicas with, and counts the loss of asynchronous mode by.
    primary_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    synchronous: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_failover: Mapped[bool] = mapped_column(Boolean, default=True)
    #: The most a replica may be behind the primary's last known position to be promoted.
    max_lag_bytes: Mapped[int] = mapped_column(BigInteger)
    #: The group's stable endpoints (on the datastore's port): the read-write one always
    #: reaches the primary, the read-only one balances over the replicas. Allocated from the
    #: primary's network by the task manager that first serves them.
    rw_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ro_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)


class Failover(Base):
    """One change of a group's primary: a switchover (``promote_to_replica_source``), an
    eject (``eject_replica_source``) or an automatic failover."""

    __tablename__ = "failovers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    #: The group's epoch once the new primary was named.
    epoch: Mapped[int] = mapped_column(Integer)
    old_primary_id: Mapped[str] = mapped_column(String(36), index=True)
    new_primary_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: Positions in the datastore's unit: the old primary's last known and the promoted
    #: replica's; ``lost_bytes`` is how far apart they were (asynchronous mode's loss).
    old_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    new_position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lost_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: running, promoted (the new primary takes writes), done (the old one rejoined), failed.
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rejoined_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Backup(Base):
    """A backup of an instance: one artifact in a store, sealed with a deployment key.

    The row outlives its instance (a restore needs none). Its task lease works as an
    instance's does: the task manager running the backup holds it, and another takes over
    when it lapses.
    """

    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_project_page", "project_id", "deleted", "updated", "id"),
        Index("ix_backups_instance", "instance_id", "deleted"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    instance_id: Mapped[str] = mapped_column(String(36))
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    parent_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32))
    #: The store's kind and where in it (``StoreSpec`` without credentials, as JSON), and the
    #: artifact's key in it.
    store: Mapped[str] = mapped_column(Text)
    artifact: Mapped[str] = mapped_column(String(1024))
    #: Bytes stored (sealed and compressed).
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str] = mapped_column(String(64))
    #: What the engine recorded (``BackupResult.meta``) as JSON.
    meta: Mapped[str] = mapped_column(Text, default="{}")
    fault_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    task_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    datastore_version: Mapped[DatastoreVersion] = relationship()


class AddressAllocation(Base):
    """One row per address in use; the unique key is what makes allocation race-free."""

    __tablename__ = "address_allocations"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36), unique=True)


class GuestState(Base):
    """The guest agent's last heartbeat for an instance, written by the conductor."""

    __tablename__ = "guest_states"

    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstanceEvent(Base):
    """A notification event about an instance (``cove.domain.events``), kept for its recent
    events' list; the oldest go once an instance has more than ``db.events.KEPT``."""

    __tablename__ = "instance_events"
    __table_args__ = (Index("ix_instance_events_instance", "instance_id", "created"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The whole message (``Event.message``), JSON.
    message: Mapped[str] = mapped_column(Text)


class ConductorSeen(Base):
    """The newest message time seen per instance and method, so older ones are discarded."""

    __tablename__ = "conductor_seen"

    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Network(Base):
    """A network instances attach to; for the local driver, a named loopback address pool."""

    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    cidr: Mapped[str] = mapped_column(String(64), unique=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


# -- identity (the embedded Keystone-compatible service) ---------------------------------------


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    default_project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id"), primary_key=True)


class TokenRevocation(Base):
    """A revocation event: one token (by audit id), or every token of a user or a project
    issued before a time. Kept until the newest token it can match has expired."""

    __tablename__ = "token_revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    issued_before: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- quotas ------------------------------------------------------------------------------------


class Quota(Base):
    """An operator's override of a project's limit for one resource (-1: unlimited)."""

    __tablename__ = "quotas"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class ProjectLock(Base):
    """One row per project, updated first in every transaction that checks a quota, so that
    concurrent creates in one project take turns (a row lock on PostgreSQL/MariaDB, the write
    lock on SQLite) and the usage they count is current."""

    __tablename__ = "project_locks"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[int] = mapped_column(Integer, default=0)


# -- backup schedules --------------------------------------------------------------------------


class BackupSchedule(Base):
    """A project's schedule of backups of one instance (a Cove extension): a cron expression,
    whether runs after the first full one are incremental, and a retention.

    The task managers run it when ``next_run`` has come: the one whose conditional update moves
    ``next_run`` on takes the run (cove.taskmanager.scheduler). Deleted with its instance; its
    backups stay.
    """

    __tablename__ = "backup_schedules"
    __table_args__ = (
        Index("ix_backup_schedules_project", "project_id", "instance_id"),
        Index("ix_backup_schedules_due", "enabled", "next_run"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Five fields, UTC, normalised to single spaces (cove.domain.schedules.check_cron).
    cron: Mapped[str] = mapped_column(String(255))
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    keep_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: When the next run is due; a run refused (instance not ready, a backup running) leaves
    #: it as it is, so the run is tried again at the next pass.
    next_run: Mapped[datetime] = mapped_column(UTCDateTime)
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_backup_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: Why the due run could not start; cleared by the next run that does.
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The backup whose completion retention was last applied for (taken by a conditional
    #: update, so it is applied once per backup).
    pruned_for: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)


class BackupScheduleRun(Base):
    """A backup a schedule made, and when the scheduler ran it (by its own clock): what
    retention counts and ages."""

    __tablename__ = "backup_schedule_runs"

    backup_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    schedule_id: Mapped[str] = mapped_column(String(36), index=True)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
