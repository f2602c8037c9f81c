"""The API's share of the control plane's metrics (``cove.common.metrics``): each request
counted under its route's template, and the instances by status, read at each scrape."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import Scope

from cove.api.context import ApiContext
from cove.common.ids import utcnow
from cove.db.instances import status_counts

#: The route label of a request no route of the API matches.
UNMATCHED = "unmatched"


def route_of(app: Any, scope: Scope) -> str:
    """The template of the route that serves (or would have served) the request: its own
    once routed; else, for a request refused before routing (no token, a malformed body),
    the first template of the app's schema that the path matches; UNMATCHED for a path the
    API does not have. Never the path itself: ids would make a label per instance."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "route_table", None)
    if table is None:
        table = app.state.route_table = _table(app.openapi().get("paths", {}))
    for pattern, template in table:
        if pattern.fullmatch(scope["path"]):
            return template
    return UNMATCHED


def _table(paths: dict[str, Any]) -> list[tuple[re.Pattern[str], str]]:
    """Each template of the schema and a pattern of the paths it serves."""
    table = []
    for template in paths:
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join(
            (".+" if part.endswith(":path}") else "[^/]+")
            if part.startswith("{")
            else re.escape(part)
            for part in parts
        )
        table.append((re.compile(pattern), template))
    return table


def instance_families(c: ApiContext) -> list[Any]:
    """``cove_instances``: the instances by status and datastore, as the API shows them now."""
    from prometheus_client.core import GaugeMetricFamily

    with c.db.session() as s:
        counts = status_counts(s, utcnow(), c.settings.heartbeat_interval)
    family = GaugeMetricFamily(
        "cove_instances",
        "Instances by the status the API shows and their datastore (deleted ones aside).",
        labels=["status", "datastore"],
    )
    for (status, datastore), count in sorted(counts.items()):
        family.add_metric([status, datastore], count)
    return [family]
