"""Queries on instances shared by the API, the task manager and the conductor."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from cove.common.errors import AddressPoolExhausted, InstanceNotFound
from cove.db.models import AddressAllocation, DatastoreVersion, GuestState, Instance
from cove.domain.status import ComputeState, GuestStatus, InstanceSnapshot, Task


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
        raise InstanceNotFound(f"Instance {instance_id} could not be found.")
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


def snapshot(inst: Instance, guest: GuestState | None) -> InstanceSnapshot:
    return InstanceSnapshot(
        task=Task(inst.task),
        compute=ComputeState(inst.compute_state),
        guest_status=GuestStatus(guest.status) if guest else None,
        heartbeat_at=guest.heartbeat_at if guest else None,
        agent_started_at=inst.agent_started_at,
    )


def transition(
    session: Session, instance_id: str, from_tasks: set[Task], to_task: Task, now: datetime
) -> bool:
    """Move the instance's task atomically; False if it was not in one of ``from_tasks``."""
    result = session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.task.in_([t.value for t in from_tasks]))
        .values(task=to_task.value, task_started_at=now, updated=now)
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
    of faults: a fault and its time are always set, or cleared, together."""
    if task is not None:
        inst.task = task.value
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


def release_address(session: Session, instance_id: str) -> None:
    alloc = session.scalar(
        select(AddressAllocation).where(AddressAllocation.instance_id == instance_id)
    )
    if alloc is not None:
        session.delete(alloc)
