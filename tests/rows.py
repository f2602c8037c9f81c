"""Rows of the control database that tests start from."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from cove.common.ids import new_id, utcnow
from cove.compute.discovery import FoundVersion
from cove.db.catalog import register_version, seed_flavors
from cove.db.engine import Database
from cove.db.models import DatastoreVersion, Instance
from cove.db.sealed import CreateArgs, Sealer
from cove.domain.status import ComputeState, Task


def add_instance(
    db: Database,
    task: Task = Task.BUILDING,
    compute: ComputeState = ComputeState.ACTIVE,
    age: float = 0.0,
) -> str:
    """A tiny PostgreSQL instance of project ``p`` whose task began ``age`` seconds ago; the
    catalogue is seeded first if it is empty."""
    iid = new_id()
    with db.session() as s:
        seed_flavors(s)
        register_version(s, FoundVersion("postgresql", "15", "15.4", "/x"))
        version = s.scalar(select(DatastoreVersion))
        assert version is not None
        now = utcnow()
        s.add(
            Instance(
                id=iid,
                project_id="p",
                name="n",
                flavor_id="1",
                datastore_version_id=version.id,
                volume_size=1,
                compute_driver="local",
                task=task.value,
                task_started_at=now - timedelta(seconds=age),
                compute_state=compute.value,
                port=5432,
                created=now,
                updated=now,
            )
        )
    return iid


def add_building(db: Database, sealer: Sealer) -> str:
    """A BUILDING instance with its (empty) request sealed on the row, as the API records it,
    for a task manager to build."""
    iid = add_instance(db, Task.BUILDING, ComputeState.BUILD)
    with db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.task_args = sealer.seal(iid, CreateArgs([], []))
    return iid
