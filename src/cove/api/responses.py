"""Response bodies of the Trove v1.0 API (and of Cove's identity and health endpoints), field
for field as :mod:`cove.api.views` and the routers build them.

They document: routes name theirs with ``responses=answers(...)`` (cove.api.openapi), which puts
them in the OpenAPI document without changing what is sent, and tests/unit/test_openapi.py
checks real answers against the document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional_key() -> Any:
    """A key that a view leaves out when it has nothing to say (it is never ``null``)."""
    return Field(default=None, json_schema_extra=_no_default)


class View(BaseModel):
    """A body as Cove sends it: exactly these keys, none more."""

    model_config = ConfigDict(extra="forbid")


# -- versions, flavors, datastores -------------------------------------------------------------


class Link(View):
    rel: str
    href: str


class PageLinks(View):
    """What a paginated list adds: the ``next`` link, only when more items follow."""

    links: list[Link] = optional_key()


class ApiVersion(View):
    id: str
    status: str
    updated: str
    links: list[Link]


class ApiVersionList(View):
    versions: list[ApiVersion]


class ApiVersionOne(View):
    version: ApiVersion


class Flavor(View):
    id: int | None
    links: list[Link]
    name: str
    ram: int
    vcpus: int
    disk: int
    ephemeral: int
    str_id: str


class FlavorList(PageLinks):
    flavors: list[Flavor]


class FlavorOne(View):
    flavor: Flavor


class DatastoreVersionSummary(View):
    id: str
    name: str
    version: str
    links: list[Link]


class DatastoreVersion(DatastoreVersionSummary):
    datastore: str
    active: bool


class Datastore(View):
    id: str
    name: str
    links: list[Link]
    versions: list[DatastoreVersionSummary]
    default_version: str = optional_key()


class DatastoreList(PageLinks):
    datastores: list[Datastore]


class DatastoreOne(View):
    datastore: Datastore


class DatastoreVersionList(PageLinks):
    versions: list[DatastoreVersion]


class DatastoreVersionOne(View):
    version: DatastoreVersion


class ConfigurationParameter(View):
    name: str
    datastore_version_id: str
    restart_required: bool
    type: str
    min: int | float = optional_key()
    max: int | float = optional_key()
    allowed: list[str] = optional_key()


class ConfigurationParameterList(View):
    parameters: list[ConfigurationParameter] = Field(alias="configuration-parameters")


class AbsoluteLimits(View):
    verb: Literal["ABSOLUTE"]
    max_instances: int
    max_ram: int
    max_backups: int
    max_volumes: int


class RateLimit(View):
    verb: str
    uri: str
    regex: str
    value: int
    remaining: int
    unit: str
    nextAvailable: str


class LimitList(View):
    limits: list[AbsoluteLimits | RateLimit]


# -- configuration groups ----------------------------------------------------------------------


class Configuration(View):
    id: str
    name: str
    description: str | None
    created: str
    updated: str
    datastore_version_id: str
    datastore_name: str
    datastore_version_name: str
    datastore_version_number: str
    links: list[Link]


class ConfigurationDetail(Configuration):
    values: dict[str, Any]
    instance_count: int


class ConfigurationList(PageLinks):
    configurations: list[Configuration]


class ConfigurationOne(View):
    configuration: ConfigurationDetail


class InstanceRef(View):
    id: str
    name: str


class InstanceRefList(PageLinks):
    instances: list[InstanceRef]


# -- backups -----------------------------------------------------------------------------------


class BackupDatastore(View):
    type: str
    version: str
    version_id: str


class BackupFault(View):
    message: str


class Backup(View):
    id: str
    name: str
    description: str | None
    locationRef: str | None
    instance_id: str
    created: str
    updated: str
    size: float | None
    status: str
    parent_id: str | None
    project_id: str
    datastore: BackupDatastore
    storage_driver: str
    fault: BackupFault = optional_key()


class GuestLog(View):
    """Trove's guest log: sizes in bytes; ``container``, ``prefix`` and ``metafile`` say where
    the published copy is, read through the object-store endpoint."""

    name: str
    type: Literal["USER", "SYS"]
    status: str
    published: int
    pending: int
    container: str
    prefix: str
    metafile: str


class GuestLogList(View):
    logs: list[GuestLog]


class GuestLogOne(View):
    log: GuestLog


class BackupList(PageLinks):
    backups: list[Backup]


class BackupOne(View):
    backup: Backup


class RestoreWindow(View):
    """The moments ``restorePoint.restore_time`` may name for an instance (UTC); both null
    while it has no full backup to replay from."""

    instance_id: str
    earliest: str | None
    latest: str | None


class RestoreWindowOne(View):
    restore_window: RestoreWindow


# -- instances ---------------------------------------------------------------------------------


class IdLinks(View):
    id: str
    links: list[Link]


class InstanceDatastore(View):
    type: str
    version: str
    version_number: str = optional_key()


class Access(View):
    """Who may connect: published on the host's public address or not, and the networks
    clients may connect from (``0.0.0.0/0``: every address)."""

    is_public: bool
    allowed_cidrs: list[str]


class Volume(View):
    size: int


class Address(View):
    address: str
    type: str
    network: str = optional_key()
    #: A Cove extension on the ``public`` address: the port the instance is published on.
    port: int = optional_key()


class InstanceFaultInfo(View):
    message: str
    created: str | None
    details: str


class ConfigurationRef(View):
    id: str
    name: str
    links: list[Link]


class Endpoints(View):
    """A Cove extension on the members of a replication group: ``read_write`` always reaches
    the current primary, ``read_only`` balances over the replicas (``address:port``)."""

    read_write: str
    read_only: str


class Replication(View):
    """A Cove extension on the members of a replication group: the group's modes and the
    instance's promotion weight."""

    synchronous: bool
    auto_failover: bool
    weight: int


class Instance(View):
    """The summary view (lists). ``ip`` and ``addresses`` appear once the instance has an
    address; ``tenant_id`` for a caller who reaches every project."""

    id: str
    name: str
    status: str
    operating_status: str
    links: list[Link]
    flavor: IdLinks
    datastore: InstanceDatastore
    region: str
    access: Access
    volume: Volume
    ip: list[str] = optional_key()
    addresses: list[Address] = optional_key()
    port: int = optional_key()
    replica_of: IdLinks = optional_key()
    replicas: list[IdLinks] = optional_key()
    endpoints: Endpoints = optional_key()
    replication: Replication = optional_key()
    cluster_id: str = optional_key()
    tenant_id: str = optional_key()


class InstanceDetail(Instance):
    """The detail view (create, show, ``/instances/detail``); the last three keys for a
    caller who reaches every project."""

    created: str
    updated: str
    service_status_updated: str | None
    fault: InstanceFaultInfo = optional_key()
    configuration: ConfigurationRef = optional_key()
    server_id: str = optional_key()
    volume_id: str | None = optional_key()
    encrypted_rpc_messaging: bool = optional_key()


class InstanceList(PageLinks):
    instances: list[Instance]


class InstanceDetailList(PageLinks):
    instances: list[InstanceDetail]


class InstanceOne(View):
    instance: InstanceDetail


# -- clusters ----------------------------------------------------------------------------------


class ClusterTaskInfo(View):
    id: int
    name: str
    description: str


class MemberHealth(View):
    """A Cove extension: how a member's server last saw its cluster (Galera: its count of
    members, its state, whether it takes queries)."""

    cluster_size: int | None
    state: str | None
    ready: bool
    lag_bytes: int = optional_key()


class ClusterMember(View):
    """A member as the cluster's view lists it; ``ip`` once it has an address, ``health``
    once its agent reported it."""

    id: str
    name: str
    type: str
    status: str
    links: list[Link]
    flavor: IdLinks
    volume: Volume
    ip: list[str] = optional_key()
    health: MemberHealth = optional_key()
    weight: int = optional_key()


class Cluster(View):
    """Trove's cluster view: the task instead of a status; the last four keys when set
    (``ip``: the cluster's load-balanced endpoint)."""

    id: str
    name: str
    task: ClusterTaskInfo
    created: str
    updated: str
    links: list[Link]
    datastore: InstanceDatastore
    instances: list[ClusterMember]
    ip: list[str] = optional_key()
    endpoints: Endpoints = optional_key()
    locality: str = optional_key()
    extended_properties: dict[str, Any] = optional_key()
    configuration: str = optional_key()


class ClusterList(PageLinks):
    clusters: list[Cluster]


class ClusterOne(View):
    cluster: Cluster


class RunningConfiguration(View):
    configuration: dict[str, str]


class RunningConfigurationOne(View):
    instance: RunningConfiguration


class InstanceEventView(View):
    """A notification event as its consumers read it (``cove.domain.events``)."""

    message_id: str
    publisher_id: str
    event_type: str
    priority: str
    timestamp: str
    payload: dict[str, Any]


class InstanceEventList(View):
    events: list[InstanceEventView]


class InstanceVitals(View):
    """Counters count since the server started; null where the datastore does not count it
    or the agent has not said yet."""

    heartbeat_at: str | None
    connections: int | None
    commits: int | None
    rollbacks: int | None
    operations: int | None
    cache_hits: int | None
    cache_reads: int | None
    replication_lag_seconds: float | None
    memory_used_mb: int | None
    memory_limit_mb: int | None
    volume_used_mb: int | None
    volume_mb: int | None


class InstanceVitalsOne(View):
    vitals: InstanceVitals


class DatabaseName(View):
    name: str


class DatabaseList(PageLinks):
    databases: list[DatabaseName]


class User(View):
    name: str
    host: str
    databases: list[DatabaseName]


class UserList(PageLinks):
    users: list[User]


class UserOne(View):
    user: User


class RootStatus(View):
    rootEnabled: bool


class RootUser(View):
    name: str
    password: str


class RootEnabled(View):
    user: RootUser


class Network(View):
    id: str
    name: str
    cidr: str
    is_default: bool
    links: list[Link]


class NetworkList(PageLinks):
    networks: list[Network]


class NetworkOne(View):
    network: Network


# -- management --------------------------------------------------------------------------------


class QuotaUsage(View):
    resource: str
    in_use: int
    reserved: int
    limit: int


class QuotaUsageList(View):
    quotas: list[QuotaUsage]


class QuotaLimits(View):
    quotas: dict[str, int]


class ServerAddress(View):
    addr: str
    version: int


class Server(View):
    """Where the compute driver runs the instance; ``addresses`` (by network) when one
    instance is shown."""

    id: str
    name: str
    status: str
    tenant_id: str
    host: str
    deleted: bool
    deleted_at: str | None
    address: str | None
    port: int | None
    addresses: dict[str, list[ServerAddress]] = optional_key()


class GuestStatus(View):
    state_description: str | None


class Isolation(View):
    """What the kernel enforces on an instance (null: not enforced, or not known yet)."""

    memory_limit_mb: int | None
    memory_used_mb: int | None
    oom_kills: int | None
    cpus: float | None
    volume_mb: int | None
    volume_used_mb: int | None
    #: Whether the instance runs as a user of its own.
    own_user: bool


class AdminInstance(InstanceDetail):
    """The management view: the detail view as an administrator sees it, with its bookkeeping
    and its isolation; ``guest_status`` when one instance is shown."""

    server: Server
    deleted: bool
    deleted_at: str | None
    task_description: str
    service_status: str | None
    isolation: Isolation
    guest_status: GuestStatus = optional_key()


class AdminInstanceList(PageLinks):
    instances: list[AdminInstance]


class AdminInstanceOne(View):
    instance: AdminInstance


# -- health ------------------------------------------------------------------------------------


class Liveness(View):
    status: Literal["ok"]


class Readiness(View):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "failed"]]


# -- identity (Keystone v3's shapes) -----------------------------------------------------------


class KeystoneError(View):
    code: int
    title: str
    message: str


class KeystoneErrorBody(View):
    error: KeystoneError


class MediaType(View):
    base: str
    type: str


class KeystoneVersion(View):
    id: str
    status: str
    updated: str
    links: list[Link]
    media_types: list[MediaType] = Field(alias="media-types")


class KeystoneVersionValues(View):
    values: list[KeystoneVersion]


class KeystoneVersionList(View):
    versions: KeystoneVersionValues


class KeystoneVersionOne(View):
    version: KeystoneVersion


class Token(View):
    """Keystone's token document (see the Keystone v3 API)."""

    token: dict[str, Any]


class Project(View):
    id: str
    name: str
    description: str | None
    enabled: bool
    domain_id: str
    parent_id: str
    is_domain: bool
    tags: list[str]
    links: dict[str, str]


class ProjectList(View):
    projects: list[Project]
    links: dict[str, str | None]


class ProjectOne(View):
    project: Project


# -- backup schedules (a Cove extension) -------------------------------------------------------


class BackupSchedule(View):
    id: str
    name: str | None
    instance_id: str
    project_id: str
    cron: str
    incremental: bool
    keep_count: int | None
    keep_days: int | None
    enabled: bool
    next_run: str | None
    last_run: str | None
    last_backup_id: str | None
    last_error: str | None
    created: str
    updated: str
    links: list[Link]


class BackupScheduleList(PageLinks):
    backup_schedules: list[BackupSchedule]


class BackupScheduleOne(View):
    backup_schedule: BackupSchedule
