"""The control plane's metrics (``cove.common.metrics``): what the API counts under which
route, ``GET /metrics`` read back by Prometheus's own parser, the instances by status, and a
task's duration. The values of several processes added up are in
tests/integration/test_metrics_processes.py; the RPC's, over a real bus, in
tests/integration/test_rpc.py; the whole control plane's in tests/e2e/test_metrics_flow.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from cove.common.errors import ConfigurationError
from cove.common.ids import utcnow
from cove.common.metrics import Metrics, topic_label
from cove.common.settings import load_settings
from cove.db.engine import Database
from cove.db.instances import status_counts
from cove.db.models import GuestState, Instance
from cove.domain.status import ComputeState, Task
from cove.rpc import RequestContext
from cove.taskmanager.context import TaskContext
from cove.taskmanager.ends import TaskEnds
from cove.taskmanager.service import TaskManager
from fakes import FakeBus, FakeDriver
from rows import add_building, add_instance

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: TestClient) -> Samples:
    resp = client.get("/metrics", headers={"X-Auth-Token": ""})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(resp.text)


def test_requests_are_counted_under_their_route_never_their_ids(member_api: Any) -> None:
    client, _, project = member_api
    for _ in range(3):
        assert client.get(f"/v1.0/{project}/instances").status_code == 200
    assert client.get(f"/v1.0/{project}/instances/not-there").status_code == 404
    found = scrape(client)
    listing = {"method": "GET", "route": "/v1.0/{project_id}/instances", "status": "200"}
    assert value(found, "cove_api_requests_total", **listing) == 3
    one = {"method": "GET", "route": "/v1.0/{project_id}/instances/{instance_id}"}
    assert value(found, "cove_api_requests_total", **one, status="404") == 1
    count = value(found, "cove_api_request_duration_seconds_count", **one)
    assert count == 1
    assert value(found, "cove_api_request_duration_seconds_sum", **one) > 0
    assert not any("not-there" in str(labels) for _, labels in found)


def test_refused_and_unknown_requests_are_counted_too(member_api: Any) -> None:
    client, _, project = member_api
    refused = client.get(f"/v1.0/{project}/instances", headers={"X-Auth-Token": "forged"})
    assert refused.status_code == 401
    assert client.get("/no/such/path").status_code == 404
    found = scrape(client)
    listing = {"method": "GET", "route": "/v1.0/{project_id}/instances"}
    assert value(found, "cove_api_requests_total", **listing, status="401") == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(found, "cove_api_requests_total", **unmatched) == 1


def test_instances_are_shown_by_status_and_datastore(member_api: Any) -> None:
    client, context, _ = member_api
    add_instance(context.db, Task.BUILDING)
    add_instance(context.db, Task.BUILDING)
    add_instance(context.db, Task.NONE, ComputeState.SHUTDOWN)
    add_instance(context.db, Task.BUILD_ERROR)
    found = scrape(client)
    assert value(found, "cove_instances", status="BUILD", datastore="postgresql") == 2
    assert value(found, "cove_instances", status="SHUTDOWN", datastore="postgresql") == 1
    assert value(found, "cove_instances", status="ERROR", datastore="postgresql") == 1
    with context.db.session() as s:
        counts = status_counts(s, utcnow(), 5.0)
    assert sum(counts.values()) == 4


def test_metrics_turned_off_answer_404_in_trove_words(member_api: Any) -> None:
    client, context, project = member_api
    context.metrics = None
    resp = client.get("/metrics")
    assert resp.status_code == 404
    assert resp.json()["itemNotFound"]["message"].startswith("Metrics are turned off")
    assert client.get(f"/v1.0/{project}/instances").status_code == 200


def test_rpc_topics_of_guests_lose_their_instance_id() -> None:
    assert topic_label("guestagent.0f5fabde-8b06-463d-9ef9-c37a02ec7144") == "guestagent"
    assert topic_label("taskmanager") == "taskmanager"


def test_sent_and_handled_requests_are_counted_by_outcome() -> None:
    metrics = Metrics.start(None)
    metrics.sent("cast", "taskmanager", "create_instance", 0.001, None)
    metrics.sent("call", "guestagent.abc", "prepare", 0.2, None)
    metrics.sent("call", "guestagent.def", "prepare", 30.0, "RpcTimeout")
    metrics.handled("conductor", "heartbeat", 0.003, None)
    metrics.handled("conductor", "report", 0.004, "InstanceNotFound")
    found = samples(metrics.exposition().decode())
    assert (
        value(
            found, "cove_rpc_sent_total", kind="cast", topic="taskmanager", method="create_instance"
        )
        == 1
    )
    prepare = {"kind": "call", "topic": "guestagent", "method": "prepare"}
    assert value(found, "cove_rpc_sent_total", **prepare) == 2
    assert value(found, "cove_rpc_failed_total", **prepare, error="RpcTimeout") == 1
    waited = value(
        found, "cove_rpc_call_duration_seconds_sum", topic="guestagent", method="prepare"
    )
    assert waited == pytest.approx(30.2)
    # A cast is not waited for: it has no duration.
    assert (
        value(
            found,
            "cove_rpc_call_duration_seconds_count",
            topic="taskmanager",
            method="create_instance",
        )
        == 0
    )
    assert (
        value(found, "cove_rpc_handled_total", topic="conductor", method="heartbeat", outcome="ok")
        == 1
    )
    assert (
        value(
            found,
            "cove_rpc_handled_total",
            topic="conductor",
            method="report",
            outcome="InstanceNotFound",
        )
        == 1
    )


@pytest.fixture
def tc(tmp_path: Path, migrated_db: Any) -> TaskContext:
    """A task manager's context that counts, on a fake bus whose guests prepare at once."""
    settings = load_settings(data_dir=tmp_path)
    migrated_db(settings.database_url)
    bus = FakeBus()
    bus.answer("prepare", None)
    db = Database(settings.database_url)
    return TaskContext(settings, db, bus, FakeDriver(), metrics=Metrics.start(None))  # type: ignore[arg-type]


def task_of(tc: TaskContext, iid: str) -> str:
    with tc.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        return inst.task


def test_a_task_is_timed_and_a_failed_one_counted(tc: TaskContext) -> None:
    iid = add_building(tc.db, tc.sealer)
    TaskManager(tc).create_instance(RequestContext(), iid)
    assert task_of(tc, iid) == "NONE"
    tc.driver.create = _broken  # type: ignore[method-assign]  # the workflow fails, says so
    broken = add_building(tc.db, tc.sealer)
    TaskManager(tc).create_instance(RequestContext(), broken)
    assert task_of(tc, broken) == "BUILD_ERROR"
    assert tc.metrics is not None
    found = samples(tc.metrics.exposition().decode())
    assert value(found, "cove_task_duration_seconds_count", task="create") == 2
    assert value(found, "cove_task_failures_total", task="create") == 1


def test_a_task_that_raises_is_counted_as_failed(tc: TaskContext) -> None:
    timer = TaskEnds(tc)
    with pytest.raises(RuntimeError), timer.instance_task(Task.RESIZING, "gone", RequestContext()):
        raise RuntimeError("the workflow broke")
    assert tc.metrics is not None
    found = samples(tc.metrics.exposition().decode())
    assert value(found, "cove_task_failures_total", task="resize") == 1


def _broken(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("the driver broke")


def test_unexpected_errors_and_unknown_methods_are_counted(member_api: Any) -> None:
    client, _, _ = member_api

    def boom() -> None:
        raise RuntimeError("a bug")

    client.app.add_api_route("/boom", boom)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    assert quiet.get("/boom").status_code == 500
    assert quiet.request("FOO", "/healthz").status_code == 405
    found = scrape(client)
    assert value(found, "cove_api_requests_total", method="GET", route="/boom", status="500") == 1
    assert (
        value(found, "cove_api_requests_total", method="other", route="/healthz", status="405") == 1
    )
    assert (
        value(found, "cove_api_requests_total", method="GET", route="/openapi.json", status="200")
        == 0
    )
    assert quiet.get("/openapi.json").status_code == 200
    found = scrape(client)
    assert (
        value(found, "cove_api_requests_total", method="GET", route="/openapi.json", status="200")
        == 1
    )


class Broken:
    """An instrument whose values cannot be kept (a file that cannot grow, say)."""

    def labels(self, *_args: Any) -> Any:
        raise OSError(28, "No space left on device")


def test_a_value_that_cannot_be_kept_never_fails_what_was_counted(
    member_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, context, project = member_api
    context.metrics.requests = Broken()
    context.metrics.rpc_sent = Broken()
    assert client.get(f"/v1.0/{project}/instances").status_code == 200
    assert client.get(f"/v1.0/{project}/instances").status_code == 200
    context.metrics.sent("cast", "taskmanager", "create_instance", 0.001, None)
    warnings = [r for r in caplog.records if "cannot keep a metric" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not at every request


def test_values_kept_in_files_need_metrics_started_first(tmp_path: Path) -> None:
    # prometheus-client is imported in this process already: values would stay in memory,
    # unseen by the scrape, so starting with a directory is refused.
    with pytest.raises(ConfigurationError, match="before prometheus_client"):
        Metrics.start(tmp_path / "metrics")


def test_each_instance_shows_its_last_heartbeats_vital_signs(member_api: Any) -> None:
    client, context, _ = member_api
    iid = add_instance(context.db, Task.NONE)
    silent = add_instance(context.db, Task.BUILDING)  # no heartbeat yet: no series
    payload = {
        "agent_pid": 7,
        "vitals": {"connections": 3, "commits": 120, "rollbacks": 2, "cache_hits": 90,
                   "cache_reads": 100, "operations": None},
        "isolation": {"memory_limit_mb": 512, "memory_used_mb": 64, "cpus": 1,
                      "volume_mb": 1024, "volume_used_mb": 10},
    }  # fmt: skip
    with context.db.session() as s:
        s.add(GuestState(instance_id=iid, status="healthy", payload=json.dumps(payload),
                         heartbeat_at=utcnow() - timedelta(seconds=2)))  # fmt: skip
    found = scrape(client)
    ours = {"instance_id": iid, "datastore": "postgresql"}
    assert value(found, "cove_instance_connections", **ours) == 3
    assert value(found, "cove_instance_commits_total", **ours) == 120
    assert value(found, "cove_instance_rollbacks_total", **ours) == 2
    assert value(found, "cove_instance_cache_hits_total", **ours) == 90
    assert value(found, "cove_instance_cache_reads_total", **ours) == 100
    assert value(found, "cove_instance_memory_limit_bytes", **ours) == 512 << 20
    assert value(found, "cove_instance_memory_used_bytes", **ours) == 64 << 20
    assert value(found, "cove_instance_volume_size_bytes", **ours) == 1024 << 20
    assert 2 <= value(found, "cove_instance_heartbeat_age_seconds", **ours) < 60
    # What the heartbeat did not say makes no sample.
    assert ("cove_instance_operations_total", tuple(sorted(ours.items()))) not in found
    assert not any(silent in str(labels) for _, labels in found)


def test_a_heartbeat_payload_that_is_no_json_costs_only_its_series(member_api: Any) -> None:
    client, context, _ = member_api
    iid = add_instance(context.db, Task.NONE)
    with context.db.session() as s:
        s.add(GuestState(instance_id=iid, status="healthy", payload="not json",
                         heartbeat_at=utcnow()))  # fmt: skip
    found = scrape(client)
    ours = {"instance_id": iid, "datastore": "postgresql"}
    assert ("cove_instance_heartbeat_age_seconds", tuple(sorted(ours.items()))) in found
    assert ("cove_instance_connections", tuple(sorted(ours.items()))) not in found


def test_a_metrics_token_is_asked_of_scrapers(member_api: Any) -> None:
    client, context, _ = member_api
    context.settings = context.settings.model_copy(
        update={"metrics_token": SecretStr("scrape-Secret-1")}
    )
    for sent in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-Secret-1"}):
        resp = client.get("/metrics", headers={"X-Auth-Token": "", **sent})
        assert resp.status_code == 401, resp.text
        assert "metrics token" in resp.json()["unauthorized"]["message"]
        assert "scrape-Secret-1" not in resp.text
    good = client.get("/metrics", headers={"Authorization": "Bearer scrape-Secret-1"})
    assert good.status_code == 200 and "cove_api_requests_total" in good.text


def test_an_instances_vitals_are_its_last_heartbeats(member_api: Any) -> None:
    """The tenant's view of the same heartbeat (``GET /instances/{id}/vitals``, which the
    console's charts sample): what it said, null for what it did not say or said wrongly."""
    client, context, project_id = member_api
    iid = add_instance(context.db, Task.NONE)
    payload = {
        "vitals": {"connections": 3, "commits": 120, "rollbacks": "2", "cache_hits": True},
        "isolation": {"memory_limit_mb": 512, "memory_used_mb": 64.5},
    }
    with context.db.session() as s:
        inst = s.get(Instance, iid)
        assert inst is not None
        inst.project_id = project_id
        s.add(GuestState(instance_id=iid, status="healthy", payload=json.dumps(payload),
                         heartbeat_at=utcnow()))  # fmt: skip
    resp = client.get(f"/v1.0/{project_id}/instances/{iid}/vitals")
    assert resp.status_code == 200, resp.text
    vitals = resp.json()["vitals"]
    assert vitals["connections"] == 3 and vitals["commits"] == 120
    assert vitals["rollbacks"] is None and vitals["cache_hits"] is None  # not numbers
    assert vitals["memory_limit_mb"] == 512 and vitals["memory_used_mb"] == 64.5
    assert vitals["volume_mb"] is None and vitals["heartbeat_at"]
    other = client.get(f"/v1.0/{project_id}/instances/00000000-0000-0000-0000-000000000000/vitals")
    assert other.status_code == 404
