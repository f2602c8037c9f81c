"""Replicas behind ``/instances``: creating them (``replica_of``, ``replica_count``), what the
instance views say of them, detaching one, and what a replica or a source refuses.

A replica takes its datastore version, flavor and volume size from its source, and its
databases and users are the source's (the server copies them): a request naming any of these
is refused, as Trove refuses it. It joins its source's network and gets its source's
configuration group unless the request names others. Each replica is an instance
of the project, counted against its quotas, built by the task managers from a copy of the
source (cove.taskmanager.replicas).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready, require
from cove.api.schemas import InstanceCreate
from cove.api.validate import checked, checked_text
from cove.common.errors import BadRequest, Forbidden, InstanceNotReady
from cove.common.ids import new_id, utcnow
from cove.db.clusters import refuse_member
from cove.db.configurations import check_same_version, find_configuration
from cove.db.instances import access_of, get_instance, replicas_of, store_access
from cove.db.models import Instance
from cove.db.networks import resolve_network
from cove.db.quotas import check_instance_quota, lock_project
from cove.db.replication import ensure_group
from cove.db.sealed import CreateArgs
from cove.domain.access import Access, parse_access
from cove.domain.capabilities import Capability
from cove.domain.names import INSTANCE_NAME_MAX
from cove.domain.status import ComputeState, Task

#: Replicas one request may create (Trove's bound).
MAX_REPLICA_COUNT = 3

#: What a replica takes from its source: a request naming any of these is refused (Trove's
#: rule). ``nics`` and ``configuration`` may be given: they replace the source's.
_FROM_SOURCE = (
    ("flavorRef", "flavor"),
    ("volume", "volume"),
    ("datastore", "datastore"),
    ("databases", "databases"),
    ("users", "users"),
    ("restorePoint", "restorePoint"),
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
    if count > 1 and len(replica_name(spec.name, count, count)) > INSTANCE_NAME_MAX:
        raise BadRequest(
            f"With replica_count {count}, the name has at most {INSTANCE_NAME_MAX - 2} characters "
            "(the replicas are named <name>-1 to <name>-<count>)."
        )
    return count


def replica_name(name: str, n: int, count: int) -> str:
    """The name of the ``n``-th (from 1) of ``count`` replicas asked as ``name`` (Trove's
    naming: a suffix only when there are several)."""
    return name if count == 1 else f"{name}-{n}"


def record_replicas(
    c: ApiContext,
    project_id: str,
    spec: InstanceCreate,
    source_id: str,
    count: int,
) -> list[str]:
    """Record ``count`` BUILDING replicas of the project's instance ``source_id`` within its
    quotas (named ``spec.name``, or ``<name>-1`` to ``<name>-<count>`` when several), on the
    source's network and with its configuration group unless the request names others, and
    letting in whom the source lets in, unpublished, unless the request's ``access`` says
    otherwise (a key it leaves out is the source's); returns their ids.

    Raises InstanceNotFound, OperationNotSupported (a datastore without replication),
    BadRequest (a replica as the source, an unusable network, a group of another version),
    NotFound (no such group), InstanceNotReady (the source is not serving) and QuotaExceeded.
    """
    with c.db.session() as s:
        source = get_instance(s, source_id, project_id)
        refuse_member(source, "replication of a member")
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
        if source.task != Task.NONE.value:  # a deletion (or another task) began meanwhile
            raise InstanceNotReady(f"Instance {source_id} is not ready. (Status is busy).")
        network_id = resolve_network(s, spec.nics).id if spec.nics else source.network_id
        configuration_id = source.configuration_id
        if spec.configuration is not None:
            group = find_configuration(
                s, checked_text(spec.configuration, "configuration"), project_id
            )
            check_same_version(group, source.datastore_version)
            configuration_id = group.id
        # Over the source's networks, unpublished: a replica is not published by inheritance.
        inherited = Access(allowed_cidrs=access_of(source).allowed_cidrs)
        access = inherited
        if spec.access is not None:
            access = checked(lambda given: parse_access(given, inherited), spec.access)
        ensure_group(s, source_id, utcnow())
        for n in range(1, count + 1):
            check_instance_quota(
                s, c.settings, project_id, ram=source.flavor.ram, volume=source.volume_size
            )
            name = replica_name(spec.name, n, count)
            ids.append(_add(c, s, source, name, network_id, configuration_id, access))
            s.flush()  # counted by the next quota check
    return ids


def _add(
    c: ApiContext,
    s: Session,
    source: Instance,
    name: str,
    network_id: str | None,
    configuration_id: str | None,
    access: Access,
) -> str:
    instance_id = new_id()
    now = utcnow()
    inst = Instance(
        id=instance_id,
        project_id=source.project_id,
        name=name,
        flavor_id=source.flavor_id,
        datastore_version_id=source.datastore_version_id,
        volume_size=source.volume_size,
        network_id=network_id,
        compute_driver=c.settings.compute_driver,
        task=Task.BUILDING.value,
        task_started_at=now,
        compute_state=ComputeState.BUILD.value,
        port=source.port,
        configuration_id=configuration_id,
        replica_of_id=source.id,
        task_args=c.sealer.seal(instance_id, CreateArgs([], [])),
        created=now,
        updated=now,
    )
    store_access(inst, access)
    s.add(inst)
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


def check_replication_request(spec: InstanceCreate) -> None:
    """Refuse the ``replication`` settings a create cannot take. Raises BadRequest."""
    wanted = spec.replication
    if wanted is None:
        return
    if wanted.synchronous is not None:
        raise BadRequest(
            "Synchronous mode is set on a group whose replicas serve (PUT /instances/{id} "
            "with 'replication'): a primary in synchronous mode waits for a replica to hold "
            "every commit."
        )
    if wanted.auto_failover is not None and spec.replica_of is None:
        raise BadRequest("'auto_failover' applies to a replication group: give 'replica_of'.")


def record_replication(c: ApiContext, ids: list[str], spec: InstanceCreate) -> None:
    """Record the new instances' promotion weight and their group's automatic failover."""
    wanted = spec.replication
    if wanted is None:
        return
    with c.db.session() as s:
        for instance_id in ids:
            inst = get_instance(s, instance_id)
            if wanted.weight is not None:
                inst.replication_weight = wanted.weight
            if wanted.auto_failover is not None and inst.replica_of_id is not None:
                ensure_group(s, inst.replica_of_id, utcnow()).auto_failover = wanted.auto_failover
