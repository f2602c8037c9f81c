"""Instance status as a pure function of an immutable snapshot.

Trove computes ``status`` from the task in progress, then a running backup, then the compute
server; ``operating_status`` from the guest agent's last heartbeat. Cove does the same, and adds
the agent's start time so that a guest agent that was just brought back is not mistaken for a
healthy one before it has reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

#: A heartbeat older than this many intervals means the guest agent is lost.
LOST_AFTER_INTERVALS = 3


class Task(StrEnum):
    NONE = "NONE"
    BUILDING = "BUILDING"
    REBOOTING = "REBOOTING"
    RESIZING = "RESIZING"
    #: A replica being made a standalone instance.
    DETACHING = "DETACHING"
    #: A replica being made its group's primary, the old primary following it (a switchover).
    PROMOTING = "PROMOTING"
    #: A primary being replaced by its most advanced replica (asked, or automatic).
    EJECTING = "EJECTING"
    #: An old primary being made a replica of the one that replaced it.
    REJOINING = "REJOINING"
    DELETING = "DELETING"
    BUILD_ERROR = "BUILD_ERROR"
    DELETE_ERROR = "DELETE_ERROR"

    @property
    def is_error(self) -> bool:
        return self.value.endswith("_ERROR")


class ComputeState(StrEnum):
    """What the compute driver reports of the place the instance runs in."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTDOWN = "SHUTDOWN"
    ERROR = "ERROR"


class GuestStatus(StrEnum):
    """What the guest agent reports of its database server."""

    NEW = "new"
    BUILDING = "building"
    RUNNING = "running"
    HEALTHY = "healthy"
    BLOCKED = "blocked"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    FAILED = "failed"
    RESTARTING = "restarting"
    RESTART_REQUIRED = "restart_required"
    UNKNOWN = "unknown"

    @property
    def api_name(self) -> str:
        return _GUEST_API_NAMES[self]


_GUEST_API_NAMES: dict[GuestStatus, str] = {
    GuestStatus.NEW: "NEW",
    GuestStatus.BUILDING: "BUILD",
    GuestStatus.RUNNING: "ACTIVE",
    GuestStatus.HEALTHY: "HEALTHY",
    GuestStatus.BLOCKED: "BLOCKED",
    GuestStatus.SHUTDOWN: "SHUTDOWN",
    GuestStatus.CRASHED: "SHUTDOWN",
    GuestStatus.FAILED: "FAILED",
    GuestStatus.RESTARTING: "RESTARTING",
    GuestStatus.RESTART_REQUIRED: "RESTART_REQUIRED",
    GuestStatus.UNKNOWN: "ERROR",
}

_TASK_STATUS: dict[Task, str] = {
    Task.REBOOTING: "REBOOT",
    Task.RESIZING: "RESIZE",
    Task.DETACHING: "DETACH",
    Task.PROMOTING: "PROMOTE",
    Task.EJECTING: "EJECT",
    # Trove has no word for it; the old primary is still leaving its place.
    Task.REJOINING: "EJECT",
    Task.DELETING: "SHUTDOWN",
}

_GUEST_STATUS: dict[GuestStatus, str] = {
    GuestStatus.NEW: "BUILD",
    GuestStatus.BUILDING: "BUILD",
    GuestStatus.RUNNING: "ACTIVE",
    GuestStatus.HEALTHY: "ACTIVE",
    GuestStatus.BLOCKED: "ACTIVE",
    GuestStatus.SHUTDOWN: "SHUTDOWN",
    GuestStatus.CRASHED: "SHUTDOWN",
    GuestStatus.FAILED: "ERROR",
    GuestStatus.RESTARTING: "REBOOT",
    GuestStatus.RESTART_REQUIRED: "RESTART_REQUIRED",
    GuestStatus.UNKNOWN: "ERROR",
}


@dataclass(frozen=True)
class InstanceSnapshot:
    task: Task
    compute: ComputeState
    guest_status: GuestStatus | None = None
    heartbeat_at: datetime | None = None
    agent_started_at: datetime | None = None
    backup_running: bool = False


@dataclass(frozen=True)
class StatusView:
    status: str
    operating_status: str


def guest_view(
    snap: InstanceSnapshot, now: datetime, heartbeat_interval: float
) -> GuestStatus | None:
    """The guest's status as it stands now: None if it has not reported since its agent started,
    UNKNOWN if its heartbeat is lost."""
    if snap.heartbeat_at is None or snap.guest_status is None:
        return None
    if snap.agent_started_at is not None and snap.heartbeat_at < snap.agent_started_at:
        return None
    if now - snap.heartbeat_at > timedelta(seconds=heartbeat_interval * LOST_AFTER_INTERVALS):
        return GuestStatus.UNKNOWN
    return snap.guest_status


def compute_status(snap: InstanceSnapshot, now: datetime, heartbeat_interval: float) -> StatusView:
    """Trove's ``status`` and ``operating_status`` for an instance snapshot."""
    if snap.task.is_error:
        return StatusView("ERROR", "")
    if snap.task is Task.BUILDING:
        return StatusView("ERROR" if snap.compute is ComputeState.ERROR else "BUILD", "")
    if snap.task in _TASK_STATUS:
        return StatusView(_TASK_STATUS[snap.task], "")
    if snap.backup_running:
        return StatusView("BACKUP", "")
    if snap.compute is not ComputeState.ACTIVE:
        return StatusView(snap.compute.value, "")
    guest = guest_view(snap, now, heartbeat_interval)
    if guest is None and snap.heartbeat_at is None:
        # Built (its prepare answered the task manager), and its guest's first report is
        # still on its way to the conductor: not up until the guest says so.
        return StatusView("BUILD", "")
    if guest is None:
        # The agent was restarted and has not reported yet.
        return StatusView("REBOOT", "")
    return StatusView(_GUEST_STATUS[guest], guest.api_name)


#: Guest states in which the database server answers and can be administered.
SERVING = frozenset({GuestStatus.RUNNING, GuestStatus.HEALTHY, GuestStatus.RESTART_REQUIRED})
#: Guest states from which a restart may bring the server back.
RESTARTABLE = SERVING | {GuestStatus.SHUTDOWN, GuestStatus.CRASHED, GuestStatus.BLOCKED}


def can_act(
    snap: InstanceSnapshot,
    now: datetime,
    heartbeat_interval: float,
    allowed: frozenset[GuestStatus] = SERVING,
) -> bool:
    """Whether an action may start: no task running, the place is up, and the guest is in
    one of the ``allowed`` states and reporting."""
    if snap.task is not Task.NONE or snap.backup_running:
        return False
    if snap.compute is not ComputeState.ACTIVE:
        return False
    guest = guest_view(snap, now, heartbeat_interval)
    return guest is not None and guest in allowed


def can_delete(snap: InstanceSnapshot) -> bool:
    """An instance may be deleted unless it is still being built (Trove's rule)."""
    return snap.task is not Task.BUILDING
