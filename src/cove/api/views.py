"""Response shapes of the Trove v1.0 API, field for field."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from sqlalchemy.orm import object_session

from cove.common.settings import Settings
from cove.db.backups import store_of
from cove.db.configurations import values_of
from cove.db.instances import access_of, replicas_of
from cove.db.models import (
    Backup,
    Cluster,
    Configuration,
    Datastore,
    DatastoreVersion,
    Flavor,
    GuestState,
    Instance,
)
from cove.db.networks import network_name
from cove.db.replication import group_of
from cove.domain.capabilities import STANDARD_PORTS
from cove.domain.clusters import ClusterTask, Topology, member_type
from cove.domain.parameters import Parameter
from cove.domain.status import StatusView
from cove.domain.wal import Window


def trove_time(ts: datetime | None) -> str | None:
    return ts.strftime("%Y-%m-%dT%H:%M:%S") if ts else None


def links(request: Request, project_id: str, collection: str, item_id: str) -> list[dict[str, str]]:
    host = request.headers.get("host", "localhost")
    return [
        {"rel": "self", "href": f"https://{host}/v1.0/{project_id}/{collection}/{item_id}"},
        {"rel": "bookmark", "href": f"https://{host}/{collection}/{item_id}"},
    ]


def flavor_view(request: Request, project_id: str, flavor: Flavor) -> dict[str, Any]:
    return {
        "id": int(flavor.id) if flavor.id.isdigit() else None,
        "links": links(request, project_id, "flavors", flavor.id),
        "name": flavor.name,
        "ram": flavor.ram,
        "vcpus": flavor.vcpus,
        "disk": flavor.disk,
        "ephemeral": flavor.ephemeral,
        "str_id": flavor.id,
    }


def version_view(
    request: Request, project_id: str, version: DatastoreVersion, nested: bool = False
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "links": links(request, project_id, "datastores/versions", version.id),
    }
    if not nested:
        view["datastore"] = version.datastore_id
        view["active"] = version.active
    return view


def datastore_view(request: Request, project_id: str, ds: Datastore) -> dict[str, Any]:
    versions = [v for v in ds.versions if v.active]
    view: dict[str, Any] = {
        "id": ds.id,
        "name": ds.name,
        "links": links(request, project_id, "datastores", ds.id),
        "versions": [version_view(request, project_id, v, nested=True) for v in versions],
    }
    if ds.default_version_id and any(v.id == ds.default_version_id for v in versions):
        view["default_version"] = ds.default_version_id
    return view


def _addresses(inst: Instance, settings: Settings) -> list[dict[str, Any]]:
    """Trove's ``addresses``, naming the instance's network (by name) when it can be read;
    a published instance's public address comes second, with its port."""
    if not inst.address:
        return []
    entry: dict[str, Any] = {"address": inst.address, "type": "private"}
    session = object_session(inst)
    if inst.network is not None:
        entry["network"] = inst.network.name
    elif session is not None and (name := network_name(session, None)) is not None:
        entry["network"] = name  # a row from before networks: the default network's
    entries = [entry]
    if inst.is_public and inst.public_port is not None:
        entries.append(
            {"address": settings.public_address, "type": "public", "port": inst.public_port}
        )
    return entries


def instance_view(
    request: Request,
    settings: Settings,
    inst: Instance,
    guest: GuestState | None,
    status: StatusView,
    detail: bool,
    admin: bool = False,
) -> dict[str, Any]:
    """Trove's summary view of an instance, or with ``detail`` its detail view; ``admin`` (a
    caller who reaches every project) adds what Trove shows administrators.

    As in Trove, keys that would hold nothing are left out, not sent empty: ``ip`` and
    ``addresses`` until the instance has an address, ``replica_of`` (a replica's source) and
    ``replicas`` (a source's live replicas: clients take an instance with ``replicas`` for a
    replica source), ``cluster_id`` (a cluster member's cluster), ``endpoints`` (a
    replication group's stable read-write and read-only addresses, a Cove extension),
    ``hostname``, ``fault`` and ``configuration``. ``access`` is always there."""
    version = inst.datastore_version
    ds_name = version.datastore.name
    view: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "status": status.status,
        "operating_status": status.operating_status,
        "links": links(request, inst.project_id, "instances", inst.id),
        "flavor": {
            "id": inst.flavor_id,
            "links": links(request, inst.project_id, "flavors", inst.flavor_id),
        },
        "datastore": {"type": ds_name, "version": version.name},
        "region": settings.region,
        "access": access_of(inst).view(),
        "volume": {"size": inst.volume_size},
    }
    addresses = _addresses(inst, settings)
    if addresses:
        view["ip"] = [a["address"] for a in addresses]
        view["addresses"] = addresses
    if inst.cluster_id is not None:
        view["cluster_id"] = inst.cluster_id
    if inst.replica_of_id is not None:
        source = inst.replica_of_id
        view["replica_of"] = {
            "id": source,
            "links": links(request, inst.project_id, "instances", source),
        }
    session = object_session(inst)
    replicas = replicas_of(session, inst.id) if session is not None else []
    if replicas:
        view["replicas"] = [
            {"id": r, "links": links(request, inst.project_id, "instances", r)} for r in replicas
        ]
    group = group_of(session, inst.id) if session is not None else None
    if group is not None and group.rw_address and group.ro_address:
        # A Cove extension: where clients reach the group's primary and its replicas,
        # whichever instance is which after a failover.
        view["endpoints"] = {
            "read_write": f"{group.rw_address}:{inst.port}",
            "read_only": f"{group.ro_address}:{inst.port}",
        }
    if group is not None:
        view["replication"] = {
            "synchronous": group.synchronous,
            "auto_failover": group.auto_failover,
            "weight": inst.replication_weight,
        }
    if admin:
        view["tenant_id"] = inst.project_id
    if inst.port != STANDARD_PORTS.get(ds_name):
        view["port"] = inst.port
    if detail:
        view["datastore"]["version_number"] = version.version
        view["created"] = trove_time(inst.created)
        view["updated"] = trove_time(inst.updated)
        view["service_status_updated"] = trove_time(guest.heartbeat_at if guest else None)
        if inst.fault_message:
            view["fault"] = {
                "message": inst.fault_message,
                "created": trove_time(inst.fault_at),
                "details": "",
            }
        cfg = inst.configuration
        if cfg is not None:
            view["configuration"] = {
                "id": cfg.id,
                "name": cfg.name,
                "links": links(request, inst.project_id, "configurations", cfg.id),
            }
        if admin:
            # The compute driver knows the instance's place by the instance's id; its volume is
            # part of that place, with no id of its own; and bus messages to the guest are not
            # encrypted per instance.
            view["server_id"] = inst.id
            view["volume_id"] = None
            view["encrypted_rpc_messaging"] = False
    return view


#: Values of parameters whose name holds one of these are never shown (Trove masks passwords).
SECRET_MARKERS = ("password", "requirepass", "masterauth")
MASK = "***"


def masked(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with those of secret-looking parameters masked."""
    return {
        k: MASK if any(m in k.lower() for m in SECRET_MARKERS) else v for k, v in values.items()
    }


def parameter_view(param: Parameter, version_id: str) -> dict[str, Any]:
    """Trove's configuration parameter: ``min``/``max`` only when set; Cove adds ``allowed``
    for an enumerated setting."""
    view: dict[str, Any] = {
        "name": param.name,
        "datastore_version_id": version_id,
        "restart_required": param.restart_required,
        "type": param.type.value,
    }
    if param.min is not None:
        view["min"] = param.min
    if param.max is not None:
        view["max"] = param.max
    if param.allowed is not None:
        view["allowed"] = list(param.allowed)
    return view


def configuration_view(
    request: Request, cfg: Configuration, instance_count: int | None = None
) -> dict[str, Any]:
    """A configuration group: the summary, plus ``values`` and ``instance_count`` when
    ``instance_count`` is given (the detail view). The summary also carries
    ``datastore_version_number``, so clients that show it need no request per group."""
    version = cfg.datastore_version
    view: dict[str, Any] = {
        "id": cfg.id,
        "name": cfg.name,
        "description": cfg.description,
        "created": trove_time(cfg.created),
        "updated": trove_time(cfg.updated),
        "datastore_version_id": version.id,
        "datastore_name": version.datastore.name,
        "datastore_version_name": version.name,
        "datastore_version_number": version.version,
        "links": links(request, cfg.project_id, "configurations", cfg.id),
    }
    if instance_count is not None:
        view["values"] = masked(values_of(cfg))
        view["instance_count"] = instance_count
    return view


def paginate(
    request: Request,
    items: list[Any],
    key: Any,
    limit: int | None,
    marker: str | None,
    page_size: int,
) -> tuple[list[Any], list[dict[str, str]] | None]:
    """One page of ``items`` after ``marker`` (a key value), and the ``next`` link if more."""
    size = page_limit(limit, page_size)
    start = 0
    if marker is not None:
        keys = [key(item) for item in items]
        start = keys.index(marker) + 1 if marker in keys else len(items)
    page = items[start : start + size]
    if start + size >= len(items) or not page:
        return page, None
    return page, next_links(request, key(page[-1]), size)


def paged(
    request: Request,
    name: str,
    items: list[Any],
    key: Callable[[Any], str],
    limit: int | None,
    marker: str | None,
    page_size: int,
    view: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Trove's list body: ``{name: page}`` (each item through ``view``) and ``links`` with the
    ``next`` page when more follow."""
    page, links = paginate(request, items, key, limit, marker, page_size)
    body: dict[str, Any] = {name: [view(i) for i in page] if view else page}
    if links:
        body["links"] = links
    return body


def page_limit(limit: int | None, page_size: int) -> int:
    """The size of a page: ``limit`` capped at ``page_size`` (Trove caps silently)."""
    return page_size if limit is None or limit <= 0 else min(limit, page_size)


def next_links(request: Request, marker: str, size: int) -> list[dict[str, str]]:
    """Trove's top-level ``links`` with the ``next`` page after ``marker``."""
    query = dict(request.query_params)
    query.update({"marker": marker, "limit": str(size)})
    host = request.headers.get("host", "localhost")
    href = f"https://{host}{request.url.path}?{urlencode(query)}"
    return [{"rel": "next", "href": href}]


def backup_view(backup: Backup) -> dict[str, Any]:
    """Trove's backup fields; ``size`` in GB (of the stored, compressed artifact) once saved,
    ``locationRef`` where it is saved (``<store>://<container>/<artifact>``), ``fault`` when it
    failed."""
    version = backup.datastore_version
    spec = store_of(backup)
    done = backup.status == "COMPLETED"
    view: dict[str, Any] = {
        "id": backup.id,
        "name": backup.name,
        "description": backup.description,
        "locationRef": f"{spec.kind}://{spec.bucket or spec.prefix}/{backup.artifact}"
        if done
        else None,
        "instance_id": backup.instance_id,
        "created": trove_time(backup.created),
        "updated": trove_time(backup.updated),
        "size": backup.size / 1024**3 if done and backup.size is not None else None,
        "status": backup.status,
        "parent_id": backup.parent_id,
        "project_id": backup.project_id,
        "datastore": {
            "type": version.datastore.name,
            "version": version.name,
            "version_id": version.id,
        },
        "storage_driver": spec.kind,
    }
    if backup.fault_message:
        view["fault"] = {"message": backup.fault_message}
    return view


def restore_window_view(instance_id: str, window: Window | None) -> dict[str, Any]:
    def moment(value: datetime | None) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    return {
        "instance_id": instance_id,
        "earliest": moment(window.earliest if window else None),
        "latest": moment(window.latest if window else None),
    }


def payload_sections(payload: str) -> dict[str, dict[str, Any]]:
    """The sections of a heartbeat's payload (``HeartbeatPayload``) that are objects; none
    for a payload that is not JSON (from an agent of another version, say)."""
    try:
        found = json.loads(payload or "{}")
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, dict)}


#: What ``vitals_view`` shows of each heartbeat section.
_VITAL_KEYS = {
    "vitals": (
        "connections",
        "commits",
        "rollbacks",
        "operations",
        "cache_hits",
        "cache_reads",
        "replication_lag_seconds",
    ),
    "isolation": ("memory_used_mb", "memory_limit_mb", "volume_used_mb", "volume_mb"),
}


def vitals_view(guest: GuestState | None) -> dict[str, Any]:
    """A Cove extension: the server's vital signs (``domain.guest.DatabaseVitals``) and its
    use of memory and volume (``Isolation``) as the last heartbeat told them; null for what it
    did not say (a number of the wrong type included)."""
    sections = payload_sections(guest.payload) if guest is not None else {}
    view: dict[str, Any] = {
        "heartbeat_at": trove_time(guest.heartbeat_at) if guest is not None else None
    }
    for section, keys in _VITAL_KEYS.items():
        found = sections.get(section, {})
        for key in keys:
            value = found.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            view[key] = value if number else None
    return view


def isolation_view(guest: GuestState | None) -> dict[str, Any]:
    """A Cove extension of the management view: what the kernel enforces on the instance, as
    its last heartbeat told (``domain.guest.Isolation``); a limit that is null is not
    enforced (or the guest has not said yet)."""
    view: dict[str, Any] = {
        "memory_limit_mb": None,
        "memory_used_mb": None,
        "oom_kills": None,
        "cpus": None,
        "volume_mb": None,
        "volume_used_mb": None,
        "own_user": False,
    }
    found = payload_sections(guest.payload).get("isolation") if guest is not None else None
    if found is not None:
        for key in (
            "memory_limit_mb",
            "memory_used_mb",
            "oom_kills",
            "volume_mb",
            "volume_used_mb",
        ):
            value = found.get(key)
            view[key] = value if isinstance(value, int) else None
        cpus = found.get("cpus")
        view["cpus"] = cpus if isinstance(cpus, int | float) else None
        view["own_user"] = found.get("own_user") is True
    return view


def member_health(guest: GuestState | None, primary_position: int | None) -> dict[str, Any] | None:
    """A Cove extension on a cluster's member: how its server last saw the cluster (its
    heartbeat's ``cluster``), or for a replica of an active-passive cluster whether it
    streams and how far (``lag_bytes``) it is behind its primary's last known position
    (``primary_position``); None when it did not say."""
    if guest is None:
        return None
    try:
        payload = json.loads(guest.payload or "{}")
    except ValueError:
        return None
    health = payload.get("cluster") if isinstance(payload, dict) else None
    if isinstance(health, dict):
        return {
            "cluster_size": health.get("size"),
            "state": health.get("state"),
            "ready": bool(health.get("ready")),
        }
    replica = payload.get("replica") if isinstance(payload, dict) else None
    if not isinstance(replica, dict):
        return None
    streaming = bool(replica.get("streaming"))
    view: dict[str, Any] = {
        "cluster_size": None,
        "state": "streaming" if streaming else "not streaming",
        "ready": streaming,
    }
    position = replica.get("position")
    if isinstance(position, int) and primary_position is not None:
        view["lag_bytes"] = max(0, primary_position - position)
    return view


def cluster_view(
    request: Request,
    cluster: Cluster,
    task: ClusterTask,
    members: list[tuple[Instance, str, bool]],
    topology: Topology,
    endpoints: tuple[str, str] | None = None,
    primary_position: int | None = None,
) -> dict[str, Any]:
    """Trove's view of a cluster: its task as ``{id, name, description}`` (no top-level
    status), its datastore, and each member (``members``: the instance, its status and
    whether its last heartbeat is recent) with
    ``type``, ``status``, ``flavor``, ``volume``, once it has one ``ip``, and (a Cove
    extension) ``health``: how it last saw the cluster. ``ip`` (the
    load-balanced endpoint), ``locality``, ``extended_properties`` and ``configuration``
    appear when set."""
    project_id = cluster.project_id
    version = cluster.datastore_version
    view: dict[str, Any] = {
        "id": cluster.id,
        "name": cluster.name,
        "task": {
            "id": task.value.id,
            "name": task.value.name,
            "description": task.value.description,
        },
        "created": trove_time(cluster.created),
        "updated": trove_time(cluster.updated),
        "links": links(request, project_id, "clusters", cluster.id),
        "datastore": {"type": version.datastore.name, "version": version.name},
        "instances": [
            _member_view(request, inst, status, topology, fresh, primary_position)
            for inst, status, fresh in members
        ],
    }
    if cluster.address:
        # The load-balanced endpoint, on the datastore's port, as Trove shows a cluster's ip.
        view["ip"] = [cluster.address]
    if topology is Topology.SHARDED:
        # Cluster-aware clients start from any member and follow the cluster's redirections.
        view["ip"] = [inst.address for inst, _, _ in members if inst.address]
    if endpoints is not None:
        # An active-passive cluster is a replication group: its ip is the read-write
        # endpoint, and (a Cove extension) both endpoints with their port.
        port = members[0][0].port if members else 0
        view["ip"] = [endpoints[0]]
        view["endpoints"] = {
            "read_write": f"{endpoints[0]}:{port}",
            "read_only": f"{endpoints[1]}:{port}",
        }
    if cluster.locality:
        view["locality"] = cluster.locality
    if cluster.extended_properties:
        view["extended_properties"] = json.loads(cluster.extended_properties)
    if cluster.configuration_id:
        view["configuration"] = cluster.configuration_id
    return view


def _member_view(
    request: Request,
    inst: Instance,
    status: str,
    topology: Topology,
    fresh: bool,
    primary_position: int | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "type": member_type(topology, inst.replica_of_id is not None),
        "status": status,
        "links": links(request, inst.project_id, "instances", inst.id),
        "flavor": {
            "id": inst.flavor_id,
            "links": links(request, inst.project_id, "flavors", inst.flavor_id),
        },
        "volume": {"size": inst.volume_size},
    }
    if inst.address is not None:
        item["ip"] = [inst.address]
    health = member_health(inst.guest, primary_position) if fresh else None
    if health is not None:
        item["health"] = health
    if topology is Topology.ACTIVE_PASSIVE:
        item["weight"] = inst.replication_weight
    return item
