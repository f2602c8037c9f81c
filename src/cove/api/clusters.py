"""The cluster workflows behind ``/clusters``: create, delete and the actions.

A cluster's members are instances of the project, recorded with the cluster in one
transaction that locks the project (each member counts against its quotas) and built by the
task managers as any instance is (cove.taskmanager.clusters says how each joins). An
active-passive cluster's members are a replication group: the first is the primary, the
others its replicas with their promotion weights, failed over as any group is. What a
datastore's clusters need (the fewest members, one flavor and volume for all) is in
``cove.domain.clusters``.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.guest import check_ready
from cove.api.instances import (
    attach_configuration,
    detach_configuration,
    resolve_version,
    tell_task_managers,
)
from cove.api.schemas import ClusterCreate, ClusterMemberIn
from cove.api.validate import checked, checked_text
from cove.common.errors import (
    BadRequest,
    CoveError,
    InstanceNotReady,
    NotImplementedFault,
    VolumeSizeTooLarge,
)
from cove.common.ids import new_id, utcnow
from cove.common.text import shown
from cove.db.catalog import find_flavor
from cove.db.clusters import get_cluster, members, settle_deleted, task_of
from cove.db.configurations import check_same_version, find_configuration
from cove.db.instances import transition
from cove.db.models import Cluster, DatastoreVersion, Flavor, Instance
from cove.db.networks import resolve_network
from cove.db.quotas import check_instance_quota, lock_project
from cove.db.replication import ensure_group
from cove.db.sealed import CreateArgs
from cove.domain import names
from cove.domain.capabilities import STANDARD_PORTS, Capability
from cove.domain.clusters import RULES, ClusterRules, ClusterSecret, ClusterTask, Topology
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext

LOG = logging.getLogger(__name__)

#: The most members one cluster may have: a Galera cluster's every commit is certified by
#: each member, and beyond this size it only slows down.
MAX_MEMBERS = 16
#: Trove's two placement policies.
LOCALITIES = ("affinity", "anti-affinity")
#: The largest ``extended_properties`` object Cove keeps, as JSON.
MAX_PROPERTIES_BYTES = 4096


def create_cluster(c: ApiContext, ctx: RequestContext, project_id: str, spec: ClusterCreate) -> str:
    """Record a new BUILDING cluster and its members and hand their builds to the task
    managers; returns the cluster's id.

    Raises BadRequest (what the request asks cannot make a cluster), NotImplementedFault (a
    datastore without clusters, modules, availability zones), FlavorNotFound,
    DatastoreNotFound, DatastoreVersionNotFound, NotFound (no such configuration group),
    VolumeSizeTooLarge and QuotaExceeded.
    """
    checked(names.instance_name, spec.name)
    if spec.datastore is None or not spec.datastore.type or not spec.datastore.version:
        raise BadRequest(
            "A cluster needs its datastore's type and version: "
            '"datastore": {"type": ..., "version": ...}.'
        )
    checked_text(spec.datastore.type, "datastore type")
    checked_text(spec.datastore.version, "datastore version")
    locality = _locality(spec.locality)
    properties = _properties(spec.extended_properties)
    cluster_id = new_id()
    with c.db.session() as s:
        lock_project(s, project_id)  # the quota counts concurrent creates
        version = resolve_version(s, c, spec.datastore)
        wanted = _rules(version)
        flavor, size = _uniform(s, c, wanted, spec.instances)
        network_id = _network(s, spec.instances)
        configuration_id = None
        if spec.configuration is not None:
            group = find_configuration(
                s, checked_text(spec.configuration, "configuration"), project_id
            )
            check_same_version(group, version)
            configuration_id = group.id
        now = utcnow()
        s.add(
            Cluster(
                id=cluster_id,
                project_id=project_id,
                name=spec.name,
                datastore_version_id=version.id,
                task=ClusterTask.BUILDING.name,
                task_started_at=now,
                locality=locality,
                extended_properties=properties,
                configuration_id=configuration_id,
                created=now,
                updated=now,
                deleted=False,
            )
        )
        s.flush()
        cluster = get_cluster(s, cluster_id)
        if wanted.topology is Topology.SHARDED:
            secret = ClusterSecret(secrets.token_urlsafe(32))
            cluster.secret = c.sealer.seal(cluster_id, secret)
        ids = _add_members(c, s, cluster, spec.instances, flavor, size, network_id, 0)
        if wanted.topology is Topology.ACTIVE_PASSIVE:
            _replicate(s, ids[0], ids, spec.instances)
    _build(c, ctx, ids)
    return cluster_id


def _add_members(
    c: ApiContext,
    s: Session,
    cluster: Cluster,
    items: list[ClusterMemberIn],
    flavor: Flavor,
    size: int,
    network_id: str,
    first_index: int,
) -> list[str]:
    """Record a BUILDING member per item, numbered from ``first_index``, within the
    project's quotas (the caller locked the project); their ids."""
    ids = []
    now = utcnow()
    version = cluster.datastore_version
    for n, item in enumerate(items):
        index = first_index + n
        check_instance_quota(s, c.settings, cluster.project_id, ram=flavor.ram, volume=size)
        member_id = new_id()
        s.add(
            Instance(
                id=member_id,
                project_id=cluster.project_id,
                name=item.name or f"{cluster.name}-member-{index + 1}",
                flavor_id=flavor.id,
                datastore_version_id=version.id,
                volume_size=size,
                network_id=network_id,
                compute_driver=c.settings.compute_driver,
                task=Task.BUILDING.value,
                task_started_at=now,
                compute_state=ComputeState.BUILD.value,
                port=STANDARD_PORTS[version.manager],
                configuration_id=cluster.configuration_id,
                cluster_id=cluster.id,
                cluster_index=index,
                task_args=c.sealer.seal(member_id, CreateArgs([], [])),
                created=now,
                updated=now,
            )
        )
        s.flush()  # counted by the next quota check
        ids.append(member_id)
    return ids


def _replicate(s: Session, primary_id: str, ids: list[str], items: list[ClusterMemberIn]) -> None:
    """Make the members of an active-passive cluster a replication group: every one but
    ``primary_id`` a replica of it, each with its promotion weight (cove.api.replicas)."""
    for member_id, item in zip(ids, items, strict=True):
        inst = s.get(Instance, member_id)
        assert inst is not None
        if member_id != primary_id:
            inst.replica_of_id = primary_id
        if item.weight is not None:
            inst.replication_weight = item.weight
    ensure_group(s, primary_id, utcnow())


def _build(c: ApiContext, ctx: RequestContext, ids: list[str]) -> None:
    for member_id in ids:
        tell_task_managers(
            member_id, "build", functools.partial(c.taskmanager.create_instance, ctx, member_id)
        )


def _rules(version: DatastoreVersion) -> ClusterRules:
    wanted = RULES.get(version.manager)
    if wanted is None:
        # Trove's answer for a datastore without clusters.
        raise NotImplementedFault(
            f"Clusters not supported for {version.datastore.name}-{version.name}."
        )
    return wanted


def _locality(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in LOCALITIES:
        raise BadRequest(f"Locality must be one of {', '.join(LOCALITIES)}; got '{shown(value)}'.")
    if value == "anti-affinity":
        # Honest rather than silent: every member would share the one host.
        raise BadRequest(
            "Cove's compute driver places every instance on one host: 'anti-affinity' "
            "cannot be honoured."
        )
    return value


def _properties(value: dict[str, Any] | None) -> str | None:
    if not value:
        return None
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PROPERTIES_BYTES:
        raise BadRequest(f"'extended_properties' may hold at most {MAX_PROPERTIES_BYTES} bytes.")
    checked_text(text, "extended_properties")
    return text


def _uniform(
    s: Session, c: ApiContext, wanted: ClusterRules, items: list[ClusterMemberIn]
) -> tuple[Flavor, int]:
    """The members' one flavor and volume size. Raises BadRequest, NotImplementedFault,
    FlavorNotFound, VolumeSizeTooLarge."""
    if not wanted.min_members <= len(items) <= MAX_MEMBERS:
        raise BadRequest(
            f"A cluster of this datastore has from {wanted.min_members} to {MAX_MEMBERS} "
            f"instances; {len(items)} were given."
        )
    return _sizes(s, c, wanted, items)


def _sizes(
    s: Session, c: ApiContext, wanted: ClusterRules, items: list[ClusterMemberIn]
) -> tuple[Flavor, int]:
    if not items:
        raise BadRequest("Name at least one instance.")
    flavors: set[str] = set()
    sizes: set[int] = set()
    for n, item in enumerate(items, start=1):
        if item.name is not None:
            checked(names.instance_name, item.name)
        if item.modules:
            raise NotImplementedFault("Modules ('modules') are not supported by Cove yet.")
        if item.availability_zone:
            raise NotImplementedFault(
                "Availability zones ('availability_zone') are not supported by Cove yet."
            )
        if item.weight is not None and not wanted.weighted:
            raise BadRequest(
                "'weight' orders the promotion of an active-passive cluster's members; "
                "every member of this datastore's clusters takes writes."
            )
        if item.flavorRef is None or item.flavorRef == "":
            raise BadRequest(f"Instance {n} of the cluster needs a flavor ('flavorRef').")
        if item.volume is None:
            raise BadRequest(f"Instance {n} of the cluster needs a volume size ('volume').")
        flavors.add(find_flavor(s, checked_text(str(item.flavorRef), "flavorRef")).id)
        sizes.add(item.volume.gigabytes)
    if len(flavors) > 1:
        raise BadRequest("The flavor for each instance in a cluster must be the same.")
    if len(sizes) > 1:
        raise BadRequest("The volume size for each instance in a cluster must be the same.")
    size = sizes.pop()
    if size > c.settings.max_volume_size:
        raise VolumeSizeTooLarge(
            f"Volume 'size' cannot exceed maximum of {c.settings.max_volume_size} GB, "
            f"{size} cannot be accepted."
        )
    return find_flavor(s, next(iter(flavors))), size


def _network(s: Session, items: list[ClusterMemberIn]) -> str:
    """The one network the members ask for (``net-id`` or ``nics``; the default one when
    none does). Raises BadRequest."""
    chosen: set[str] = set()
    for item in items:
        if item.net_id is not None and item.nics:
            raise BadRequest("Give a member's network as 'net-id' or as 'nics', not both.")
        nics = [{"net-id": item.net_id}] if item.net_id is not None else item.nics
        chosen.add(resolve_network(s, nics).id)
    if len(chosen) > 1:
        raise BadRequest("Every instance of a cluster must be on the same network.")
    return chosen.pop()


def delete_cluster(c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str) -> None:
    """Start deleting the cluster and every member (again, if it is being deleted already).
    Raises ClusterNotFound, InstanceNotReady (the cluster or a member is busy)."""
    with c.db.session() as s:
        lock_project(s, project_id)
        cluster = get_cluster(s, cluster_id, project_id)
        task = task_of(s, cluster)
        if task not in (ClusterTask.NONE, ClusterTask.DELETING):
            raise InstanceNotReady(
                f"Cluster {cluster_id} is not ready (its task is {task.value.name}); try "
                "again once it ends."
            )
        now = utcnow()
        cluster.task = ClusterTask.DELETING.name
        cluster.updated = now
        ids = [m.id for m in members(s, cluster_id)]
        allowed: set[Task] = {t for t in Task if t is not Task.BUILDING}
        for member_id in ids:
            if not transition(s, member_id, allowed, Task.DELETING, now):
                raise InstanceNotReady(f"Member {member_id} of the cluster is busy; try again.")
        if not ids:
            settle_deleted(s, cluster_id, now)
    for member_id in ids:
        tell_task_managers(
            member_id, "deletion", functools.partial(c.taskmanager.delete_instance, ctx, member_id)
        )


def act(c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, body: Any) -> None:
    """Run the one action ``body`` names. Raises BadRequest (not exactly one action, an
    unknown one, arguments it cannot take), ClusterNotFound, InstanceNotReady (the cluster is
    busy), QuotaExceeded (grow), NotImplementedFault (an action Cove does not have yet)."""
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("A cluster action request names exactly one action.")
    ((name, args),) = body.items()
    with c.db.session() as s:
        get_cluster(s, cluster_id, project_id)
    if name == "grow":
        _grow(c, ctx, project_id, cluster_id, args)
    elif name == "shrink":
        _shrink(c, ctx, project_id, cluster_id, args)
    elif name == "restart":
        _restart(c, ctx, project_id, cluster_id, args)
    elif name == "configuration_attach":
        _attach(c, ctx, project_id, cluster_id, args)
    elif name == "configuration_detach":
        _detach(c, ctx, project_id, cluster_id, args)
    elif name == "upgrade":
        raise NotImplementedFault("Upgrading a cluster is not supported by Cove yet.")
    else:
        raise BadRequest(f"Unknown cluster action '{shown(str(name))}'.")


def _idle(s: Session, cluster: Cluster, leaving: frozenset[str] = frozenset()) -> list[Instance]:
    """The cluster's members, once it and every one of them are free for a new task (the
    members in ``leaving``, which a shrink deletes, may also have failed). Raises
    InstanceNotReady."""
    task = task_of(s, cluster)
    if task is not ClusterTask.NONE:
        raise InstanceNotReady(
            f"Cluster {cluster.id} is not ready (its task is {task.value.name}); try again "
            "once it ends."
        )
    everyone = members(s, cluster.id)
    failed = {Task.NONE.value, Task.BUILD_ERROR.value, Task.DELETE_ERROR.value}
    busy = [
        m.id
        for m in everyone
        if m.task != Task.NONE.value and not (m.id in leaving and m.task in failed)
    ]
    if busy:
        raise InstanceNotReady(
            f"Cluster {cluster.id} is not ready: member {busy[0]} is busy or failed; reset or "
            "shrink it first."
        )
    return everyone


def _begin(cluster: Cluster, task: ClusterTask) -> None:
    now = utcnow()
    cluster.task = task.name
    cluster.task_started_at = now
    cluster.updated = now


def _grow(c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, args: Any) -> None:
    """Add the members ``args`` lists (Trove's instance items), each joining as a new member
    does, with the flavor and volume of the members there."""
    if not isinstance(args, list):
        raise BadRequest('grow takes a list of instances: {"grow": [{"flavorRef": ...}]}.')
    try:
        items = [ClusterMemberIn.model_validate(item) for item in args]
    except ValidationError as exc:
        raise BadRequest(f"An instance of 'grow' is not valid: {_first_error(exc)}") from None
    with c.db.session() as s:
        lock_project(s, project_id)
        cluster = get_cluster(s, cluster_id, project_id)
        everyone = _idle(s, cluster)
        wanted = _rules(cluster.datastore_version)
        _movable(wanted, "Growing")
        if len(everyone) + len(items) > MAX_MEMBERS:
            raise BadRequest(f"A cluster has at most {MAX_MEMBERS} instances.")
        flavor, size = _sizes(s, c, wanted, items)
        if (flavor.id, size) != (everyone[0].flavor_id, everyone[0].volume_size):
            raise BadRequest(
                "The flavor and volume size of a new instance must be the cluster's: "
                f"flavor {everyone[0].flavor_id}, volume {everyone[0].volume_size} GB."
            )
        network_id = everyone[0].network_id
        named = any(item.net_id is not None or item.nics for item in items)
        if network_id is None or (named and _network(s, items) != network_id):
            raise BadRequest("A new instance must be on the cluster's network.")
        first = max(m.cluster_index or 0 for m in everyone) + 1
        _begin(cluster, ClusterTask.GROWING_CLUSTER)
        ids = _add_members(c, s, cluster, items, flavor, size, network_id, first)
        if wanted.topology is Topology.ACTIVE_PASSIVE:
            primary = next(m.id for m in everyone if m.replica_of_id is None)
            _replicate(s, primary, ids, items)
    _build(c, ctx, ids)


def _movable(wanted: ClusterRules, doing: str) -> None:
    """Raises NotImplementedFault for a sharded cluster: a member that comes or goes moves
    hash slots and their keys, which Cove does not do yet."""
    if wanted.topology is Topology.SHARDED:
        raise NotImplementedFault(
            f"{doing} a sharded cluster (moving its slots and keys) is not supported by Cove yet."
        )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _shrink(
    c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, args: Any
) -> None:
    """Delete the members ``args`` names (``[{"id": ...}]``), keeping at least what the
    datastore needs to stay safe."""
    if not isinstance(args, list) or not args:
        raise BadRequest('shrink takes a list of members: {"shrink": [{"id": "<instance>"}]}.')
    if not all(isinstance(item, dict) and isinstance(item.get("id"), str) for item in args):
        raise BadRequest('Each item of shrink names a member: {"id": "<instance>"}.')
    gone = {checked_text(item["id"], "id") for item in args}
    with c.db.session() as s:
        lock_project(s, project_id)
        cluster = get_cluster(s, cluster_id, project_id)
        everyone = _idle(s, cluster, frozenset(gone))
        unknown = sorted(gone - {m.id for m in everyone})
        if unknown:
            raise BadRequest(
                f"Instance {shown(unknown[0])} is not a member of cluster {cluster_id}."
            )
        wanted = _rules(cluster.datastore_version)
        _movable(wanted, "Shrinking")
        primaries = [m.id for m in everyone if m.id in gone and m.replica_of_id is None]
        if wanted.topology is Topology.ACTIVE_PASSIVE and primaries:
            raise BadRequest(
                f"Member {primaries[0]} is the cluster's primary: promote another member "
                "first (promote_to_replica_source), then shrink it away."
            )
        left = len(everyone) - len(gone)
        if left < wanted.min_members:
            raise BadRequest(
                f"Shrinking would leave {left} member(s); a cluster of this datastore keeps "
                f"at least {wanted.min_members} to survive the loss of one."
            )
        _begin(cluster, ClusterTask.SHRINKING_CLUSTER)
        now = utcnow()
        for member_id in sorted(gone):
            leaving = {Task.NONE, Task.BUILD_ERROR, Task.DELETE_ERROR}
            if not transition(s, member_id, leaving, Task.DELETING, now):
                raise InstanceNotReady(f"Member {member_id} of the cluster is busy; try again.")
    for member_id in sorted(gone):
        tell_task_managers(
            member_id, "deletion", functools.partial(c.taskmanager.delete_instance, ctx, member_id)
        )


def _restart(
    c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, args: Any
) -> None:
    """Restart the members one at a time (cove.taskmanager.restart): the cluster keeps
    serving through the others, the one restarting out of its endpoint's rotation. Raises
    BadRequest, ClusterNotFound, InstanceNotReady."""
    if args not in ({}, None):
        raise BadRequest('restart takes no arguments: {"restart": {}}.')
    with c.db.session() as s:
        lock_project(s, project_id)  # one change of the project's clusters at a time
        cluster = get_cluster(s, cluster_id, project_id)
        first = _idle(s, cluster)[0]
        _begin(cluster, ClusterTask.RESTARTING_CLUSTER)
        if not transition(s, first.id, {Task.NONE}, Task.REBOOTING, utcnow()):
            raise InstanceNotReady(f"Member {first.id} of the cluster is busy; try again.")
    tell_task_managers(
        first.id, "restart", functools.partial(c.taskmanager.restart_instance, ctx, first.id)
    )


def reset_cluster(c: ApiContext, project_id: str, cluster_id: str) -> None:
    """End whatever task was asked of the cluster (an administrator's way out); its members'
    own tasks are reset one by one (``reset_status`` on each). Raises ClusterNotFound."""
    with c.db.session() as s:
        cluster = get_cluster(s, cluster_id, project_id)
        cluster.task = ClusterTask.NONE.name
        cluster.updated = utcnow()


def _attach(
    c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, args: Any
) -> None:
    """Attach a configuration group to every member, one after the other, each given its
    values before the next (a value that needs a restart waits for the cluster's rolling
    restart); when one refuses, those attached before it are detached again. The cluster
    records the group first, so a member added meanwhile gets it too. Raises BadRequest,
    ClusterNotFound, NotFound (no such group), InstanceNotReady, and what a member's attach
    raises."""
    if not isinstance(args, dict) or not isinstance(args.get("configuration_id"), str):
        raise BadRequest(
            'configuration_attach takes {"configuration_id": "<configuration group>"}.'
        )
    ref = checked_text(args["configuration_id"], "configuration_id")
    with c.db.session() as s:
        lock_project(s, project_id)
        cluster = get_cluster(s, cluster_id, project_id)
        ids = [m.id for m in _idle(s, cluster)]
        group = find_configuration(s, ref, project_id)
        check_same_version(group, cluster.datastore_version)
        if cluster.configuration_id is not None:
            raise BadRequest(
                f"Cluster {cluster_id} already has configuration group "
                f"{cluster.configuration_id} attached; detach it first."
            )
        group_id = group.id
        cluster.configuration_id = group_id
    done: list[str] = []
    try:
        for member_id in ids:
            attach_configuration(c, ctx, project_id, member_id, group_id, None)
            done.append(member_id)
    except CoveError:
        for member_id in done:
            try:
                detach_configuration(c, ctx, project_id, member_id, None)
            except CoveError as exc:
                LOG.error("cannot detach the group from member %s again: %s", member_id, exc)
        with c.db.session() as s:
            get_cluster(s, cluster_id).configuration_id = None
        raise


def _detach(
    c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, args: Any
) -> None:
    """Detach the cluster's configuration group from every member. Raises BadRequest,
    ClusterNotFound, InstanceNotReady, and what a member's detach raises."""
    if args not in ({}, None):
        raise BadRequest('configuration_detach takes no arguments: {"configuration_detach": {}}.')
    with c.db.session() as s:
        lock_project(s, project_id)
        cluster = get_cluster(s, cluster_id, project_id)
        ids = [m.id for m in _idle(s, cluster)]
        cluster.configuration_id = None  # a member added meanwhile gets none
    for member_id in ids:
        detach_configuration(c, ctx, project_id, member_id, None)


def _root_members(c: ApiContext, project_id: str, cluster_id: str) -> list[str]:
    """The members root is enabled on: one serving member that takes writes where the
    cluster replicates accounts (Galera; an active-passive cluster's primary), every member
    of a sharded cluster (Redis keeps accounts per server). Raises ClusterNotFound,
    InstanceNotReady."""
    with c.db.session() as s:
        cluster = get_cluster(s, cluster_id, project_id)
        everyone = members(s, cluster_id)
        wanted = RULES.get(cluster.datastore_version.manager)
    if wanted is not None and wanted.topology is Topology.SHARDED:
        busy = [m.id for m in everyone if m.task != Task.NONE.value]
        if busy:
            raise InstanceNotReady(f"Member {busy[0]} of the cluster is busy; try again later.")
        return [m.id for m in everyone]
    ready = [m.id for m in everyone if m.task == Task.NONE.value and m.replica_of_id is None]
    if not ready:
        raise InstanceNotReady(f"Cluster {cluster_id} has no member ready; try again later.")
    return ready[:1]


def root_enabled(c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str) -> bool:
    """Whether root can log in to the cluster. Raises ClusterNotFound, InstanceNotReady,
    and what the guest raises."""
    member = _root_members(c, project_id, cluster_id)[0]
    check_ready(c, project_id, member, Capability.ROOT)
    return c.guest(member).is_root_enabled(ctx)


def enable_root(
    c: ApiContext, ctx: RequestContext, project_id: str, cluster_id: str, password: str
) -> str:
    """Enable root with ``password`` on the cluster (where it does not replicate accounts,
    on every member: when one refuses, root is disabled again on those done before it);
    the account's name. Raises ClusterNotFound, InstanceNotReady, and what the guest
    raises."""
    chosen = _root_members(c, project_id, cluster_id)
    for member in chosen:
        check_ready(c, project_id, member, Capability.ROOT, writes=True)
    done: list[str] = []
    try:
        for member in chosen:
            name = c.guest(member).enable_root(ctx, password).name
            done.append(member)
    except CoveError:
        for member in done:
            try:
                c.guest(member).disable_root(ctx)
            except CoveError as exc:
                LOG.error("cannot disable root on member %s again: %s", member, exc)
        raise
    return name
