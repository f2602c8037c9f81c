"""Replicas behind ``/instances``: creating them (``replica_of``, ``replica_count``), what the
instance views say of them, detaching one, and what a replica or a source refuses.

A replica takes everything from its source: datastore version, flavor, volume size, network
and configuration group; its databases and users are the source's (the server copies them),
so a request naming any of these is refused, as Trove refuses it. Each replica is an instance
of the project, counted against its quotas, built by the task managers from a copy of the
source (cove.taskmanager.replicas).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready, require
from cove.api.schemas import InstanceCreate
from cove.common.errors import BadRequest, Forbidden
from cove.common.ids import new_id, utcnow
from cove.db.instances import get_instance, replicas_of
from cove.db.models import Instance
from cove.db.quotas import check_instance_quota, lock_project
from cove.db.sealed import CreateArgs
from cove.domain.capabilities import Capability
from cove.domain.status import ComputeState, Task

#: Replicas one request may create (Trove's bound).
MAX_REPLICA_COUNT = 3

#: What a replica takes from its source: a request naming any of these is refused.
_FROM_SOURCE = (
    ("flavorRef", "flavor"),
    ("volume", "volume"),
    ("datastore", "datastore"),
    ("databases", "databases"),
    ("users", "users"),
    ("configuration", "configuration"),
    ("restorePoint", "restorePoint"),
    ("nics", "nics"),
)


def check_replica_request(spec: InstanceCreate) -> int:
    """The number of replicas asked for; raises BadRequest for what a replica request may not
    name or an unusable ``replica_count``."""
    given = [what for field, what in _FROM_SOURCE if getattr(spec, field)]
    if given:
        raise BadRequest(
            "A replica takes its " + ", ".join(given) + " from its source; do not give "
            f"{'it' if len(given) == 1 else 'them'} with 'replica_of'."
        )
    count = 1 if spec.replica_count is None else spec.replica_count
    if not 1 <= count <= MAX_REPLICA_COUNT:
        raise BadRequest(f"replica_count must be an integer from 1 to {MAX_REPLICA_COUNT}.")
    return count


def record_replicas(
    c: ApiContext, project_id: str, spec: InstanceCreate, source_id: str, count: int
) -> list[str]:
    """Record ``count`` BUILDING replicas of the project's instance ``source_id`` within its
    quotas (named after ``spec.name``, with ``-2``, ``-3`` after the first when several);
    returns their ids.

    Raises InstanceNotFound, OperationNotSupported (a datastore without replication),
    BadRequest (a replica as the source), InstanceNotReady (the source is not serving) and
    QuotaExceeded.
    """
    with c.db.session() as s:
        source = get_instance(s, source_id, project_id)
        datastore = source.datastore_version.datastore.name
        if source.replica_of_id is not None:
            raise BadRequest(
                f"Instance {source_id} is itself a replica (of {source.replica_of_id}); "
                "a replica's source must be a primary."
            )
    require(datastore, Capability.REPLICATION)
    check_ready(c, project_id, source_id)
    ids: list[str] = []
    with c.db.session() as s:
        lock_project(s, project_id)  # the quota counts concurrent creates
        source = get_instance(s, source_id, project_id)
        for n in range(count):
            check_instance_quota(
                s, c.settings, project_id, ram=source.flavor.ram, volume=source.volume_size
            )
            ids.append(_add(c, s, source, spec.name if n == 0 else f"{spec.name}-{n + 1}"))
            s.flush()  # counted by the next quota check
    return ids


def _add(c: ApiContext, s: Session, source: Instance, name: str) -> str:
    instance_id = new_id()
    now = utcnow()
    s.add(
        Instance(
            id=instance_id,
            project_id=source.project_id,
            name=name,
            flavor_id=source.flavor_id,
            datastore_version_id=source.datastore_version_id,
            volume_size=source.volume_size,
            network_id=source.network_id,
            compute_driver=c.settings.compute_driver,
            task=Task.BUILDING.value,
            task_started_at=now,
            compute_state=ComputeState.BUILD.value,
            port=source.port,
            configuration_id=source.configuration_id,
            replica_of_id=source.id,
            task_args=c.sealer.seal(instance_id, CreateArgs([], [])),
            created=now,
            updated=now,
        )
    )
    return instance_id


def refuse_deleting_a_source(s: Session, instance_id: str) -> None:
    """Raises Forbidden while the instance has live replicas (Trove's
    ReplicaSourceDeleteForbidden)."""
    replicas = replicas_of(s, instance_id)
    if replicas:
        raise Forbidden(
            f"Instance {instance_id} has replicas ({', '.join(replicas)}); delete them or "
            "detach them first."
        )
