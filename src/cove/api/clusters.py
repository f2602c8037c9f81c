"""The cluster workflows behind ``/clusters``: create, delete and the actions.

A cluster's members are instances of the project, recorded with the cluster in one
transaction that locks the project (each member counts against its quotas) and built by the
task managers as any instance is (cove.taskmanager.clusters says how each joins). What a
datastore's clusters need (the fewest members, one flavor and volume for all) is in
``cove.domain.clusters``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy.orm import Session

from cove.api.context import ApiContext
from cove.api.instances import resolve_version, tell_task_managers
from cove.api.schemas import ClusterCreate, ClusterMemberIn
from cove.api.validate import checked, checked_text
from cove.common.errors import (
    BadRequest,
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
from cove.db.sealed import CreateArgs
from cove.domain import names
from cove.domain.capabilities import STANDARD_PORTS
from cove.domain.clusters import ClusterRules, ClusterTask, rules
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext

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
        ids = []
        for index, item in enumerate(spec.instances):
            check_instance_quota(s, c.settings, project_id, ram=flavor.ram, volume=size)
            member_id = new_id()
            s.add(
                Instance(
                    id=member_id,
                    project_id=project_id,
                    name=item.name or f"{spec.name}-member-{index + 1}",
                    flavor_id=flavor.id,
                    datastore_version_id=version.id,
                    volume_size=size,
                    network_id=network_id,
                    compute_driver=c.settings.compute_driver,
                    task=Task.BUILDING.value,
                    task_started_at=now,
                    compute_state=ComputeState.BUILD.value,
                    port=STANDARD_PORTS[version.manager],
                    configuration_id=configuration_id,
                    cluster_id=cluster_id,
                    cluster_index=index,
                    task_args=c.sealer.seal(member_id, CreateArgs([], [])),
                    created=now,
                    updated=now,
                )
            )
            s.flush()  # counted by the next quota check
            ids.append(member_id)
    for member_id in ids:
        tell_task_managers(
            member_id, "build", functools.partial(c.taskmanager.create_instance, ctx, member_id)
        )
    return cluster_id


def _rules(version: DatastoreVersion) -> ClusterRules:
    wanted = rules(version.manager)
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
        if item.weight is not None:
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
    if wanted.uniform and len(flavors) > 1:
        raise BadRequest("The flavor for each instance in a cluster must be the same.")
    if wanted.uniform and len(sizes) > 1:
        raise BadRequest("The volume size for each instance in a cluster must be the same.")
    size = max(sizes)
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
    unknown one), ClusterNotFound, NotImplementedFault (an action Cove does not have yet)."""
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("A cluster action request names exactly one action.")
    (name,) = body
    with c.db.session() as s:
        get_cluster(s, cluster_id, project_id)
    if name == "upgrade":
        raise NotImplementedFault("Upgrading a cluster is not supported by Cove yet.")
    if name in ("grow", "shrink", "restart", "configuration_attach", "configuration_detach"):
        raise NotImplementedFault(f"The cluster action '{name}' is not supported by Cove yet.")
    raise BadRequest(f"Unknown cluster action '{shown(str(name))}'.")


def reset_cluster(c: ApiContext, project_id: str, cluster_id: str) -> None:
    """End whatever task was asked of the cluster (an administrator's way out); its members'
    own tasks are reset one by one (``reset_status`` on each). Raises ClusterNotFound."""
    with c.db.session() as s:
        cluster = get_cluster(s, cluster_id, project_id)
        cluster.task = ClusterTask.NONE.name
        cluster.updated = utcnow()
