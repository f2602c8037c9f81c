"""The metrics of a running Cove (``cove up``), scraped as an operator's Prometheus does and
read with Prometheus's own parser: what the API, the task manager and the conductor counted,
added up by the API's ``GET /metrics``, moves when an instance is made; and the instance's
vital signs, read by its guest agent and carried by its heartbeats, move with its load."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis
from harness import ControlPlane, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PASSWORD = "metrics-Pass-1"


def scrape(plane: ControlPlane) -> Samples:
    with httpx.Client(base_url=plane.url, timeout=30) as http:
        resp = http.get("/metrics")  # no token: a scraper has none
    assert resp.status_code == 200, resp.text
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, have), v in found.items() if n == name and set(labels.items()) <= set(have)
    )


def test_a_create_moves_the_whole_control_planes_metrics(cove_up: ControlPlane) -> None:
    before = scrape(cove_up)
    inst: dict[str, Any] = cove_up.create(
        name="metrics", datastore={"type": "redis"}, users=[{"name": "app", "password": PASSWORD}]
    )
    iid = inst["id"]
    try:
        host = cove_up.wait_status(iid, "ACTIVE")["ip"][0]

        created = "cove_task_duration_seconds_count"

        def counted() -> bool:
            # The conductor's count of the first report and the task's end land last.
            now = scrape(cove_up)
            handled = "cove_rpc_handled_total"
            return (
                total(now, handled, topic="conductor") > total(before, handled, topic="conductor")
                and value(now, created, task="create") > value(before, created, task="create")
                and total(now, "cove_instances", status="ACTIVE", datastore="redis") >= 1
            )

        wait_for(counted, 60, 0.2, "the counts of the conductor and the task manager")
        after = scrape(cove_up)
        # The API: the create, under its route.
        create = {"method": "POST", "route": "/v1.0/{project_id}/instances", "status": "200"}
        assert value(after, "cove_api_requests_total", **create) == (
            value(before, "cove_api_requests_total", **create) + 1
        )
        # The control plane's own series never name an instance.
        assert not any(
            iid in str(labels) for name, labels in after if not name.startswith("cove_instance_")
        )
        # The API's cast, and the task manager's own call to the new guest.
        cast = {"kind": "cast", "topic": "taskmanager", "method": "create_instance"}
        assert value(after, "cove_rpc_sent_total", **cast) > value(
            before, "cove_rpc_sent_total", **cast
        )
        prepare = {"kind": "call", "topic": "guestagent", "method": "prepare"}
        assert value(after, "cove_rpc_sent_total", **prepare) > value(
            before, "cove_rpc_sent_total", **prepare
        )
        # The task manager timed the task.
        assert value(after, created, task="create") == value(before, created, task="create") + 1
        assert value(after, "cove_instances", status="ACTIVE", datastore="redis") >= 1
        # The instance's own series: its server's counts, its memory and volume.
        ours = {"instance_id": iid, "datastore": "redis"}
        ran = "cove_instance_operations_total"
        wait_for(
            lambda: value(scrape(cove_up), ran, **ours) > 0, 60, 0.2, "a first heartbeat's count"
        )
        start = scrape(cove_up)
        assert value(start, "cove_instance_memory_limit_bytes", **ours) > 0
        assert value(start, "cove_instance_volume_size_bytes", **ours) > 0
        app = redis.Redis(host=host, port=6379, username="app", password=PASSWORD)
        try:
            for n in range(200):
                app.set(f"k{n}", n)
            assert app.get("k7") == b"7" and app.get("nothing") is None
        finally:
            app.close()

        def loaded() -> bool:
            now = scrape(cove_up)
            return (
                value(now, ran, **ours) >= value(start, ran, **ours) + 202
                and value(now, "cove_instance_cache_reads_total", **ours)
                >= value(start, "cove_instance_cache_reads_total", **ours) + 2
            )

        wait_for(loaded, 60, 0.2, "the load in the instance's heartbeats")
    finally:
        cove_up.http.delete(f"/instances/{iid}")
        wait_for(
            lambda: cove_up.http.get(f"/instances/{iid}").status_code == 404, 120, 0.2, "deleted"
        )
