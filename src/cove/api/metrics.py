"""The API's share of the control plane's metrics (``cove.common.metrics``): each request
counted under its route's template; and, read from the control database at each scrape, the
instances by status and each instance's vital signs as its last heartbeat told them."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, select
from sqlalchemy.orm import joinedload
from starlette.routing import Mount
from starlette.types import Scope

from cove.api.context import ApiContext
from cove.api.views import payload_sections
from cove.common.ids import utcnow
from cove.db.instances import status_counts
from cove.db.models import DatastoreVersion, GuestState, Instance

LOG = logging.getLogger(__name__)

#: The route label of a request no route of the API matches.
UNMATCHED = "unmatched"


def route_of(app: Any, scope: Scope) -> str:
    """The template of the route that serves (or would have served) the request: its own
    once routed; else, for a request refused before routing (no token, a malformed body),
    the first template of the app's routes that the path matches; UNMATCHED for a path the
    API does not have. Never the path itself: ids would make a label per instance."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "route_table", None)
    if table is None:
        # The schema's templates (the included routers' routes), then the app's own routes
        # that the schema leaves out (the documentation pages): once per app.
        templates = [*app.openapi().get("paths", {})]
        for route in app.router.routes:
            if isinstance(route, Mount):
                templates.append(f"{route.path}/{{path:path}}")
            elif isinstance(getattr(route, "path", None), str):
                templates.append(route.path)
        table = app.state.route_table = _table(templates)
    for pattern, template in table:
        if pattern.fullmatch(scope["path"]):
            return template
    return UNMATCHED


def _table(templates: list[str]) -> list[tuple[re.Pattern[str], str]]:
    """Each template and a pattern of the paths it serves."""
    table = []
    for template in templates:
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join(
            (".+" if part.endswith(":path}") else "[^/]+")
            if part.startswith("{")
            else re.escape(part)
            for part in parts
        )
        table.append((re.compile(pattern), template))
    return table


def scraped_families(c: ApiContext) -> list[Any]:
    """What a scrape reads from the control database (:func:`instance_families`), and
    ``cove_metrics_database_ok``: 0 when that failed, the processes' metrics then answered
    alone (they matter most when something is wrong)."""
    from prometheus_client.core import GaugeMetricFamily

    try:
        families = instance_families(c)
        ok = 1
    except Exception:
        LOG.exception("cannot read the instances' metrics from the control database")
        families, ok = [], 0
    read = GaugeMetricFamily(
        "cove_metrics_database_ok",
        "Whether this scrape read the instances from the control database (1) or not (0).",
        value=ok,
    )
    return [*families, read]


def instance_families(c: ApiContext) -> list[Any]:
    """``cove_instances`` (the instances by status and datastore, as the API shows them now)
    and every instance's vital signs (:data:`VITALS`)."""
    with c.db.session() as s:
        counts = status_counts(s, utcnow(), c.settings.heartbeat_interval)
        rows = s.execute(
            select(Instance.id, GuestState.payload, GuestState.heartbeat_at, DatastoreVersion)
            .join(GuestState, GuestState.instance_id == Instance.id)
            .join(DatastoreVersion, DatastoreVersion.id == Instance.datastore_version_id)
            .where(Instance.deleted == false())
            .options(joinedload(DatastoreVersion.datastore))
        ).all()
        heartbeats = [
            (iid, version.datastore.name, payload, at) for iid, payload, at, version in rows
        ]
    return [_status_family(counts), *_vital_families(heartbeats)]


def _status_family(counts: Any) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(
        "cove_instances",
        "Instances by the status the API shows and their datastore (deleted ones aside).",
        labels=["status", "datastore"],
    )
    for (status, datastore), count in sorted(counts.items()):
        family.add_metric([status, datastore], count)
    return family


MIB = 1 << 20


@dataclass(frozen=True)
class Vital:
    """A per-instance series, and where in the heartbeat's payload its value is."""

    name: str
    counter: bool
    help: str
    section: str  # "vitals" (``DatabaseVitals``) or "isolation" (``Isolation``)
    key: str
    factor: int = 1


VITALS = (
    Vital("cove_instance_connections", False, "Client connections open.", "vitals", "connections"),
    Vital(
        "cove_instance_commits",
        True,
        "Transactions committed since the server started.",
        "vitals",
        "commits",
    ),
    Vital(
        "cove_instance_rollbacks",
        True,
        "Transactions rolled back since the server started.",
        "vitals",
        "rollbacks",
    ),
    Vital(
        "cove_instance_operations",
        True,
        "Statements or commands run since the server started.",
        "vitals",
        "operations",
    ),
    Vital(
        "cove_instance_cache_reads",
        True,
        "Reads of the server's cache (Redis: key lookups).",
        "vitals",
        "cache_reads",
    ),
    Vital(
        "cove_instance_cache_hits",
        True,
        "Of those, the ones answered from memory (Redis: keys found).",
        "vitals",
        "cache_hits",
    ),
    Vital(
        "cove_instance_replication_lag_seconds",
        False,
        "How far a replica's data is behind its source.",
        "vitals",
        "replication_lag_seconds",
    ),
    Vital(
        "cove_instance_memory_used_bytes",
        False,
        "Memory the instance's processes use.",
        "isolation",
        "memory_used_mb",
        MIB,
    ),
    Vital(
        "cove_instance_memory_limit_bytes",
        False,
        "The memory its flavor allows, as the kernel enforces it.",
        "isolation",
        "memory_limit_mb",
        MIB,
    ),
    Vital(
        "cove_instance_volume_used_bytes",
        False,
        "Space used on the instance's volume.",
        "isolation",
        "volume_used_mb",
        MIB,
    ),
    Vital(
        "cove_instance_volume_size_bytes",
        False,
        "The size of the instance's volume.",
        "isolation",
        "volume_mb",
        MIB,
    ),
)


def _vital_families(heartbeats: list[tuple[str, str, str, Any]]) -> list[Any]:
    """The per-instance series of :data:`VITALS`, and each heartbeat's age, labelled by the
    instance's id and datastore; a value the heartbeat lacks makes no sample."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = ["instance_id", "datastore"]
    families = {
        vital.name: (CounterMetricFamily if vital.counter else GaugeMetricFamily)(
            vital.name, vital.help, labels=labels
        )
        for vital in VITALS
    }
    age = GaugeMetricFamily(
        "cove_instance_heartbeat_age_seconds",
        "Seconds since the instance's last heartbeat, which its other series come from.",
        labels=labels,
    )
    now = utcnow()
    for iid, datastore, payload, at in sorted(heartbeats):
        age.add_metric([iid, datastore], max(0.0, (now - at).total_seconds()))
        sections = payload_sections(payload)
        for vital in VITALS:
            value = sections.get(vital.section, {}).get(vital.key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                families[vital.name].add_metric([iid, datastore], value * vital.factor)
    return [*families.values(), age]
