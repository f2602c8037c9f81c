"""What the control plane and a guest agent tell each other, as typed values.

``GuestSettings`` is the one description of an instance's guest: the task manager builds it from
the instance's row, the compute driver writes it beside the instance (``guest.json``) and the
guest agent reads it back. The other types are the arguments and results of the guest's and the
conductor's RPC methods (see ``cove.rpc.guest`` and ``cove.rpc.conductor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from cove.domain.replication import ReplicationState

#: A configuration value as a configuration group stores it.
Value = int | float | bool | str


@dataclass(frozen=True)
class GuestSettings:
    """Everything a guest agent is given about its instance.

    The task manager fills what the control database knows; ``instance_dir``,
    ``template_dir`` and ``journal_dir`` say where the instance lives, and only the compute
    driver that places it knows that: it fills them in when it writes the settings for the
    guest.
    """

    instance_id: str
    datastore: str
    datastore_version: str
    bin_dir: str
    address: str
    port: int
    ram_mb: int
    vcpus: int
    volume_gb: int
    transport_url: str = field(repr=False)
    heartbeat_interval: float
    #: The values of the configuration group attached to the instance (already checked against
    #: the version's catalogue), laid over the flavor-derived defaults.
    overrides: dict[str, Value] = field(default_factory=dict)
    instance_dir: str = ""
    template_dir: str | None = None
    #: A directory of the instance's own on the host's filesystem, beside its volume, for a
    #: commit log of fixed size that the server syncs on every commit; "" where the instance
    #: has no volume (the log stays in the data directory). A loop device turns each sync
    #: into a full fsync of the volume's image, a host journal commit that doubled a commit's
    #: cost; the data, which grows, stays on the volume.
    journal_dir: str = ""
    #: How the agent writes its log: "text", or "json" (one object per line), as the
    #: deployment's ``log_format`` says.
    log_format: str = "text"

    @property
    def root(self) -> Path:
        return Path(self.instance_dir)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"


@dataclass(frozen=True)
class ConfigurationApplied:
    """The guest's answer to new settings."""

    #: Whether the server must be restarted for every setting to be in effect.
    restart_required: bool


@dataclass(frozen=True)
class RootEnabled:
    """The superuser login the guest enabled."""

    name: str


@dataclass(frozen=True)
class PasswordChange:
    """A new password for one user. ``password`` is a secret: never log or echo it."""

    name: str
    password: str = field(repr=False)
    host: str = "%"


@dataclass(frozen=True)
class ClusterMember:
    """How a cluster member's server takes part in its cluster."""

    #: The cluster's id: its name between the servers, which refuse peers of another.
    cluster_id: str
    #: The addresses of the cluster's members (this one's among them) that the server looks
    #: for its cluster at when it starts.
    peers: list[str]
    #: Whether this member's first start begins a new cluster (the first member of a new
    #: cluster) rather than joining the peers (taking a copy of a member's data).
    bootstrap: bool = False
    #: The password of the replication account every member of a sharded cluster shares.
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class ClusterHealth:
    """How a cluster member's server sees its cluster."""

    #: How many members its cluster has, as this member counts them.
    size: int
    #: Its own state in the cluster, as the datastore names it (Galera: ``Synced``,
    #: ``Donor/Desynced``, ``Joining``, ...).
    state: str
    #: Whether it belongs to the part of the cluster that holds a majority (Galera's
    #: ``Primary`` component) and takes queries.
    ready: bool


@dataclass(frozen=True)
class Isolation:
    """The kernel's limits on an instance, as its agent finds them: its own control group
    (``cove.common.cgroups``) and the filesystem under its data directory."""

    #: None: no memory limit.
    memory_limit_mb: int | None
    #: CPU cores a scheduling period's quota buys; None: no CPU limit.
    cpus: float | None
    memory_used_mb: int | None = None
    #: Processes of the instance the kernel killed for want of memory since its group was
    #: made.
    oom_kills: int = 0
    #: The size of the filesystem holding the instance's files when it is the instance's own
    #: (a volume), and how much of it is used; None when they share the host's.
    volume_mb: int | None = None
    volume_used_mb: int | None = None
    #: Whether the agent found the volume full (the server refuses writes).
    volume_full: bool = False
    #: Whether the agent (and so its server) runs as a user of the instance's own.
    own_user: bool = False


@dataclass(frozen=True)
class DatabaseVitals:
    """The database server's own vital signs, read by its agent (every 5 s) for its
    heartbeats. Counters count since the server started (from zero again after a restart);
    None where the datastore does not count it."""

    #: Client connections open now.
    connections: int | None = None
    #: Transactions committed and rolled back.
    commits: int | None = None
    rollbacks: int | None = None
    #: Statements or commands the server ran.
    operations: int | None = None
    #: Reads of the server's cache (``cache_reads``) and those it answered from memory.
    cache_hits: int | None = None
    cache_reads: int | None = None
    #: How far a replica's data is behind its source, in seconds (None: no replica, or it
    #: cannot tell).
    replication_lag_seconds: float | None = None


@dataclass(frozen=True)
class HeartbeatPayload:
    """What a heartbeat says beside the server's status."""

    agent_pid: int | None = None
    #: The limits the kernel enforces on the instance (None: none).
    isolation: Isolation | None = None
    #: A cluster member's view of its cluster (None: no member, or the server does not
    #: answer).
    cluster: ClusterHealth | None = None
    #: A replica's place behind its source (None: no replica, or the server does not say),
    #: which a view compares with its primary's last known position.
    replica: ReplicationState | None = None
    #: The server's vital signs (None: it does not answer, or is not prepared yet).
    vitals: DatabaseVitals | None = None


#: The ``operation`` of the reports in which a guest tells the conductor that its server exited
#: by itself and how bringing it back went (see ``cove.guestagent.recovery``).
SERVER_REPORT = "server"


class ServerOutcome(StrEnum):
    """The outcomes of a ``server`` report."""

    #: The server exited without being asked to; the agent is restarting it.
    CRASHED = "crashed"
    #: It answers again.
    RECOVERED = "recovered"
    #: It could not be kept running; only an intended start brings it back.
    GAVE_UP = "gave_up"
    #: The kernel killed a process of the instance at its flavor's memory limit.
    OUT_OF_MEMORY = "out_of_memory"


#: The ``operation`` of the reports in which a guest tells the conductor that its volume is
#: full, or has room again.
VOLUME_REPORT = "volume"


class VolumeOutcome(StrEnum):
    FULL = "full"
    OK = "ok"
