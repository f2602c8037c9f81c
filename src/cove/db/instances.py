"""Queries on instances shared by the API, the task manager and the conductor."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, false, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, object_session

from cove.common.errors import AddressPoolExhausted, InstanceNotFound
from cove.common.text import shown
from cove.db.backups import running_backup_of
from cove.db.configurations import settings_changed, values_of
from cove.db.models import AddressAllocation, DatastoreVersion, GuestState, Instance
from cove.domain.access import Access
from cove.domain.guest import Value
from cove.domain.parameters import denied
from cove.domain.status import ComputeState, GuestStatus, InstanceSnapshot, Task, compute_status


def _with_relations() -> list[Any]:
    """Load options that bring an instance's guest state, network, configuration group and
    datastore in the same query: each is one row per instance."""
    return [
        joinedload(Instance.guest),
        joinedload(Instance.network),
        joinedload(Instance.configuration),
        joinedload(Instance.datastore_version).joinedload(DatastoreVersion.datastore),
    ]


def get_instance(
    session: Session, instance_id: str, project_id: str | None = None, for_view: bool = False
) -> Instance:
    """The live instance ``instance_id`` (of ``project_id`` if given); ``for_view`` loads
    what its view shows in the same query.

    Raises InstanceNotFound.
    """
    inst = session.get(Instance, instance_id, options=_with_relations() if for_view else None)
    if inst is None or inst.deleted or (project_id is not None and inst.project_id != project_id):
        raise InstanceNotFound(f"Instance {shown(instance_id)} could not be found.")
    return inst


def page_instances(
    session: Session, query: Select[Instance], marker: str | None, size: int
) -> tuple[list[Instance], bool]:
    """One page of at most ``size`` of the instances ``query`` selects, newest first (ties by
    id, highest first), and whether more follow. Paged in SQL on (created, id), both
    descending, which an index on (project_id, deleted, created, id) serves for one project's
    lists: a page costs the same however many instances there are. The rows come with their
    guest state and datastore.

    ``marker`` is the id of the last instance of the previous page. It must be one that
    ``query`` selects: any other id (unknown, deleted, of another project) gives an empty page,
    so a marker never reveals anything outside the query.
    """
    if marker is not None:
        after = session.scalar(query.where(Instance.id == marker))
        if after is None:
            return [], False
        query = query.where(
            or_(
                Instance.created < after.created,
                and_(Instance.created == after.created, Instance.id < after.id),
            )
        )
    rows = list(
        session.scalars(
            query.order_by(Instance.created.desc(), Instance.id.desc())
            .options(*_with_relations())
            .limit(size + 1)
        )
    )
    return rows[:size], len(rows) > size


def snapshot(
    inst: Instance, guest: GuestState | None, backup_running: bool | None = None
) -> InstanceSnapshot:
    """The instance as its status sees it; whether a backup of it runs is, unless given,
    looked up in the instance's session (one small indexed query)."""
    if backup_running is None:
        session = object_session(inst)
        backup_running = bool(session and running_backup_of(session, [inst.id]))
    return InstanceSnapshot(
        task=Task(inst.task),
        compute=ComputeState(inst.compute_state),
        guest_status=GuestStatus(guest.status) if guest else None,
        heartbeat_at=guest.heartbeat_at if guest else None,
        agent_started_at=inst.agent_started_at,
        backup_running=backup_running,
    )


def status_counts(
    session: Session, now: datetime, heartbeat_interval: float
) -> Counter[tuple[str, str]]:
    """How many instances (deleted ones aside) show each status, by datastore:
    ``(status, datastore) -> count``; two queries whatever their number."""
    instances = list(
        session.scalars(
            select(Instance)
            .where(Instance.deleted == false())
            .options(
                joinedload(Instance.guest),
                joinedload(Instance.datastore_version).joinedload(DatastoreVersion.datastore),
            )
        )
    )
    backing_up = running_backup_of(session, [inst.id for inst in instances])
    counts: Counter[tuple[str, str]] = Counter()
    for inst in instances:
        snap = snapshot(inst, inst.guest, inst.id in backing_up)
        status = compute_status(snap, now, heartbeat_interval).status
        counts[(status, inst.datastore_version.datastore.name)] += 1
    return counts


def transition(
    session: Session, instance_id: str, from_tasks: set[Task], to_task: Task, now: datetime
) -> bool:
    """Move the instance's task atomically; False if it was not in one of ``from_tasks``.

    The old task's lease and sealed arguments go with it (cove.taskmanager.leases,
    cove.db.sealed): a task that starts here gets its arguments afterwards, in the same
    transaction."""
    result = session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.task.in_([t.value for t in from_tasks]))
        .values(
            task=to_task.value,
            task_started_at=now,
            updated=now,
            task_owner=None,
            task_lease_until=None,
            task_args=None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_fault(
    inst: Instance,
    message: str | None,
    now: datetime,
    *,
    task: Task | None = None,
    touch: bool = True,
) -> None:
    """Note ``message`` as the instance's fault at ``now`` (None clears the fault), moving its
    task to ``task`` when given; ``touch`` marks the row updated at ``now`` too. The one writer
    of faults: a fault and its time are always set, or cleared, together. A new task drops
    the old one's lease and sealed arguments."""
    if task is not None:
        inst.task = task.value
        inst.task_owner = inst.task_lease_until = inst.task_args = None
    inst.fault_message = message
    inst.fault_at = None if message is None else now
    if touch:
        inst.updated = now


def end_task(
    session: Session,
    instance_id: str,
    task: Task,
    to_task: Task,
    fault: str | None,
    now: datetime,
) -> bool:
    """End the instance's ``task`` in ``to_task``, noting ``fault`` (None clears an earlier
    one), unless it ended meanwhile (or the instance is gone): then nothing changes and the
    answer is False. The task moves by a conditional update, so two workers ending the same
    task cannot both succeed."""
    if not transition(session, instance_id, {task}, to_task, now):
        return False
    record_fault(get_instance(session, instance_id), fault, now)
    return True


def instance_project(session: Session, instance_id: str) -> str | None:
    """The project holding the live instance ``instance_id``; None if there is none."""
    return session.scalar(
        select(Instance.project_id).where(Instance.id == instance_id, Instance.deleted.is_(False))
    )


def reset_task(session: Session, instance_id: str, task: Task, fault: str, now: datetime) -> bool:
    """An administrator's reset of an instance stuck in ``task`` (Trove's ``reset_status``):
    the task ends in NONE and its lease and sealed arguments go with it, a build that never
    had its place up leaves the compute state BUILD for ERROR, the guest's service status is
    unknown (shown as ERROR) until the guest reports again, and ``fault`` records the reset.

    Conditional on ``task`` still being the instance's task, as :func:`end_task` is: False, and
    nothing changed, when it moved meanwhile. A task manager still working on the old task
    then finds it ended: its lease is gone and its writes are conditional on its task.
    """
    build = ComputeState.BUILD.value
    result = session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.deleted.is_(False), Instance.task == task.value)
        .values(
            task=Task.NONE.value,
            task_started_at=now,
            task_owner=None,
            task_lease_until=None,
            task_args=None,
            compute_state=case(
                (Instance.compute_state == build, ComputeState.ERROR.value),
                else_=Instance.compute_state,
            ),
            updated=now,
        )
        .execution_options(synchronize_session="fetch")
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    record_fault(get_instance(session, instance_id), fault, now)
    # The row lock the update holds keeps the conductor's heartbeat (which locks the instance
    # first) from writing the guest's state meanwhile; its next heartbeat replaces this one.
    guest = session.get(GuestState, instance_id)
    if guest is None:
        session.add(
            GuestState(
                instance_id=instance_id,
                status=GuestStatus.UNKNOWN.value,
                payload="{}",
                heartbeat_at=now,
            )
        )
    else:
        guest.status = GuestStatus.UNKNOWN.value
        guest.heartbeat_at = now
    return True


# -- settings pushes ---------------------------------------------------------------------------
#
# An instance's settings are its flavor's sizes, its volume size and its group's values. Every
# change of them marks the row ``settings_pending`` (and touches ``updated``) in the same
# transaction; only a push by the task manager, which rewrites the place through the compute
# driver and has the guest take them, clears the mark, and only if the row was not touched
# while the push was under way.


#: How the fault of a failed push starts, so that a later push clears only a fault of its own.
SETTINGS_FAULT = "Applying the configuration failed"


@dataclass(frozen=True)
class InstanceSettings:
    """What a guest is given of its instance's row: the arguments of ``apply_configuration``."""

    ram_mb: int
    vcpus: int
    volume_gb: int
    overrides: dict[str, Value]
    #: The row's ``settings_revision`` these were read at.
    revision: int


def settings_of(inst: Instance) -> InstanceSettings:
    """The instance's settings as its row stands; a parameter denied since its group was made
    is left out, as the guest is never given it."""
    manager = inst.datastore_version.manager
    return InstanceSettings(
        ram_mb=inst.flavor.ram,
        vcpus=inst.flavor.vcpus,
        volume_gb=inst.volume_size,
        overrides={
            name: value
            for name, value in values_of(inst.configuration).items()
            if not denied(manager, name)
        },
        revision=inst.settings_revision,
    )


def mark_settings_pending(session: Session, instance_id: str, now: datetime | None = None) -> bool:
    """Note, in the transaction that changes the instance's settings (a group attached,
    detached or changed, a resize), that its place and guest must be given them; False when
    the instance is gone. Touching ``updated`` is what tells a push under way that it came too
    early (see :func:`clear_settings_pending`; ``settings_changed`` says what else is set)."""
    result = session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.deleted.is_(False))
        .values(**settings_changed(now))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def clear_settings_pending(session: Session, instance_id: str, revision: datetime) -> bool:
    """Clear the mark after the place and the guest confirmed the settings read from the row
    when its ``updated`` was ``revision``; a row touched since (a change that landed while the
    push was under way) keeps it, for the next push. One conditional UPDATE, so it cannot
    interleave with a change. Returns whether the mark was cleared."""
    result = session.execute(
        update(Instance)
        .where(
            Instance.id == instance_id,
            Instance.settings_pending.is_(True),
            Instance.updated == revision,
        )
        .values(settings_pending=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def allocate_address(
    session: Session,
    pool: str,
    instance_id: str,
    usable: Callable[[str], bool] = lambda _address: True,
) -> str:
    """Reserve the lowest free address of ``pool`` for the instance (idempotent). Addresses
    that ``usable`` rejects (in use by something outside this Cove) are skipped.

    Raises AddressPoolExhausted when none is left.
    """
    existing = session.scalar(
        select(AddressAllocation.address).where(AddressAllocation.instance_id == instance_id)
    )
    if existing:
        return existing
    network = ipaddress.ip_network(pool)
    for _attempt in range(20):
        used = set(session.scalars(select(AddressAllocation.address)))
        candidate = next(
            (str(h) for h in network.hosts() if str(h) not in used and usable(str(h))), None
        )
        if candidate is None:
            raise AddressPoolExhausted(f"no free address left in {pool}")
        try:
            with session.begin_nested():
                session.add(AddressAllocation(address=candidate, instance_id=instance_id))
            return candidate
        except IntegrityError:
            continue
    raise AddressPoolExhausted(f"could not allocate an address in {pool}; try again")


def access_of(inst: Instance) -> Access:
    """Who may connect to the instance, as its row records it."""
    cidrs = tuple(json.loads(inst.allowed_cidrs)) if inst.allowed_cidrs else ()
    return Access(is_public=inst.is_public, allowed_cidrs=cidrs)


def store_access(inst: Instance, access: Access) -> None:
    """Record ``access`` on the row; an instance no longer public gives its port up (the task
    manager gives a public one a port, :func:`allocate_public_port`)."""
    inst.is_public = access.is_public
    inst.allowed_cidrs = json.dumps(list(access.allowed_cidrs)) if access.allowed_cidrs else None
    if not access.is_public:
        inst.public_port = None


def allocate_public_port(
    session: Session,
    inst: Instance,
    low: int,
    high: int,
    usable: Callable[[int], bool] = lambda _port: True,
) -> int:
    """Give the public instance the lowest free port from ``low`` to ``high`` (idempotent);
    ports that ``usable`` rejects (held by something outside this Cove) are skipped.

    Raises AddressPoolExhausted when none is left.
    """
    if inst.public_port is not None:
        return inst.public_port
    for _attempt in range(20):
        used = set(session.scalars(select(Instance.public_port).where(Instance.public_port >= 0)))
        candidate = next((p for p in range(low, high + 1) if p not in used and usable(p)), None)
        if candidate is None:
            raise AddressPoolExhausted(f"no free public port left from {low} to {high}")
        try:
            with session.begin_nested():
                inst.public_port = candidate
                session.flush()
            return candidate
        except IntegrityError:
            inst.public_port = None
            continue
    raise AddressPoolExhausted(f"could not allocate a public port from {low} to {high}")


def release_address(session: Session, instance_id: str) -> None:
    alloc = session.scalar(
        select(AddressAllocation).where(AddressAllocation.instance_id == instance_id)
    )
    if alloc is not None:
        session.delete(alloc)


def replicas_of(session: Session, instance_id: str) -> list[str]:
    """The ids of the live replicas of ``instance_id``, oldest first."""
    return list(
        session.scalars(
            select(Instance.id)
            .where(Instance.replica_of_id == instance_id, Instance.deleted.is_(False))
            .order_by(Instance.created, Instance.id)
        )
    )


def live_instances_of(session: Session, project_id: str) -> list[Instance]:
    """The live instances of ``project_id`` with their datastores, oldest first."""
    return list(
        session.scalars(
            select(Instance)
            .options(joinedload(Instance.datastore_version).joinedload(DatastoreVersion.datastore))
            .where(Instance.project_id == project_id, Instance.deleted.is_(False))
            .order_by(Instance.created, Instance.id)
        )
    )
